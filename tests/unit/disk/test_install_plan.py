"""plan_install and make_disk refuse bad input before writing a single byte."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kairos.agent.install import plan_install, validate_cloud_config
from kairos.artifacts.disk import make_disk
from kairos.disk.sizes import MiB
from kairos.errors import BadInput
from kairos.run import run

pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs squashfs-tools")


def squashfs(tmp: Path, name: str, *, files: tuple[str, ...] = ("boot/vmlinuz", "boot/initrd"),
             comp: str = "xz") -> Path:
    tree = tmp / f"{name}.tree"
    for f in files:
        (tree / f).parent.mkdir(parents=True, exist_ok=True)
        (tree / f).write_bytes(b"dummy " + f.encode())
    tree.mkdir(exist_ok=True)
    out = tmp / name
    run(["mksquashfs", str(tree), str(out), "-comp", comp, "-noappend", "-quiet"])
    return out


@pytest.fixture(scope="module")
def slot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return squashfs(tmp_path_factory.mktemp("slot"), "rootfs.squashfs")


def cloud_config(tmp: Path, text: str) -> Path:
    path = tmp / "cc.yaml"
    path.write_text(text)
    return path


def plan(slot: Path, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {"recovery_image": None, "disk_size": None, "cloud_configs": [],
                               "grub_options": {}}
    args.update(kw)
    return plan_install(slot, **args)  # type: ignore[arg-type]


def test_plan_uses_the_slot_for_recovery_by_default(slot: Path) -> None:
    p = plan(slot, grub_options={"extra_cmdline": "quiet"})
    assert p.recovery_image == slot
    assert p.grub_env == {"extra_cmdline": "quiet"}
    assert "menuentry" in p.grub_cfg
    assert p.layout.disk_size % (1024 * MiB) == 0


def test_too_small_disk(slot: Path) -> None:
    with pytest.raises(BadInput, match=r"disk size 100M is too small: .* use --size \d+M"):
        plan(slot, disk_size=100 * MiB)


def test_zstd_slot_is_refused(tmp_path: Path) -> None:
    bad = squashfs(tmp_path, "z.squashfs", comp="zstd")
    with pytest.raises(BadInput, match="zstd compression, which GRUB cannot read"):
        plan(bad)


def test_slot_without_kernel_is_refused(tmp_path: Path) -> None:
    bad = squashfs(tmp_path, "nok.squashfs", files=("boot/initrd",))
    with pytest.raises(BadInput, match="has no /boot/vmlinuz"):
        plan(bad)


def test_not_a_squashfs(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"x" * 200)
    with pytest.raises(BadInput, match="is not a squashfs image"):
        plan(junk)
    with pytest.raises(BadInput, match="does not exist"):
        plan(tmp_path / "missing")


def test_grubenv_overflow_is_found_up_front(slot: Path) -> None:
    with pytest.raises(BadInput, match="does not fit in 1024 bytes"):
        plan(slot, grub_options={"extra_cmdline": "x" * 1100})


@pytest.mark.parametrize(("text", "message"), [
    ("hostname: x\n", "missing the #cloud-config header"),
    ("#cloud-config\nusers: [\n", r"cc\.yaml:3:1: expected the node content"),
    ("#cloud-config\n- a\n- b\n", "the top level must be a map of keys"),
])
def test_bad_cloud_configs(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        validate_cloud_config(cloud_config(tmp_path, text))


def test_good_cloud_config(tmp_path: Path) -> None:
    validate_cloud_config(cloud_config(tmp_path, "#cloud-config\nhostname: edge-1\n"))


def test_make_disk_writes_nothing_on_bad_input(tmp_path: Path, slot: Path) -> None:
    image_dir = tmp_path / "image"
    image_dir.mkdir()
    shutil.copy(slot, image_dir / "rootfs.squashfs")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    bad = cloud_config(tmp_path, "#cloud-config\nusers: [\n")
    with pytest.raises(BadInput, match="expected the node content"):
        make_disk(image_dir, out_dir / "disk.raw", cloud_config=bad)
    with pytest.raises(BadInput, match="too small"):
        make_disk(image_dir, out_dir / "disk.raw", size="64M")
    with pytest.raises(BadInput, match=r"has no rootfs\.squashfs"):
        make_disk(out_dir, out_dir / "disk.raw")
    with pytest.raises(BadInput, match="cannot read the size"):
        make_disk(image_dir, out_dir / "disk.raw", size="big")
    assert list(out_dir.iterdir()) == []
