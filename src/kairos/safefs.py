"""Paths inside trees we do not own, resolved inside their root; writes that follow no planted link.

One resolver for every tree that is not ours: a base tree being built, an unpacked image, a
device's root seen from outside, a user's home on a running device. Two ways in:

- `resolve_in_root(root, path)`: the host path of `path` as seen inside `root`, with every
  symlink followed *inside* root (an absolute link means root-relative, `..` stops at root).
  For trees nobody changes while we work (a base tree during a build).
- The fd walkers (`open_dir`, `read_bytes`, `write_atomic`): every component is opened
  relative to its parent's descriptor with O_NOFOLLOW, so nothing can be swapped in between
  a check and a use. A symlink met on the way is followed, inside root, only when `follow`
  allows it: `"all"`, `"trusted"` (the default: links owned by root or by us, since a user can
  plant links in their own places but cannot make root-owned ones) or `"none"`. Writes go to
  a temporary file beside the target, are synced and renamed over it: a power cut leaves the
  old or the new file, and a hard link planted at the target is replaced, never written through.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

from kairos.errors import KairosError

Follow = Literal["all", "trusted", "none"]
MAX_HOPS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(KairosError):
    """A path inside a tree leads somewhere we must not go (a planted link, a non-file)."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path}: {why}", "nothing was written there; remove the link or file "
                         "if it should not be there")
        self.path = path


def _parts(path: str | os.PathLike[str]) -> list[str]:
    return [p for p in PurePosixPath("/", os.fspath(path)).parts[1:] if p not in ("", ".")]


def resolve_in_root(root: Path, path: str | os.PathLike[str], *, follow_last: bool = True) -> Path:
    """`path` (absolute, as seen inside `root`) as a host path, following symlinks inside root."""
    parts = _parts(path)
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if (parts or follow_last) and candidate.is_symlink():
            hops += 1
            if hops > MAX_HOPS:
                raise OSError(errno.ELOOP, "too many levels of symbolic links", str(path))
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = _parts(target) + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def trusted_owners() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def _may_follow(st: os.stat_result, follow: Follow) -> bool:
    if follow == "all":
        return True
    return follow == "trusted" and st.st_uid in trusted_owners()


class _Walk:
    """A walk from a root descriptor; `stack` holds the fds of the directories passed."""

    def __init__(self, root: Path, shown: str, follow: Follow) -> None:
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.stack: list[int] = [self.root_fd]
        self.shown = shown
        self.follow = follow
        self.hops = 0

    @property
    def fd(self) -> int:
        return self.stack[-1]

    def close(self) -> None:
        for fd in self.stack:
            os.close(fd)
        self.stack = []

    def detach_top(self) -> int:
        """The current directory's fd, now owned by the caller."""
        fd = self.stack.pop()
        if not self.stack:  # the root itself: give the caller its own copy
            self.stack.append(os.dup(fd))
        return fd

    def up(self) -> None:
        if len(self.stack) > 1:
            os.close(self.stack.pop())

    def to_root(self) -> None:
        while len(self.stack) > 1:
            os.close(self.stack.pop())

    def link_parts(self, name: str, st: os.stat_result) -> list[str]:
        """The components a symlink `name` in the current directory stands for (after which
        the walk goes on from the right place), or UnsafePath when it must not be followed."""
        if not _may_follow(st, self.follow):
            raise UnsafePath(self.shown, f"'{name}' is a symbolic link owned by uid "
                             f"{st.st_uid}; not followed")
        self.hops += 1
        if self.hops > MAX_HOPS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", self.shown)
        target = os.readlink(name, dir_fd=self.fd)
        if target.startswith("/"):
            self.to_root()
        return _parts(target)

    def enter(self, parts: list[str], *, create: bool, mode: int, uid: int | None,
              gid: int | None) -> None:
        """Descend through `parts` (all directories), creating missing ones if asked."""
        while parts:
            name = parts.pop(0)
            if name == "..":
                self.up()
                continue
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, mode, dir_fd=self.fd)
                    fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
                    os.chmod(fd, mode)
                    _fchown(fd, uid, gid)
                    self.stack.append(fd)
                    continue
                parts.insert(0, name)  # made by someone else meanwhile: look again
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise UnsafePath(self.shown, f"'{name}' is not a directory") from None
                parts[:0] = self.link_parts(name, st)
                continue
            self.stack.append(fd)

    def last(self, name: str) -> tuple[str, os.stat_result | None]:
        """Resolve trusted links at the last component; the final name (in `self.fd`) and
        its lstat (None when it does not exist)."""
        while True:
            try:
                st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            except FileNotFoundError:
                return name, None
            if not stat.S_ISLNK(st.st_mode):
                return name, st
            parts = self.link_parts(name, st)
            if not parts:
                raise UnsafePath(self.shown, f"'{name}' is a link to the root directory")
            *dirs, name = parts
            self.enter(dirs, create=False, mode=0o755, uid=None, gid=None)
            if name == "..":
                raise UnsafePath(self.shown, "the path ends in '..'")


def _fchown(fd: int, uid: int | None, gid: int | None) -> None:
    if uid is None and gid is None:
        return
    st = os.fstat(fd)
    if uid in (None, st.st_uid) and gid in (None, st.st_gid):
        return  # already right: no ctime change, and works without privileges
    try:
        os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
    except PermissionError:
        if os.geteuid() == 0:
            raise


@contextlib.contextmanager
def open_dir(root: Path, path: str | os.PathLike[str], *, create: bool = False,
             mode: int = 0o755, uid: int | None = None, gid: int | None = None,
             follow: Follow = "trusted") -> Iterator[int]:
    """A descriptor of directory `path` inside `root`, reached without following untrusted
    links; missing directories made (mode, owner) when `create`. Closed on exit."""
    walk = _Walk(root, os.fspath(path), follow)
    try:
        walk.enter(_parts(path), create=create, mode=mode, uid=uid, gid=gid)
        fd = walk.detach_top()
    finally:
        walk.close()
    try:
        yield fd
    finally:
        os.close(fd)


def read_bytes(root: Path, path: str | os.PathLike[str], *,
               follow: Follow = "trusted") -> bytes | None:
    """The content of regular file `path` inside `root`; None when it does not exist.
    A fifo, device or untrusted link there is refused (UnsafePath), never opened."""
    *dirs, name = _parts(path) or [""]
    walk = _Walk(root, os.fspath(path), follow)
    try:
        try:
            walk.enter(dirs, create=False, mode=0o755, uid=None, gid=None)
        except FileNotFoundError:
            return None
        name, st = walk.last(name)
        if st is None:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(os.fspath(path), "is not a regular file")
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=walk.fd)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise UnsafePath(os.fspath(path), "is not a regular file")
            return fh.read()
    finally:
        walk.close()


def fchown(fd: int, uid: int | None, gid: int | None) -> None:
    """Change the owner of an open file; without privileges (a scratch root in tests) the
    owner is left as it is, since only root can give files away."""
    _fchown(fd, uid, gid)


@contextlib.contextmanager
def open_parent(root: Path, path: str | os.PathLike[str], *, create: bool = False,
                mode: int = 0o755, follow: Follow = "trusted",
                follow_last: bool = True) -> Iterator[tuple[int, str, os.stat_result | None]]:
    """(directory fd, name in it, lstat of that name or None) for file `path` inside `root`.
    Links on the way, and at the end when `follow_last`, are followed as `follow` allows;
    missing parents are made (mode, our owner) when `create`. The fd is closed on exit."""
    shown = os.fspath(path)
    *dirs, name = _parts(path) or [""]
    if not name or name == "..":
        raise UnsafePath(shown, "is not a file path")
    walk = _Walk(root, shown, follow)
    try:
        walk.enter(dirs, create=create, mode=mode, uid=None, gid=None)
        if follow_last:
            name, st = walk.last(name)
        else:
            try:
                st = os.stat(name, dir_fd=walk.fd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
        fd = walk.detach_top()
    finally:
        walk.close()
    try:
        yield fd, name, st
    finally:
        os.close(fd)


def read_at(dir_fd: int, name: str, *, shown: str = "") -> tuple[bytes, os.stat_result] | None:
    """Content and fstat of regular file `name` in `dir_fd`, None when it does not exist.
    A link (of any owner), fifo or device there is refused with UnsafePath, never opened."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(shown or name, "is a symbolic link; not followed") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(shown or name, "is not a regular file")
        return fh.read(), st


def replace_at(dir_fd: int, name: str, fill: Callable[[BinaryIO], None], *, mode: int,
               uid: int | None = None, gid: int | None = None, shown: str = "") -> None:
    """Replace `name` in the directory `dir_fd` with what `fill` writes: temp file, fsync,
    rename, fsync of the directory. What was there (a file, a planted link or hard link) is
    replaced, never written through."""
    tmp = f".{name[:200]}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.fchmod(fd, mode)
        _fchown(fd, uid, gid)
        os.close(fd)
        fd = -1
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise UnsafePath(shown or name, "is a directory")
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def write_at(dir_fd: int, name: str, data: bytes, *, mode: int, uid: int | None = None,
             gid: int | None = None, shown: str = "") -> None:
    """Replace `name` in the directory `dir_fd` with `data`: temp file, fsync, rename, fsync
    of the directory. What was there (a file, a planted link or hard link) is replaced."""
    def fill(fh: BinaryIO) -> None:
        fh.write(data)

    replace_at(dir_fd, name, fill, mode=mode, uid=uid, gid=gid, shown=shown)


def write_atomic(root: Path, path: str | os.PathLike[str], data: bytes, *,
                 mode: int | None = 0o644, uid: int | None = None, gid: int | None = None,
                 create_parents: bool = False, dir_mode: int = 0o755,
                 follow: Follow = "trusted", keep_owner: bool = False,
                 new_mode: int = 0o644) -> None:
    """Atomically write file `path` inside `root`. Trusted links on the way (and at the end:
    `/etc/hosts -> /usr/local/etc/hosts`) are followed inside root; untrusted ones are
    refused. `mode=None` keeps an existing file's mode (`new_mode` for a new one);
    `keep_owner` gives the new file the old one's owner where `uid`/`gid` are None."""
    shown = os.fspath(path)
    with open_parent(root, path, create=create_parents, mode=dir_mode,
                     follow=follow) as (dfd, name, st):
        if mode is None:
            mode = stat.S_IMODE(st.st_mode) if st is not None else new_mode
        if keep_owner and st is not None and not stat.S_ISLNK(st.st_mode):
            uid = st.st_uid if uid is None else uid
            gid = st.st_gid if gid is None else gid
        write_at(dfd, name, data, mode=mode, uid=uid, gid=gid, shown=shown)


def write_file_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Atomically replace a file of ours (a path we control end to end)."""
    with open_dir(Path("/"), path.parent.resolve(), follow="all") as dfd:
        write_at(dfd, path.name, data, mode=mode, shown=str(path))


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def rename_exchange(a: Path, b: Path) -> bool:
    """renameat2(RENAME_EXCHANGE): swap two paths in one atomic step; False where unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))
