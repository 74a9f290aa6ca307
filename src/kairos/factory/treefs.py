"""Paths into a base tree the factory works on, resolved inside that tree (DESIGN §3).

A base tree comes from someone else (a tar, an OCI image, a directory): an absolute link in it
(`etc -> /etc`, `boot -> /boot`) means a path inside the tree, never one on the build host.
Nothing changes a base tree while the factory works on it, so resolving a path once
(`safefs.resolve_in_root`) and then using the host path it names is safe; writes still go
through `safefs` (temp file, rename: a planted link at the target is replaced, not followed).
"""

from __future__ import annotations

import errno
import fnmatch
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from kairos import safefs
from kairos.errors import BadInput


def inside(root: Path, rel: str | os.PathLike[str], *, follow_last: bool = True) -> Path:
    """The host path of `rel` as seen inside `root` (links followed inside it)."""
    try:
        return safefs.resolve_in_root(root, rel, follow_last=follow_last)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise BadInput(f"the base tree has a symbolic link loop at /{os.fspath(rel).lstrip('/')}",
                       "fix or remove that link in the base") from None


def exists(root: Path, rel: str, *, follow_last: bool = True) -> bool:
    return os.path.lexists(inside(root, rel, follow_last=follow_last))


def is_file(root: Path, rel: str) -> bool:
    return stat.S_ISREG(_lmode(inside(root, rel)))


def is_dir(root: Path, rel: str) -> bool:
    return stat.S_ISDIR(_lmode(inside(root, rel)))


def _lmode(path: Path) -> int:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return 0


def read(root: Path, rel: str) -> bytes | None:
    """A regular file's bytes inside the tree; None when it is not there."""
    return safefs.read_bytes(root, rel, follow="all")


def write(root: Path, rel: str, data: bytes | str, *, mode: int | None = None) -> None:
    """Atomically (re)place file `rel` inside the tree; missing parents are made. A link
    there is followed (inside the tree) to the file it names, or replaced when it names
    none. A file that was there keeps its owner and (unless `mode` is given) its mode; a
    new one is 0644."""
    blob = data.encode() if isinstance(data, str) else data
    target = inside(root, rel)
    if os.path.lexists(target):
        rel = "/" + str(target.relative_to(root))
    else:
        remove(root, rel)  # a dangling link: ours replaces it
    safefs.write_atomic(root, rel, blob, mode=mode, create_parents=True, follow="all",
                        keep_owner=True)


def mkdirs(root: Path, rel: str) -> Path:
    """Directory `rel` inside the tree, made (with its parents) when missing."""
    with safefs.open_dir(root, rel, create=True, follow="all"):
        pass
    return inside(root, rel)


def remove(root: Path, rel: str) -> None:
    """Remove the entry `rel` (a file or link; the link itself, never its target)."""
    path = inside(root, rel, follow_last=False)
    if os.path.lexists(path) and not stat.S_ISDIR(os.lstat(path).st_mode):
        path.unlink()


def symlink(root: Path, rel: str, target: str) -> None:
    """Make `rel` a symbolic link to `target` (whatever was there, if not a directory, goes)."""
    remove(root, rel)
    parent = mkdirs(root, os.path.dirname(rel.strip("/")) or "/")
    (parent / os.path.basename(rel.strip("/"))).symlink_to(target)


def copy_in(src: Path, root: Path, rel: str, *, ignore: tuple[str, ...] = ()) -> Path:
    """Copy our directory `src` to `rel` inside the tree, replacing what was there."""
    dest = inside(root, rel, follow_last=False)
    if os.path.lexists(dest):
        if stat.S_ISDIR(os.lstat(dest).st_mode):
            shutil.rmtree(dest)
        else:
            dest.unlink()
    mkdirs(root, os.path.dirname(rel.strip("/")) or "/")
    shutil.copytree(src, dest, symlinks=True,
                    ignore=shutil.ignore_patterns(*ignore) if ignore else None)
    return dest


def glob(root: Path, pattern: str) -> list[Path]:
    """Host paths of the entries matching `pattern` inside the tree (`*`, `?`, `[…]`, and
    `**` for any depth). Literal components are resolved inside the tree; a wildcard never
    leads through a symbolic link; the last component is never followed."""
    return sorted(set(_glob(root, [], [p for p in pattern.strip("/").split("/") if p])))


def _glob(root: Path, done: list[str], parts: list[str]) -> Iterator[Path]:
    if not parts:
        yield inside(root, "/".join(done), follow_last=False)
        return
    part, rest = parts[0], parts[1:]
    if part == "**":
        yield from _glob(root, done, rest)
        for name in _subdirs(root, done):
            yield from _glob(root, [*done, name], parts)
        return
    if not _has_magic(part):
        yield from _glob(root, [*done, part], rest)
        return
    base = inside(root, "/".join(done)) if done else root
    try:
        entries = sorted(os.listdir(base))
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in entries:
        if not fnmatch.fnmatchcase(name, part):
            continue
        if rest and not stat.S_ISDIR(_lmode(base / name)):
            continue  # a wildcard leads through real directories only
        yield from _glob(root, [*done, name], rest)


def _subdirs(root: Path, done: list[str]) -> list[str]:
    base = inside(root, "/".join(done)) if done else root
    try:
        return sorted(e.name for e in os.scandir(base) if e.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _has_magic(part: str) -> bool:
    return any(c in part for c in "*?[")
