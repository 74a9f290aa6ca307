"""A deterministic newc cpio writer (what the kernel unpacks as an initramfs)."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import BinaryIO


@dataclass(frozen=True)
class Entry:
    path: str  # relative, no leading slash
    mode: int  # full st_mode, type bits included
    data: bytes = b""  # file content, or symlink target
    rdev: tuple[int, int] = (0, 0)


def _header(ino: int, entry: Entry, mtime: int, name: bytes, size: int) -> bytes:
    fields = [
        ino, entry.mode, 0, 0, 1 if not stat.S_ISDIR(entry.mode) else 2, mtime, size,
        0, 0, entry.rdev[0], entry.rdev[1], len(name) + 1, 0,
    ]
    return b"070701" + b"".join(f"{v:08x}".encode() for v in fields)


def _pad(out: BinaryIO, written: int) -> int:
    extra = (-written) % 4
    out.write(b"\0" * extra)
    return extra


def write_cpio(entries: list[Entry], out: BinaryIO, mtime: int) -> None:
    """Write entries sorted by path, owned by root, all with the same mtime."""
    ino = 1
    for entry in sorted(entries, key=lambda e: e.path):
        name = entry.path.encode()
        data = entry.data
        hdr = _header(ino, entry, mtime, name, len(data))
        out.write(hdr + name + b"\0")
        _pad(out, len(hdr) + len(name) + 1)
        out.write(data)
        _pad(out, len(data))
        ino += 1
    trailer = Entry("TRAILER!!!", 0)
    name = b"TRAILER!!!"
    hdr = _header(0, trailer, 0, name, 0)
    out.write(hdr + name + b"\0")
    _pad(out, len(hdr) + len(name) + 1)
