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


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a link owned by a user")
def test_planted_link_is_not_chmod_or_given_away(ctx: Context) -> None:
    (ctx.root / "home/alice").mkdir(parents=True)
    (ctx.root / "home/alice/data").symlink_to("/etc")
    os.chown(ctx.root / "home/alice/data", 1000, 1000, follow_symlinks=False)
    before = (ctx.root / "etc").stat()
    with pytest.raises(PluginError, match="not followed"):
        directories.apply(make_step(directories=[
            {"path": "/home/alice/data", "permissions": 0o777, "owner": 1000}]), ctx)
    after = (ctx.root / "etc").stat()
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)
