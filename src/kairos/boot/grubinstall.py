"""Install GRUB for BIOS and UEFI without grub-install (which fails on image files and loops).

BIOS: `grub-mkimage -O i386-pc` builds core.img with every module and the early config inside.
It goes into the BIOS boot partition; GRUB's boot.img goes into the MBR's first 440 bytes
(the rest of sector 0 is the disk signature and the protective partition table, kept as is).
The facts we patch, from GRUB's include/grub/i386/pc/boot.h and boot/i386/pc/diskboot.S:
- boot.img + 0x5c (KERNEL_SECTOR, u64 LE): LBA of core.img's first sector,
- boot.img + 0x66 (DRIVE_CHECK): a 2-byte `jmp`; grub-bios-setup replaces it with two NOPs
  for hard disks, so a BIOS that passes a bogus drive number still reads drive 0x80,
- core.img + 0x1f4 (the first blocklist entry at the end of diskboot.img's sector, 12 bytes):
  start LBA u64, sector count u16, load segment u16 (0x820) of the rest of core.img.
UEFI: `grub-mkimage -O x86_64-efi` builds the removable-media path /EFI/BOOT/BOOTX64.EFI.
A CD (the live ISO, artifacts/iso.py): `grub-mkimage -O i386-pc-eltorito` builds the El Torito
image (cdboot.img + diskboot.img + core), the same modules from the i386-pc directory.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from kairos.boot.grubcfg import render_early_cfg
from kairos.disk.esp import copy_into_fat
from kairos.disk.filesystems import FsTarget
from kairos.errors import KairosError
from kairos.run import require, run

SECTOR = 512
GRUB_LIB = Path("/usr/lib/grub")

BOOT_KERNEL_SECTOR = 0x5C
BOOT_DRIVE_CHECK = 0x66
MBR_CODE_SIZE = 440  # up to the Windows NT disk signature at 0x1b8
BLOCKLIST_OFFSET = 0x1F4  # 0x200 - 12
CORE_LOAD_SEGMENT = 0x820  # (GRUB_BOOT_MACHINE_KERNEL_SEG 0x800) + 0x20
JMP_SHORT = 0xEB
# diskboot.S loads core.img at 0x8200 in real mode: stay well below the EBDA at ~0x9fc00.
CORE_MAX_BYTES = 480 * 1024

_COMMON_MODULES = (
    "part_gpt", "part_msdos", "ext2", "squash4", "loopback", "xzio", "gzio", "lzopio",
    "search", "search_label", "search_fs_file", "search_fs_uuid", "configfile", "normal",
    "linux", "boot", "echo", "test", "true", "loadenv", "serial", "terminal", "sleep",
    "regexp", "cat", "ls", "halt", "reboot", "minicmd",
)
BIOS_MODULES = ("biosdisk", *_COMMON_MODULES)
EFI_MODULES = ("fat", "efi_gop", "efi_uga", *_COMMON_MODULES)


def _mkimage(fmt: str, out: Path, modules: tuple[str, ...], early_cfg: str) -> Path:
    require("grub-mkimage")
    moddir = GRUB_LIB / ("i386-pc" if fmt.startswith("i386-pc") else fmt)
    if not (moddir / "moddep.lst").is_file():
        pkg = "grub-pc-bin" if fmt.startswith("i386-pc") else "grub-efi-amd64-bin"
        raise KairosError(f"GRUB modules for {fmt} are not installed ({moddir})",
                          f"install them with: apt-get install {pkg}")
    cfg = out.with_name(out.name + ".early.cfg")
    cfg.write_text(early_cfg)
    try:
        run(["grub-mkimage", "-O", fmt, "-d", str(moddir), "-o", str(out), "-c", str(cfg),
             "-p", "/grub2", *modules])
    finally:
        cfg.unlink(missing_ok=True)
    return out


def build_core_img(out: Path, early_cfg: str | None = None) -> Path:
    """BIOS core.img with all modules and the early config embedded."""
    _mkimage("i386-pc", out, BIOS_MODULES, early_cfg or render_early_cfg())
    if out.stat().st_size > CORE_MAX_BYTES:
        raise KairosError(f"GRUB core.img is {out.stat().st_size} bytes, too large to load",
                          "embed fewer modules")
    return out


def build_efi_image(out: Path, early_cfg: str | None = None,
                    extra_modules: tuple[str, ...] = ()) -> Path:
    """UEFI BOOTX64.EFI with all modules and the early config embedded."""
    return _mkimage("x86_64-efi", out, EFI_MODULES + extra_modules,
                    early_cfg or render_early_cfg())


def build_eltorito_img(out: Path, early_cfg: str, extra_modules: tuple[str, ...] = ()) -> Path:
    """BIOS El Torito boot image (for `xorriso -b`) with all modules and the early config.
    cdboot.img loads the rest of it, so it has the same size limit as core.img."""
    _mkimage("i386-pc-eltorito", out, BIOS_MODULES + extra_modules, early_cfg)
    if out.stat().st_size > CORE_MAX_BYTES:
        raise KairosError(f"GRUB El Torito image is {out.stat().st_size} bytes, too large to "
                          "load", "embed fewer modules")
    return out


def boot_img_path() -> Path:
    return GRUB_LIB / "i386-pc" / "boot.img"


def patch_boot_img(boot_img: bytes, core_lba: int) -> bytes:
    """boot.img told where core.img starts, with the hard-disk drive-number fix applied."""
    if len(boot_img) != SECTOR:
        raise ValueError(f"boot.img must be {SECTOR} bytes, not {len(boot_img)}")
    img = bytearray(boot_img)
    struct.pack_into("<Q", img, BOOT_KERNEL_SECTOR, core_lba)
    if img[BOOT_DRIVE_CHECK] == JMP_SHORT:
        img[BOOT_DRIVE_CHECK:BOOT_DRIVE_CHECK + 2] = b"\x90\x90"
    return bytes(img)


def mbr_with_boot_code(mbr: bytes, boot_img: bytes) -> bytes:
    """Sector 0 with boot.img's code; signature, partition table and 0x55AA kept."""
    if len(mbr) != SECTOR:
        raise ValueError(f"the MBR must be {SECTOR} bytes, not {len(mbr)}")
    return boot_img[:MBR_CODE_SIZE] + mbr[MBR_CODE_SIZE:]


def patch_core_img(core: bytes, part_lba: int) -> bytes:
    """core.img padded to whole sectors, its blocklist pointing at the rest of itself when
    written from `part_lba` on."""
    sectors = -(-len(core) // SECTOR)
    if sectors < 2:
        raise ValueError("core.img is smaller than two sectors")
    img = bytearray(core.ljust(sectors * SECTOR, b"\0"))
    # The entry below ours (12 bytes lower) terminates the list with a zero length.
    (next_len,) = struct.unpack_from("<H", img, BLOCKLIST_OFFSET - 12 + 8)
    if next_len != 0:
        raise KairosError("core.img has an unexpected blocklist layout",
                          "this GRUB version is not supported by kairos' BIOS installer")
    struct.pack_into("<QHH", img, BLOCKLIST_OFFSET, part_lba + 1, sectors - 1,
                     CORE_LOAD_SEGMENT)
    return bytes(img)


def write_bios_boot(disk: Path, part_lba: int, part_sectors: int, core_img: Path) -> None:
    """Write core.img into the BIOS boot partition and boot.img into the MBR of `disk`
    (an image file or a whole-disk device). The partition table must already exist."""
    core = patch_core_img(core_img.read_bytes(), part_lba)
    if len(core) > part_sectors * SECTOR:
        raise KairosError(f"GRUB core.img ({len(core)} bytes) does not fit the BIOS boot "
                          f"partition ({part_sectors * SECTOR} bytes)", "enlarge it")
    boot = patch_boot_img(boot_img_path().read_bytes(), part_lba)
    fd = os.open(disk, os.O_RDWR)
    try:
        mbr = os.pread(fd, SECTOR, 0)
        if mbr[510:512] != b"\x55\xaa":
            raise KairosError(f"{disk} has no MBR/protective MBR", "write the GPT first")
        _pwrite_all(fd, core, part_lba * SECTOR)
        _pwrite_all(fd, mbr_with_boot_code(mbr, boot), 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def install_efi(esp: FsTarget, efi_image: Path) -> None:
    """Put BOOTX64.EFI at the removable-media path of a formatted ESP."""
    copy_into_fat(esp, {"/EFI/BOOT/BOOTX64.EFI": efi_image})
