"""Writing slot images onto a state or recovery partition so that GRUB sees them whole.

GRUB reads ext4 without replaying its journal. A file written, synced and renamed is safe for
the kernel once the journal commit is on disk, but GRUB sees the change only after the
journal is checkpointed (its blocks copied to their home places). So every step GRUB must see
ends with `checkpoint()`: EXT4_IOC_CHECKPOINT (Linux 5.13+), else a freeze and thaw, which
flushes the journal too.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kairos.errors import KairosError
from kairos.run import run
from kairos.safefs import rename_exchange

if TYPE_CHECKING:
    from kairos.artifacts.bootid import BootIds

log = logging.getLogger("kairos.upgrade")

CHUNK = 4 << 20
# _IOW('f', 43, __u32) and _IOWR('X', 119|120, int)
EXT4_IOC_CHECKPOINT = 0x4004662B
FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
POSIX_FADV_DONTNEED = 4

Progress = Callable[[int], None]  # bytes written so far


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint(mount_dir: Path) -> str:
    """Sync the filesystem at `mount_dir` and write its journal home; returns how."""
    fd = os.open(mount_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.sync()
        try:
            fcntl.ioctl(fd, EXT4_IOC_CHECKPOINT, struct.pack("I", 0))
            return "checkpoint"
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return "sync"  # ext4 without a journal: synced is home already
            if exc.errno not in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                raise KairosError(f"cannot checkpoint the journal of {mount_dir}: "
                                  f"{exc.strerror}", "check the kernel log") from None
        # Older kernels: freezing flushes the journal as well.
        try:
            fcntl.ioctl(fd, FIFREEZE, 0)
        except OSError as exc:
            if exc.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL):
                return "sync"  # not ext4 (tests on tmpfs): nothing GRUB-specific to do
            raise KairosError(f"cannot freeze {mount_dir} to flush its journal: "
                              f"{exc.strerror}", "check the kernel log") from None
        fcntl.ioctl(fd, FITHAW, 0)
        return "freeze"
    finally:
        os.close(fd)


def preallocate(fd: int, size: int, path: Path) -> None:
    """Claim the space up front: a full disk fails here, not half way through the write."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise KairosError(f"no space left for {path} ({size} bytes)",
                              "free space on that partition and run the upgrade again") from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise


@dataclass(frozen=True)
class Sums:
    """Checksums of one pass over a slot image's bytes. The CRC compares what was written
    with what the disk holds (a failing disk, not an adversary: sources are verified before
    this); sha256 is the slot's record. One sha256 pass instead of two matters on small
    devices: a TCG guest hashes 17 MiB/s with sha256 and 300 MiB/s with crc32."""

    crc32: int
    sha256: str = ""


def copy_file(src: Path, dest: Path, *, progress: Progress | None = None) -> Sums:
    """Copy `src` to a new file `dest`, synced; returns the CRC of the bytes read."""
    crc = 0
    size = src.stat().st_size
    with open(src, "rb") as fin:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            preallocate(fd, size, dest)
            done = 0
            while chunk := fin.read(CHUNK):
                crc = zlib.crc32(chunk, crc)
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                done += len(chunk)
                if progress is not None:
                    progress(done)
            os.ftruncate(fd, done)
            os.fsync(fd)
        finally:
            os.close(fd)
    return Sums(crc)


def hash_on_disk(path: Path, *, progress: Progress | None = None) -> Sums:
    """CRC and sha256 of what the disk holds: the page cache is dropped first, so a write the
    disk did not take shows up as a mismatch."""
    h = hashlib.sha256()
    crc = 0
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        done = 0
        while chunk := os.read(fd, CHUNK):
            h.update(chunk)
            crc = zlib.crc32(chunk, crc)
            done += len(chunk)
            if progress is not None:
                progress(done)
    finally:
        os.close(fd)
    return Sums(crc, h.hexdigest())


def exchange(a: Path, b: Path) -> None:
    """Swap two names in one atomic step (both must exist on one filesystem)."""
    if not rename_exchange(a, b):
        raise KairosError(f"the kernel cannot swap {a.name} and {b.name} atomically "
                          "(renameat2 RENAME_EXCHANGE)", "upgrades need Linux 3.15+ and ext4")


def squashfs_cat(path: Path, name: str) -> bytes | None:
    """The content of file `name` (relative to the image's root) inside the squashfs at
    `path`, None when the image has no such file or cannot be read. For small text files:
    the bytes come back through a text pipe."""
    res = run(["unsquashfs", "-cat", str(path), name], check=False)
    if res.returncode != 0:
        return None
    return res.stdout.encode()


def slot_ids(path: Path) -> BootIds | None:
    """The ids a slot image file names in its /boot/kairos-boot.cfg (boot id, image id);
    None when there is no such file, the image has no cfg or the cfg is not one we wrote
    (a warning then: GRUB and the initrd would not read it either)."""
    from kairos.artifacts.bootid import BOOT_CFG, parse_boot_cfg
    if not path.is_file():
        return None
    raw = squashfs_cat(path, BOOT_CFG)
    if raw is None:
        return None
    try:
        return parse_boot_cfg(raw.decode("utf-8", "replace"))
    except KairosError as exc:
        log.warning("%s: %s", path, exc.message)
        return None
