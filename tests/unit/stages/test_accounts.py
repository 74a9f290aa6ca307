"""The account files' last line of defence: no field may change the file's structure."""

from __future__ import annotations

import os

import pytest

from kairos.safefs import UnsafePath
from kairos.stages.accounts import Accounts, Table
from kairos.stages.context import Context, PluginError


@pytest.mark.parametrize("row", [
    ["eve", "x", "1000", "1000", "", "/home/eve", "/bin/sh\nevil::0:0::/:/bin/sh"],
    ["eve", "x", "1000", "1000", "a:b", "/home/eve", "/bin/sh"],
    ["eve\nroot", "x", "0", "0", "", "/", "/bin/sh"],
    ["eve", "x", "1000", "1000", "", "/home/eve", "/bin/sh\r"],
    ["+", "", "", "", "", "", ""],          # NIS compat: would pull in every NIS user
    ["-eve", "x", "1000", "1000", "", "/", "/bin/sh"],
    ["", "x", "0", "0", "", "/", "/bin/sh"],
])
def test_put_refuses_fields_that_change_the_structure(ctx: Context, row: list[str]) -> None:
    before = (ctx.root / "etc/passwd").read_bytes()
    table = Table.load(ctx, "passwd")
    with pytest.raises(PluginError, match="nothing written"):
        table.put(row)
    table.save()
    assert (ctx.root / "etc/passwd").read_bytes() == before


def test_put_allows_member_lists_and_gecos_commas(ctx: Context) -> None:
    acc = Accounts.load(ctx)
    acc.group.put(["admin", "x", "900", "alice,bob"])
    acc.passwd.put(["alice", "x", "1000", "1000", "Alice,Room 1,,", "/home/alice", "/bin/sh"])
    acc.save()
    assert "admin:x:900:alice,bob\n" in (ctx.root / "etc/group").read_text()


def test_save_keeps_mode_and_owner(ctx: Context) -> None:
    shadow = ctx.root / "etc/shadow"
    if os.geteuid() == 0:
        os.chown(shadow, 0, 42)
    table = Table.load(ctx, "shadow")
    table.put(["alice", "!", "19000", "", "", "", "", "", ""])
    table.save()
    st = shadow.stat()
    assert st.st_mode & 0o777 == 0o640
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (0, 42)


def test_new_shadow_is_private(ctx: Context) -> None:
    (ctx.root / "etc/gshadow").unlink()
    table = Table.load(ctx, "gshadow")
    table.put(["admin", "!", "", ""])
    table.save()
    assert (ctx.root / "etc/gshadow").stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a link owned by a user")
def test_untrusted_link_at_an_account_file_is_refused(ctx: Context) -> None:
    passwd = ctx.root / "etc/passwd"
    text = passwd.read_text()
    passwd.unlink()
    (ctx.root / "tmp").mkdir()
    (ctx.root / "tmp/p").write_text(text)
    passwd.symlink_to("/tmp/p")
    os.chown(passwd, 1000, 1000, follow_symlinks=False)
    with pytest.raises(UnsafePath):
        Table.load(ctx, "passwd")
