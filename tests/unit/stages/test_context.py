from __future__ import annotations

import os
from pathlib import Path

import pytest

from kairos.stages.context import Context
from kairos.stages.fsutil import resolve_in_root


def test_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path
    (root / "usr/lib").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "usr/lib/os-release").write_text("x")
    (root / "etc/abs").symlink_to("/usr/lib/os-release")
    (root / "etc/rel").symlink_to("../usr/lib/os-release")
    (root / "etc/escape").symlink_to("../../../../../../etc/passwd")
    (root / "loop").symlink_to("/loop")
    assert resolve_in_root(root, "/etc/abs") == root / "usr/lib/os-release"
    assert resolve_in_root(root, "etc/rel") == root / "usr/lib/os-release"
    assert resolve_in_root(root, "/etc/escape") == root / "etc/passwd"  # clamped at the root
    assert resolve_in_root(root, "/etc/abs", follow_last=False) == root / "etc/abs"
    assert resolve_in_root(root, "/missing/dir/file") == root / "missing/dir/file"
    with pytest.raises(OSError, match="symbolic links"):
        resolve_in_root(root, "/loop")


def test_live_context_uses_paths_as_given() -> None:
    ctx = Context(root=Path("/"))
    assert ctx.live and ctx.path("/etc/hostname") == Path("/etc/hostname")
    assert ctx.shell is not None and not ctx.shell.chroot


def test_sysinfo_reads_through_absolute_links(ctx: Context) -> None:
    os.rename(ctx.root / "etc/os-release", ctx.root / "os-release.real")
    (ctx.root / "etc/os-release").symlink_to("/os-release.real")
    assert ctx.values()["os"]["vendor"] == "debian"
