"""The BIOS boot-sector and core.img patches, on byte buffers and on real GRUB images."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from kairos.boot import grubinstall as gi
from kairos.errors import KairosError

needs_grub_pc = pytest.mark.skipif(
    shutil.which("grub-mkimage") is None or not gi.boot_img_path().is_file(),
    reason="needs grub-common and grub-pc-bin")


def fake_boot_img() -> bytes:
    img = bytearray(512)
    img[0x66:0x68] = b"\xeb\x05"  # boot.S's `jmp 3f` drive check
    img[510:512] = b"\x55\xaa"
    return bytes(img)


def test_boot_img_gets_core_lba_and_drive_check_nops() -> None:
    patched = gi.patch_boot_img(fake_boot_img(), 2048)
    assert struct.unpack_from("<Q", patched, 0x5C)[0] == 2048
    assert patched[0x66:0x68] == b"\x90\x90"
    assert len(patched) == 512
    # Everything else is untouched.
    original = fake_boot_img()
    changed = [i for i in range(512) if patched[i] != original[i]]
    assert all(0x5C <= i < 0x64 or i in (0x66, 0x67) for i in changed)


def test_boot_img_must_be_one_sector() -> None:
    with pytest.raises(ValueError):
        gi.patch_boot_img(b"\0" * 100, 1)


def test_mbr_keeps_signature_and_partition_table() -> None:
    mbr = bytes(range(256)) * 2
    boot = b"\xaa" * 512
    merged = gi.mbr_with_boot_code(mbr, boot)
    assert merged[:440] == b"\xaa" * 440
    assert merged[440:] == mbr[440:]


def test_core_img_blocklist_points_at_the_rest_of_itself() -> None:
    core = bytes(3 * 512 + 100)  # 3.2 sectors: padded to 4
    patched = gi.patch_core_img(core, 2048)
    assert len(patched) == 4 * 512
    start, count, segment = struct.unpack_from("<QHH", patched, 0x1F4)
    assert (start, count, segment) == (2049, 3, 0x820)
    assert patched[0x200:] == core[0x200:].ljust(3 * 512, b"\0")


def test_core_img_with_a_second_blocklist_entry_is_refused() -> None:
    core = bytearray(4 * 512)
    struct.pack_into("<H", core, 0x1F4 - 12 + 8, 5)
    with pytest.raises(KairosError, match="unexpected blocklist"):
        gi.patch_core_img(bytes(core), 2048)


@needs_grub_pc
def test_real_core_img(tmp_path: Path) -> None:
    core = gi.build_core_img(tmp_path / "core.img")
    data = core.read_bytes()
    sectors = -(-len(data) // 512)
    # grub-mkimage already fills in length and segment; only the start is disk-specific.
    assert struct.unpack_from("<HH", data, 0x1F4 + 8) == (sectors - 1, 0x820)
    patched = gi.patch_core_img(data, 4096)
    assert struct.unpack_from("<QHH", patched, 0x1F4) == (4097, sectors - 1, 0x820)
    assert len(data) < gi.CORE_MAX_BYTES


@needs_grub_pc
def test_real_boot_img_drive_check_is_a_jump() -> None:
    boot = gi.boot_img_path().read_bytes()
    assert boot[0x66] == gi.JMP_SHORT
    assert gi.patch_boot_img(boot, 2048)[0x66:0x68] == b"\x90\x90"


@pytest.mark.skipif(shutil.which("grub-mkimage") is None
                    or not Path("/usr/lib/grub/x86_64-efi/moddep.lst").is_file(),
                    reason="needs grub-efi-amd64-bin")
def test_real_efi_image_is_a_pe_file(tmp_path: Path) -> None:
    data = gi.build_efi_image(tmp_path / "BOOTX64.EFI").read_bytes()
    assert data[:2] == b"MZ"
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    assert data[pe:pe + 4] == b"PE\0\0"
    assert struct.unpack_from("<H", data, pe + 4)[0] == 0x8664  # x86-64
    assert b"COS_STATE" in data  # the early config is embedded
