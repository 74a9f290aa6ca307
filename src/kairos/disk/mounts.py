"""Mounts and temporary directories as context managers that clean up on every path."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from kairos.run import run

log = logging.getLogger("kairos.mounts")


@contextlib.contextmanager
def tempdir(prefix: str = "kairos-", parent: str | Path | None = None) -> Iterator[Path]:
    """A temporary directory, removed on exit (after anything mounted below it is gone)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        unmount_below(path)
        shutil.rmtree(path, ignore_errors=True)


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first (from /proc/self/mountinfo)."""
    target = os.path.realpath(path)
    found: list[str] = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            mnt = line.split()[4].replace("\\040", " ")
            if mnt == target or mnt.startswith(target.rstrip("/") + "/"):
                found.append(mnt)
    return sorted(found, key=lambda m: m.count("/"), reverse=True)


def unmount_below(path: Path) -> None:
    """Unmount everything at or below `path`; lazily if busy, so cleanup never hangs."""
    for mnt in mounts_below(path):
        res = run(["umount", mnt], check=False)
        if res.returncode != 0:
            log.debug("umount %s failed (%s); detaching lazily", mnt, res.stderr.strip())
            run(["umount", "-l", mnt], check=False)


@contextlib.contextmanager
def mount(
    source: str | Path,
    target: str | Path,
    *,
    fstype: str | None = None,
    options: Sequence[str] = (),
) -> Iterator[Path]:
    """Mount `source` on `target` (created if missing) and unmount on exit."""
    tgt = Path(target)
    tgt.mkdir(parents=True, exist_ok=True)
    argv: list[str] = ["mount"]
    if fstype:
        argv += ["-t", fstype]
    if options:
        argv += ["-o", ",".join(options)]
    argv += [str(source), str(tgt)]
    run(argv)
    try:
        yield tgt
    finally:
        unmount_below(tgt)


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[Path]:
    """The API filesystems a package manager needs inside a chroot, removed on exit."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(mount("proc", root / "proc", fstype="proc"))
        stack.enter_context(mount("sysfs", root / "sys", fstype="sysfs"))
        stack.enter_context(mount("/dev", root / "dev", options=["bind"]))
        stack.enter_context(mount("devpts", root / "dev/pts", fstype="devpts",
                                  options=["gid=5", "mode=620", "ptmxmode=666"]))
        stack.enter_context(mount("tmpfs", root / "run", fstype="tmpfs"))
        stack.enter_context(mount("tmpfs", root / "tmp", fstype="tmpfs"))
        yield root
