"""Mounts and temporary directories as context managers that clean up on every path."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from kairos.run import run
from kairos.safefs import UnsafePath, open_dir, resolve_in_root

log = logging.getLogger("kairos.mounts")


@contextlib.contextmanager
def tempdir(prefix: str = "kairos-", parent: str | Path | None = None) -> Iterator[Path]:
    """A temporary directory, removed on exit (after anything mounted below it is gone;
    what is still mounted there is left in place, never deleted through)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        remove_tree(path)


def remove_tree(path: Path) -> bool:
    """Unmount what is mounted below `path`, then delete it without ever crossing a mount
    point: a mount that would not go (a failed lazy unmount) is left, with its files, and a
    warning. True when everything is gone."""
    if not os.path.lexists(path):
        return True
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
        return True
    unmount_below(path)
    top = os.path.realpath(path)
    mounted = set(mounts_below(Path(top)))
    if top in mounted:
        log.warning("%s is still mounted: left in place", top)
        return False
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        done = _empty_dir(fd, os.fstat(fd).st_dev, top, mounted)
    finally:
        os.close(fd)
    if done:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(top)
    return done and not os.path.lexists(top)


def _empty_dir(dir_fd: int, dev: int, shown: str, mounted: set[str]) -> bool:
    """Delete what is in the directory `dir_fd`, staying on device `dev` and out of the
    mount points in `mounted`; True when it is empty afterwards."""
    done = True
    with os.scandir(dir_fd) as it:
        names = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    for name, is_dir in names:
        child = os.path.join(shown, name)
        try:
            if not is_dir:
                os.unlink(name, dir_fd=dir_fd)
                continue
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=dir_fd)
            try:
                if os.fstat(sub).st_dev != dev or child in mounted:
                    log.warning("%s is still mounted: left in place, with what is on it", child)
                    done = False
                    continue
                emptied = _empty_dir(sub, dev, child, mounted)
            finally:
                os.close(sub)
            if emptied:
                os.rmdir(name, dir_fd=dir_fd)
            else:
                done = False
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.debug("cannot remove %s: %s", child, exc)
            done = False
    return done


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


def mount_point_in(root: Path, rel: str) -> Path:
    """The directory `rel` inside `root` (a tree we do not own) to mount on: links followed
    inside root only, missing directories made; refused when it is anything else."""
    top = os.path.realpath(root)
    try:
        target = resolve_in_root(Path(top), rel)
    except OSError as exc:
        raise UnsafePath(rel, f"cannot be resolved inside the tree: {exc.strerror}") from None
    with open_dir(Path(top), rel, create=True, follow="all"):
        pass
    real = Path(os.path.realpath(target))
    if real != target or not str(real).startswith(top.rstrip("/") + "/"):
        raise UnsafePath(rel, f"resolves to {real}, outside the tree {top}")
    if target.is_symlink() or not target.is_dir():
        raise UnsafePath(rel, "is not a directory")
    return target


@contextlib.contextmanager
def mount_in_root(source: str | Path, root: Path, rel: str, *, fstype: str | None = None,
                  options: Sequence[str] = ()) -> Iterator[Path]:
    """`mount` on the directory `rel` inside the tree `root`, never on a path a link in the
    tree points at outside it; checked again in the mount table once mounted."""
    target = mount_point_in(root, rel)
    with mount(source, target, fstype=fstype, options=options) as tgt:
        if str(tgt) not in mounts_below(tgt):
            raise UnsafePath(rel, f"the mount did not land on {tgt}")
        yield tgt


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[Path]:
    """The API filesystems a package manager needs inside a chroot, removed on exit."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(mount_in_root("proc", root, "proc", fstype="proc"))
        stack.enter_context(mount_in_root("sysfs", root, "sys", fstype="sysfs"))
        stack.enter_context(mount_in_root("/dev", root, "dev", options=["bind"]))
        stack.enter_context(mount_in_root("devpts", root, "dev/pts", fstype="devpts",
                                          options=["gid=5", "mode=620", "ptmxmode=666"]))
        stack.enter_context(mount_in_root("tmpfs", root, "run", fstype="tmpfs"))
        stack.enter_context(mount_in_root("tmpfs", root, "tmp", fstype="tmpfs"))
        yield root
