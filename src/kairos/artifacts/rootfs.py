"""The slot image: a compressed, read-only squashfs of the image tree."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from kairos.errors import BadInput
from kairos.run import require, run

# GRUB 2.06's squash4 reads gzip, xz and lzo; not zstd (it must load the kernel from the slot).
# "none" is the default, as in Kairos: measured under QEMU TCG it boots to SSH in ~24 s
# against ~30 s for xz, and builds in seconds instead of minutes. Downloads are OCI layers,
# compressed on their own, so only the disk holds the larger slot.
COMPRESSIONS = ("none", "xz", "gzip")


def make_squashfs(tree: Path, out: Path, *, mtime: int, compression: str = "none") -> Path:
    """Write `tree` as a reproducible squashfs: same tree and mtime, same bytes."""
    if compression not in COMPRESSIONS:
        raise BadInput(f"compression '{compression}' is not supported for slot images",
                       f"use one of {', '.join(COMPRESSIONS)} (GRUB must read the slot)")
    require("mksquashfs")
    argv = ["mksquashfs", str(tree), str(out), "-noappend", "-b", "256K",
            "-all-time", str(mtime), "-mkfs-time", str(mtime), "-xattrs"]
    if compression == "none":
        argv += ["-noI", "-noD", "-noF", "-noX"]
    else:
        argv += ["-comp", compression]
    if compression == "xz":
        argv += ["-Xbcj", "x86"]
    if not sys.stderr.isatty():
        argv.append("-no-progress")
    out.unlink(missing_ok=True)
    run(argv, capture=not sys.stderr.isatty())
    return out


# Compression ids of the squashfs superblock (u16 at offset 20).
SQUASHFS_COMPRESSION_IDS = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}
SQUASHFS_NO_COMPRESSION = 0x0001 | 0x0002 | 0x0008 | 0x0100  # -noI -noD -noF -noX flags
SQUASHFS_MAGIC = b"hsqs"


def squashfs_compression(path: Path) -> str:
    """"none" when mksquashfs stored everything uncompressed, else the compressor's name;
    BadInput when `path` is no squashfs at all."""
    with open(path, "rb") as fh:
        sb = fh.read(96)
    if len(sb) < 96 or sb[:4] != SQUASHFS_MAGIC:
        raise BadInput(f"{path} is not a squashfs image", "give the slot image of a build "
                       "(rootfs.squashfs)")
    comp = int.from_bytes(sb[20:22], "little")
    flags = int.from_bytes(sb[24:26], "little")
    if flags & SQUASHFS_NO_COMPRESSION == SQUASHFS_NO_COMPRESSION:
        return "none"
    return SQUASHFS_COMPRESSION_IDS.get(comp, f"unknown ({comp})")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
