"""Real GRUB on the disk `kairos disk` writes: SeaBIOS and OVMF under QEMU TCG.

The slot's kernel is a 100-byte dummy, so every entry ends in GRUB's "premature end of file
(loop0)/boot/vmlinuz": proof that GRUB found COS_STATE, ran grub.cfg, loop-mounted the xz
squashfs and read the kernel inside it. The fallback chain then runs through the other entries.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kairos.boot import grubenv
from kairos.boot.grubcfg import CFG_MARKER
from kairos.disk.filesystems import FsTarget
from kairos.disk.gpt import read_gpt
from kairos.vm import VM, VMConfig, qemu_available
from kairos.vm.serial import clean
from tests.integration.test_disk_helpers import cli, dump, make_image_dir

pytestmark = [
    pytest.mark.integration,
    pytest.mark.vm,
    pytest.mark.skipif(not qemu_available(), reason="qemu-system-x86 not installed"),
]

ALL_FAILED = "Failed to boot both default and fallback entries"
KERNEL_READ = r"premature end of file \(loop0\)/boot/vmlinuz"
TIMEOUT = 600.0  # TCG on a loaded CI machine; the wait ends as soon as GRUB gives up


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_dir(tmp_path_factory.mktemp("boot"))


def make(image_dir: Path, out: Path, *grub_options: str) -> Path:
    mp = pytest.MonkeyPatch()
    try:
        args = [f"--grub-option={o}" for o in grub_options]
        assert cli(mp, "disk", str(image_dir), "-o", str(out), "--size", "1G", *args) == 0
    finally:
        mp.undo()
    return out


def boot_until_grub_gives_up(disk: Path, *, uefi: bool) -> str:
    """Boot once, return the cleaned serial text up to GRUB's last fallback failure."""
    with VM(VMConfig(disk=disk, uefi=uefi, memory=512, cpus=1)) as vm:  # type: ignore[arg-type]
        vm.wait_for_serial(ALL_FAILED, TIMEOUT)
        text = clean(vm.serial_text())
    # OVMF mirrors its console on the serial port: GRUB's lines may appear twice there.
    return text


def attempts(text: str) -> list[str]:
    """Entries GRUB tried, in order (duplicated lines from a mirrored console collapsed)."""
    tried = re.findall(r"kairos-grub: booting (\w+) ", text)
    return [t for i, t in enumerate(tried) if i == 0 or tried[i - 1] != t]


def oem_env(disk: Path, tmp: Path) -> dict[str, str]:
    oem = next(e for e in read_gpt(disk) if e.name == "oem")
    target = FsTarget(disk, oem.start_lba * 512, 0)
    return grubenv.decode(dump(target, "/grubenv", tmp / "grubenv"))


def check_entry_chain(text: str, first: str, then: str) -> None:
    assert CFG_MARKER in text
    tried = attempts(text)
    assert tried[:2] == [first, then], tried
    # Every attempt read the kernel from inside the loop-mounted squashfs...
    assert len(re.findall(KERNEL_READ, text)) >= len(tried)
    # ...and none reused a stale loop0 left by the entry before it.
    assert "device name already exists" not in text
    assert "Falling back to" in text


def test_bios_one_shot_entry_then_fallback_then_default(image_dir: Path, tmp_path: Path) -> None:
    disk = make(image_dir, tmp_path / "bios.raw", "next_entry=recovery")
    assert oem_env(disk, tmp_path)["next_entry"] == "recovery"
    text = boot_until_grub_gives_up(disk, uefi=False)
    check_entry_chain(text, "recovery", "fallback")
    assert "kairos-grub: booting recovery (/cOS/recovery.squashfs)" in text
    # GRUB cleared the one-shot entry in COS_OEM:/grubenv with save_env, in place.
    env = oem_env(disk, tmp_path)
    assert env["next_entry"] == ""
    assert (tmp_path / "grubenv").stat().st_size == 1024
    # So the next boot starts from the default entry again.
    text = boot_until_grub_gives_up(disk, uefi=False)
    check_entry_chain(text, "cos", "fallback")


def test_uefi_default_entry_then_fallback(image_dir: Path, tmp_path: Path) -> None:
    disk = make(image_dir, tmp_path / "uefi.raw")
    text = boot_until_grub_gives_up(disk, uefi=True)
    check_entry_chain(text, "cos", "fallback")
    assert "kairos-grub: booting cos (/cOS/active.img)" in text
    assert "kairos-grub: booting fallback (/cOS/passive.img)" in text
