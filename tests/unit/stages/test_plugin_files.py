from __future__ import annotations

import base64
import gzip
import os
from pathlib import Path

import pytest

from kairos.stages.context import Context, PluginError
from kairos.stages.fields import PayloadError
from kairos.stages.plugins import files

from .helpers import make_step


def test_plain_file_with_mode_owner_and_parents(ctx: Context) -> None:
    files.apply(make_step(files=[{"path": "/etc/systemd/network/20-dhcp.network",
                                  "content": "[Match]\nName=en*\n", "permissions": 0o600,
                                  "owner": 1, "group": 1}]), ctx)
    target = ctx.root / "etc/systemd/network/20-dhcp.network"
    assert target.read_text() == "[Match]\nName=en*\n"
    assert target.stat().st_mode & 0o7777 == 0o600
    if os.geteuid() == 0:
        assert (target.stat().st_uid, target.stat().st_gid) == (1, 1)


@pytest.mark.parametrize("encoding", ["b64", "base64", "gz", "gzip", "gz+b64", "gzip+base64",
                                      "base64+gz"])
def test_encodings(ctx: Context, encoding: str) -> None:
    data = b"binary \x00\xff payload"
    if encoding in ("gz", "gzip"):
        content = gzip.compress(data).decode("latin-1")
    elif "gz" in encoding:
        content = base64.b64encode(gzip.compress(data)).decode()
    else:
        content = base64.b64encode(data).decode()
    files.apply(make_step(files=[{"path": "/out", "content": content, "encoding": encoding}]),
                ctx)
    assert (ctx.root / "out").read_bytes() == data


def test_permissions_as_octal_string_and_default(ctx: Context) -> None:
    files.apply(make_step(files=[{"path": "/a", "content": "a", "permissions": "0640"},
                                 {"path": "/b", "content": "b"}]), ctx)
    assert (ctx.root / "a").stat().st_mode & 0o7777 == 0o640
    assert (ctx.root / "b").stat().st_mode & 0o7777 == 0o644


def test_owner_string_is_looked_up_in_the_root(ctx: Context) -> None:
    files.apply(make_step(files=[{"path": "/d", "content": "x", "owner_string": "daemon:users"}]),
                ctx)
    if os.geteuid() == 0:
        st = (ctx.root / "d").stat()
        assert (st.st_uid, st.st_gid) == (1, 100)
    with pytest.raises(PluginError, match="user 'ghost' does not exist"):
        files.apply(make_step(files=[{"path": "/e", "content": "x", "owner_string": "ghost"}]),
                    ctx)


def test_content_templates_and_symlinks_stay_inside_root(ctx: Context) -> None:
    (ctx.root / "usr/local/etc").mkdir(parents=True)
    (ctx.root / "etc/hostname").symlink_to("/usr/local/etc/hostname")
    files.apply(make_step(files=[{"path": "/etc/hostname",
                                  "content": "{{ .Values.os.vendor }}-host"}]), ctx)
    assert (ctx.root / "usr/local/etc/hostname").read_text() == "debian-host"
    assert (ctx.root / "etc/hostname").is_symlink()


def test_bad_payloads() -> None:
    with pytest.raises(PayloadError, match="needs a path"):
        files.parse(make_step(files=[{"content": "x"}]))
    with pytest.raises(PayloadError, match="encoding"):
        files.parse(make_step(files=[{"path": "/x", "encoding": "rot13"}]))


def test_unchanged_content_keeps_the_mtime_and_new_content_replaces(ctx: Context) -> None:
    """Stages run at every boot: a unit file rewritten with the same bytes must keep its mtime,
    or systemd would report it changed on disk and need a reload."""
    step = make_step(files=[{"path": "/etc/systemd/system/x.service", "content": "[Unit]\n",
                             "permissions": 0o644}])
    files.apply(step, ctx)
    target = ctx.root / "etc/systemd/system/x.service"
    os.utime(target, (1_000_000, 1_000_000))
    files.apply(step, ctx)
    assert target.stat().st_mtime == 1_000_000
    target.chmod(0o600)
    files.apply(step, ctx)
    assert target.stat().st_mode & 0o777 == 0o644  # the mode is still enforced
    files.apply(make_step(files=[{"path": "/etc/systemd/system/x.service",
                                  "content": "[Unit]\nDescription=new\n"}]), ctx)
    assert target.read_text() == "[Unit]\nDescription=new\n"
    assert target.stat().st_mtime != 1_000_000


# --- write_files into a place a user controls: their planted links are not followed ---

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root to plant a link owned by a user")


def alice_home(ctx: Context) -> Path:
    home = ctx.root / "home/alice"
    home.mkdir(parents=True)
    with (ctx.root / "etc/passwd").open("a") as fh:
        fh.write("alice:x:1000:1000::/home/alice:/bin/sh\n")
    return home


@needs_root
def test_planted_link_at_the_target_is_refused(ctx: Context) -> None:
    home = alice_home(ctx)
    (home / ".profile").symlink_to("/etc/shadow")
    os.chown(home / ".profile", 1000, 1000, follow_symlinks=False)
    before = (ctx.root / "etc/shadow").read_bytes()
    with pytest.raises(PluginError, match="not followed"):
        files.apply(make_step(files=[{"path": "/home/alice/.profile", "content": "x\n",
                                      "owner_string": "alice"}]), ctx)
    shadow = ctx.root / "etc/shadow"
    assert shadow.read_bytes() == before and shadow.stat().st_uid == 0


@needs_root
def test_planted_link_on_the_way_is_refused(ctx: Context) -> None:
    home = alice_home(ctx)
    (home / ".config").symlink_to("/etc")
    os.chown(home / ".config", 1000, 1000, follow_symlinks=False)
    before = (ctx.root / "etc/shadow").read_bytes()
    with pytest.raises(PluginError, match="not followed"):
        files.apply(make_step(files=[{"path": "/home/alice/.config/shadow", "content": "x\n",
                                      "owner_string": "alice"}]), ctx)
    assert (ctx.root / "etc/shadow").stat().st_uid == 0
    assert (ctx.root / "etc/shadow").read_bytes() == before


def test_planted_hard_link_is_replaced_not_written_through(ctx: Context) -> None:
    home = alice_home(ctx)
    shadow = ctx.root / "etc/shadow"
    before = shadow.read_bytes()
    os.link(shadow, home / ".profile")
    files.apply(make_step(files=[{"path": "/home/alice/.profile", "content": "x\n"}]), ctx)
    assert shadow.read_bytes() == before
    assert (home / ".profile").read_text() == "x\n"
    assert (home / ".profile").stat().st_ino != shadow.stat().st_ino
    # same content as the linked file: still replaced, never chmod-ed through the link
    os.unlink(home / ".profile")
    os.link(shadow, home / ".profile")
    files.apply(make_step(files=[{"path": "/home/alice/.profile", "content": before.decode(),
                                  "permissions": 0o666}]), ctx)
    assert shadow.stat().st_mode & 0o777 == 0o640


def test_existing_owner_and_mode_are_kept(ctx: Context) -> None:
    home = alice_home(ctx)
    (home / ".bashrc").write_text("old\n")
    (home / ".bashrc").chmod(0o600)
    if os.geteuid() == 0:
        os.chown(home / ".bashrc", 1000, 1000)
    files.apply(make_step(files=[{"path": "/home/alice/.bashrc", "content": "new\n"}]), ctx)
    st = (home / ".bashrc").stat()
    assert st.st_mode & 0o777 == 0o600
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1000, 1000)
