"""Filesystem helpers the plugins share, all relative to the stage's root.

Stages run as root at every boot and write into places others may control (a user's home, a
persistent directory): every helper here walks from the root with safefs (dir fds, no
untrusted link followed, links resolved inside the root) and replaces files atomically, so a
planted link or hard link is refused or replaced, never written through, and a power cut
leaves the old file or the new one.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from kairos import safefs
from kairos.safefs import Follow, UnsafePath
from kairos.safefs import resolve_in_root as resolve_in_root  # re-exported for the plugins

log = logging.getLogger("kairos.stages")

DIR_MODE = 0o755
FILE_MODE = 0o644
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def make_dirs(root: Path, path: str, mode: int = DIR_MODE, uid: int | None = None,
              gid: int | None = None, *, follow: Follow = "trusted") -> None:
    """Create directory `path` (inside `root`) and missing parents; only the directories
    created get mode and owner."""
    with safefs.open_dir(root, path, create=True, mode=mode, uid=uid, gid=gid, follow=follow):
        pass


def set_dir_attrs(root: Path, path: str, mode: int | None, uid: int | None,
                  gid: int | None, *, follow: Follow = "trusted") -> None:
    """Mode and owner of an existing directory, changed through its descriptor."""
    with safefs.open_dir(root, path, follow=follow) as fd:
        if mode is not None and stat.S_IMODE(os.fstat(fd).st_mode) != mode:
            os.fchmod(fd, mode)
        safefs.fchown(fd, uid, gid)


def read_text(root: Path, path: str, *, follow: Follow = "trusted") -> str:
    """A text file inside `root`, "" when missing; a planted link or a fifo is refused."""
    data = safefs.read_bytes(root, path, follow=follow)
    return "" if data is None else data.decode("utf-8", errors="replace")


def _unchanged(dir_fd: int, name: str, data: bytes, mode: int | None, uid: int | None,
               gid: int | None) -> bool:
    """True when `name` already holds `data` (then mode and owner are set as asked through
    the open file). A file with other hard links is never "unchanged": it is replaced."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != len(data):
            return False
        with os.fdopen(os.dup(fd), "rb") as fh:
            if fh.read() != data:
                return False
        if mode is not None and stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
        safefs.fchown(fd, uid, gid)
        return True
    finally:
        os.close(fd)


def write_file(root: Path, path: str, data: bytes, mode: int | None = None,
               uid: int | None = None, gid: int | None = None, *,
               follow: Follow = "trusted") -> bool:
    """Atomically write file `path` inside `root`; missing parents are created. Returns
    whether the file was (re)written.

    A file that already holds `data` is not rewritten: stages run at every boot, and an
    unchanged mtime keeps systemd from seeing a changed unit (and a reload), and spares flash.
    `mode`/`uid`/`gid` None keep an existing file's (0644 and ours for a new file).
    """
    with safefs.open_parent(root, path, create=True, mode=DIR_MODE,
                            follow=follow) as (dfd, name, st):
        if _unchanged(dfd, name, data, mode, uid, gid):
            return False
        regular = st is not None and stat.S_ISREG(st.st_mode) and st.st_nlink == 1
        if mode is None:
            mode = stat.S_IMODE(st.st_mode) if st is not None and regular else FILE_MODE
        if st is not None and regular:
            uid = st.st_uid if uid is None else uid
            gid = st.st_gid if gid is None else gid
        safefs.write_at(dfd, name, data, mode=mode, uid=uid, gid=gid, shown=path)
        return True


def is_dir(root: Path, path: str, *, follow: Follow = "trusted") -> bool:
    """Whether `path` inside `root` is a directory reachable without an untrusted link."""
    try:
        with safefs.open_dir(root, path, follow=follow):
            return True
    except FileNotFoundError:
        return False
    except UnsafePath:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.EACCES):
            return False
        raise
