"""plan_install and make_disk refuse bad input before writing a single byte."""

from __future__ import annotations

import json
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


# -- the slot records install writes (state.yaml) --------------------------------------------

RELEASE = 'KAIROS_VERSION="v1.4.0"\nKAIROS_ARCH="arm64"\nKAIROS_FLAVOR="debian"\n'


def release_squashfs(tmp: Path, name: str, release: str | None) -> Path:
    """A bootable-looking squashfs with (or without) /etc/kairos-release inside."""
    tree = tmp / f"{name}.tree"
    (tree / "boot").mkdir(parents=True)
    for f in ("vmlinuz", "initrd"):
        (tree / "boot" / f).write_bytes(b"dummy " + f.encode())
    if release is not None:
        (tree / "etc").mkdir()
        (tree / "etc/kairos-release").write_text(release)
    out = tmp / name
    run(["mksquashfs", str(tree), str(out), "-comp", "xz", "-noappend", "-quiet"])
    return out


def test_records_from_the_image_itself(tmp_path: Path) -> None:
    import hashlib
    slot = release_squashfs(tmp_path, "rootfs.squashfs", RELEASE)
    p = plan(slot)
    rec = p.records["active"]
    assert p.records["passive"] == rec and p.records["recovery"] == rec  # one image
    assert rec.source == f"file:{slot.resolve()}"
    assert rec.sha256 == hashlib.sha256(slot.read_bytes()).hexdigest()
    assert (rec.version, rec.arch, rec.digest) == ("v1.4.0", "arm64", "")
    assert (rec.size, rec.inode, rec.fs) == (slot.stat().st_size, 0, "squashfs")
    assert rec.date.endswith("Z")
    assert p.summary()["images"]["active"]["version"] == "v1.4.0"


def test_records_from_build_json(tmp_path: Path) -> None:
    """The factory's output: build.json gives the sha256 and the OCI digest of the rootfs it
    describes, kairos-release beside it the version when the image has none inside."""
    image_dir = tmp_path / "image"
    image_dir.mkdir()
    slot = release_squashfs(image_dir, "rootfs.squashfs", None)
    recovery = release_squashfs(image_dir, "recovery.squashfs", RELEASE.replace("1.4", "0.9"))
    digest = "sha256:" + "c" * 64
    (image_dir / "kairos-release").write_text(RELEASE)
    (image_dir / "build.json").write_text(json.dumps({
        "rootfs": "/elsewhere/out/rootfs.squashfs", "rootfs_sha256": "e" * 64,
        "rootfs_size": slot.stat().st_size, "oci_digest": digest}))
    p = plan(slot, recovery_image=recovery)
    active, rec = p.records["active"], p.records["recovery"]
    assert (active.sha256, active.digest, active.version, active.arch) == (
        "e" * 64, digest, "v1.4.0", "arm64")
    # build.json describes the rootfs only: the recovery image is hashed, and has no digest.
    assert rec.sha256 != "e" * 64 and len(rec.sha256) == 64
    assert (rec.digest, rec.version) == ("", "v0.9.0")


def test_build_json_of_another_file_is_not_trusted(tmp_path: Path) -> None:
    image_dir = tmp_path / "image"
    image_dir.mkdir()
    slot = release_squashfs(image_dir, "rootfs.squashfs", None)
    (image_dir / "kairos-release").write_text(RELEASE)
    (image_dir / "build.json").write_text(json.dumps({
        "rootfs": "rootfs.squashfs", "rootfs_sha256": "e" * 64,
        "rootfs_size": slot.stat().st_size + 1, "oci_digest": "sha256:" + "c" * 64}))
    rec = plan(slot).records["active"]
    assert rec.sha256 != "e" * 64 and rec.digest == ""
    assert rec.version == ""  # neither inside the image nor from a build that made it
