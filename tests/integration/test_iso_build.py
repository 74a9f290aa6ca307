"""`kairos iso` on the session's default image: a hybrid ISO (El Torito BIOS + UEFI, GRUB's
MBR, the EFI image in the GPT), the very slot image of the build, the ISO's config and
overlay, and bad input refused with exit code 2 and no file left behind."""

from __future__ import annotations

import hashlib
import re
import struct
import subprocess
from pathlib import Path

import pytest

from kairos.artifacts.iso import render_live_grub_cfg
from tests.helpers import kairos

pytestmark = pytest.mark.integration

CONFIG = "#cloud-config\nhostname: iso-test\nusers:\n  - name: kairos\n    groups: [admin]\n"
BOOT_HYBRID = Path("/usr/lib/grub/i386-pc/boot_hybrid.img")


def xorriso(iso: Path, *args: str) -> str:
    """What xorriso reports (it puts the loaded volume's id on stderr, reports on stdout)."""
    proc = subprocess.run(["xorriso", "-indev", str(iso), *args], capture_output=True,
                          text=True, check=True)
    return proc.stderr + proc.stdout


def extents(iso: Path) -> dict[str, tuple[int, int]]:
    """ISO path -> (start block, size in bytes) of each single-extent file."""
    found: dict[str, tuple[int, int]] = {}
    for m in re.finditer(r"File data lba:\s+0 ,\s+(\d+) ,\s+\d+ ,\s+(\d+) , '(.+)'",
                         xorriso(iso, "-find", "/", "-exec", "report_lba")):
        found[m[3]] = (int(m[1]), int(m[2]))
    return found


def iso_file(iso: Path, path: str) -> bytes:
    start, size = extents(iso)[path]
    with open(iso, "rb") as fh:
        fh.seek(start * 2048)
        return fh.read(size)


def sha256_range(path: Path, offset: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(offset)
        left = size
        while left:
            chunk = fh.read(min(left, 8 << 20))
            assert chunk, "short read"
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def built(default_image: dict[str, object], tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("iso")
    cc = work / "cloud-config.yaml"
    cc.write_text(CONFIG)
    overlay = work / "overlay"
    (overlay / "oem").mkdir(parents=True)
    (overlay / "oem/50_extra.yaml").write_text("#cloud-config\nhostname: from-overlay\n")
    (overlay / "notes.txt").write_text("inside the overlay\n")
    (overlay / "oem/notes-link").symlink_to("/notes.txt")  # absolute: inside the overlay
    out = work / "kairos.iso"
    kairos("iso", str(default_image["output"]), "-o", str(out), "--cloud-config", str(cc),
           "--overlay-iso", str(overlay), "--json")
    return {"iso": out, "image": Path(str(default_image["output"])), "config": cc,
            "work": work}


def test_el_torito_bios_and_uefi_and_a_usb_mbr(built: dict[str, Path]) -> None:
    iso = built["iso"]
    report = xorriso(iso, "-report_el_torito", "plain", "-report_system_area", "plain")
    assert "Volume id    : 'COS_LIVE'" in report
    assert re.search(r"El Torito boot img :\s+1\s+BIOS\s+y\s+none", report)
    assert re.search(r"El Torito boot img :\s+2\s+UEFI\s+y\s+none", report)
    assert re.search(r"El Torito img path :\s+1\s+/boot/eltorito.img", report)
    assert re.search(r"El Torito img path :\s+2\s+/boot/efi.img", report)
    assert "grub2-mbr" in report and "GPT" in report
    # the EFI image is also the ESP of the GPT, for a USB stick under UEFI
    assert re.search(r"GPT type GUID\s+:\s+2\s+28732ac11ff8d211ba4b00a0c93ec93b", report)
    assert re.search(r"GPT partition path :\s+2\s+/boot/efi.img", report)
    # BIOS from a USB stick: GRUB's boot_hybrid.img, told where the El Torito image starts
    head = iso.read_bytes()[:512]
    hybrid = BOOT_HYBRID.read_bytes()
    assert head[:0x1B0] == hybrid[:0x1B0] and head[510:] == b"\x55\xaa"
    (lba,) = struct.unpack_from("<Q", head, 0x1B0)
    assert lba == extents(iso)["/boot/eltorito.img"][0] * 4 + 4


def test_the_slot_image_is_the_builds_byte_for_byte(built: dict[str, Path]) -> None:
    iso, image = built["iso"], built["image"]
    found = extents(iso)
    start, size = found["/rootfs.squashfs"]
    slot = image / "rootfs.squashfs"
    assert size == slot.stat().st_size
    assert sha256_range(iso, start * 2048, size) == sha256_range(slot, 0, size)
    assert iso_file(iso, "/boot/kernel") == (image / "vmlinuz").read_bytes()
    assert iso_file(iso, "/boot/initrd") == (image / "initrd").read_bytes()
    assert iso_file(iso, "/grub2/grub.cfg").decode() == render_live_grub_cfg()


def test_the_efi_image_holds_bootx64(built: dict[str, Path]) -> None:
    efi = built["work"] / "efi.img"
    efi.write_bytes(iso_file(built["iso"], "/boot/efi.img"))
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
    listing = subprocess.run(["mdir", "-b", "-i", str(efi), "::/EFI/BOOT"], capture_output=True,
                             text=True, check=True, env=env).stdout
    assert "::/EFI/BOOT/BOOTX64.EFI" in listing.splitlines()
    binary = subprocess.run(["mtype", "-i", str(efi), "::/EFI/BOOT/BOOTX64.EFI"],
                            capture_output=True, check=True, env=env).stdout
    assert binary[:2] == b"MZ" and b"COS_LIVE" in binary  # a PE image, with the early config


def test_config_and_overlay_are_on_the_iso(built: dict[str, Path]) -> None:
    iso = built["iso"]
    assert iso_file(iso, "/config.yaml") == built["config"].read_bytes()
    assert iso_file(iso, "/oem/50_extra.yaml").startswith(b"#cloud-config")
    assert iso_file(iso, "/notes.txt") == b"inside the overlay\n"
    assert iso_file(iso, "/oem/notes-link") == b"inside the overlay\n"  # followed inside


def _refused(args: list[str], out: Path, match: str) -> None:
    proc = kairos("iso", *args, "-o", str(out), check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-2].startswith("kairos: error: ") and match in lines[-2], proc.stderr
    assert lines[-1].startswith("  hint: ")
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*"))  # no temp file either


def test_bad_input_is_refused_with_exit_2_and_no_file(built: dict[str, Path],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out.iso"
    image = str(built["image"])
    _refused([str(tmp_path / "missing")], out, "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused([str(empty)], out, "has no rootfs.squashfs")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "rootfs.squashfs").write_bytes(b"\0" * 4096)
    _refused([str(broken)], out, "is not a squashfs image")
    no_kernel = tmp_path / "no-kernel"
    no_kernel.mkdir()
    (no_kernel / "rootfs.squashfs").symlink_to(built["image"] / "rootfs.squashfs")
    _refused([str(no_kernel)], out, "has no vmlinuz")
    _refused([image, "--cloud-config", str(tmp_path / "nope.yaml")], out, "does not exist")
    bad = tmp_path / "bad.yaml"
    bad.write_text("#cloud-config\nusers: [\n")
    _refused([image, "--cloud-config", str(bad)], out, "bad.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"#cloud-config\n\xff\xfe\n")
    _refused([image, "--cloud-config", str(binary)], out, "not UTF-8")
    escape = tmp_path / "escape"
    escape.mkdir()
    (escape / "passwd").symlink_to("/etc/passwd")
    _refused([image, "--overlay-iso", str(escape)], out, "link to nothing inside")
    # an existing ISO is left as it was when the new one is refused
    out.write_bytes(b"previous")
    proc = kairos("iso", str(broken), "-o", str(out), check=False)
    assert proc.returncode == 2 and out.read_bytes() == b"previous"
