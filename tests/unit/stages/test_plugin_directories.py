from __future__ import annotations

import os

import pytest

from kairos.stages.context import Context, PluginError
from kairos.stages.plugins import directories

from .helpers import make_step


def test_creates_with_mode_and_owner(ctx: Context) -> None:
    directories.apply(make_step(directories=[
        {"path": "/etc/foo/bar", "permissions": 0o700, "owner": 1, "group": 1}]), ctx)
    target = ctx.root / "etc/foo/bar"
    st = target.stat()
    assert target.is_dir() and st.st_mode & 0o7777 == 0o700
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1, 1)


def test_existing_directory_gets_only_what_is_stated(ctx: Context) -> None:
    (ctx.root / "var/lib/x").mkdir(parents=True)
    os.chmod(ctx.root / "var/lib/x", 0o711)
    directories.apply(make_step(directories=[{"path": "/var/lib/x"}]), ctx)
    assert (ctx.root / "var/lib/x").stat().st_mode & 0o7777 == 0o711
    directories.apply(make_step(directories=[{"path": "/var/lib/x", "permissions": "0750"}]),
                      ctx)
    assert (ctx.root / "var/lib/x").stat().st_mode & 0o7777 == 0o750


def test_default_mode_and_file_in_the_way(ctx: Context) -> None:
    (ctx.root / "blocker").write_text("")
    with pytest.raises(PluginError, match="not a directory"):
        directories.apply(make_step(directories=[{"path": "/blocker"}, {"path": "/ok"}]), ctx)
    assert (ctx.root / "ok").stat().st_mode & 0o777 == 0o755  # the next one still done
