"""Small filesystem helpers the plugins share."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from kairos.safefs import resolve_in_root as resolve_in_root  # re-exported for the plugins

log = logging.getLogger("kairos.stages")

DIR_MODE = 0o755
FILE_MODE = 0o644


def chown(path: Path, uid: int | None, gid: int | None, *, follow: bool = True) -> None:
    """Change owner; without privileges (a scratch root in tests) a no-op with a debug note."""
    if uid is None and gid is None:
        return
    u = -1 if uid is None else uid
    g = -1 if gid is None else gid
    try:
        os.chown(path, u, g, follow_symlinks=follow)
    except PermissionError:
        if os.geteuid() == 0:
            raise
        log.debug("not root: owner of %s left unchanged (wanted %s:%s)", path, uid, gid)


def make_dirs(path: Path, mode: int = DIR_MODE, uid: int | None = None,
              gid: int | None = None) -> None:
    """Create `path` and missing parents; only the directories created get mode and owner."""
    missing: list[Path] = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue
        os.chmod(directory, mode)
        chown(directory, uid, gid)


def same_content(path: Path, data: bytes) -> bool:
    try:
        return path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def write_file(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write through an existing file (or symlink target) like yip; create it otherwise.

    A file that already holds `data` is not rewritten: stages run at every boot, and an
    unchanged mtime keeps systemd from seeing a changed unit (and a reload), and spares flash.
    """
    existed = path.exists()
    if not (existed and same_content(path, data)):
        with open(path, "wb") as fh:
            fh.write(data)
    if mode is not None:
        os.chmod(path, mode)
    elif not existed:
        os.chmod(path, FILE_MODE)
