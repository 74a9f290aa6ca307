"""/boot/kairos-boot.cfg: the id of a slot image's kernel and initrd (artifacts/bootid.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from kairos.artifacts.bootid import (
    compute_boot_id,
    ensure_boot_cfg,
    read_boot_id,
    render_boot_cfg,
    write_boot_cfg,
)
from kairos.errors import BadInput

INIT = Path(__file__).resolve().parents[3] / "src/kairos/artifacts/data/initrd-init.sh"


def tree(tmp_path: Path, kernel: bytes = b"kernel", initrd: bytes = b"initrd") -> Path:
    root = tmp_path / "tree"
    (root / "boot").mkdir(parents=True, exist_ok=True)
    (root / "boot/vmlinuz").write_bytes(kernel)
    (root / "boot/initrd").write_bytes(initrd)
    return root


def test_id_is_sha256_of_kernel_then_initrd(tmp_path: Path) -> None:
    root = tree(tmp_path, b"K" * (3 << 20), b"I")  # more than one read chunk
    want = hashlib.sha256(b"K" * (3 << 20) + b"I").hexdigest()[:32]
    assert compute_boot_id(root) == want
    # the order matters: another split of the same bytes is another pair of files
    assert compute_boot_id(tree(tmp_path / "b", b"K" * (3 << 20) + b"I", b"")) == want
    assert compute_boot_id(tree(tmp_path / "c", b"I", b"K")) != compute_boot_id(
        tree(tmp_path / "d", b"K", b"I"))


def test_render_and_read_round_trip(tmp_path: Path) -> None:
    root = tree(tmp_path)
    assert read_boot_id(root) is None
    boot_id = write_boot_cfg(root)
    assert (root / "boot/kairos-boot.cfg").read_text() == f"set kairos_boot_id={boot_id}\n"
    assert oct((root / "boot/kairos-boot.cfg").stat().st_mode & 0o777) == "0o644"
    assert read_boot_id(root) == boot_id
    with pytest.raises(BadInput, match="not a boot id"):
        render_boot_cfg("ABC")
    with pytest.raises(BadInput, match="not a boot id"):
        render_boot_cfg("0" * 31 + "g")


def test_ensure_writes_when_missing_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    root = tree(tmp_path)
    boot_id = ensure_boot_cfg(root)
    assert read_boot_id(root) == boot_id == compute_boot_id(root)
    assert ensure_boot_cfg(root) == boot_id  # present and right: left as it is
    (root / "boot/initrd").write_bytes(b"another initrd")
    with pytest.raises(BadInput, match="says boot id"):
        ensure_boot_cfg(root)
    (root / "boot/kairos-boot.cfg").write_text("set kairos_boot_id=x; reboot\n")
    with pytest.raises(BadInput, match="not one 'set kairos_boot_id"):
        ensure_boot_cfg(root)


def test_missing_boot_files_are_an_error(tmp_path: Path) -> None:
    root = tree(tmp_path)
    (root / "boot/initrd").unlink()
    with pytest.raises(BadInput, match="/boot/initrd is missing"):
        compute_boot_id(root)
    os.mkfifo(root / "boot/initrd")
    with pytest.raises(BadInput, match="not a regular file"):
        compute_boot_id(root)


def test_links_are_followed_inside_the_tree_only(tmp_path: Path) -> None:
    """An image whose /boot is an absolute link: read and written inside the tree."""
    host = tmp_path / "host"
    (host / "boot").mkdir(parents=True)
    (host / "boot/vmlinuz").write_bytes(b"host kernel")
    (host / "boot/initrd").write_bytes(b"host initrd")
    root = tmp_path / "root"
    (root / "real-boot").mkdir(parents=True)
    (root / "real-boot/vmlinuz-6").write_bytes(b"kernel")
    (root / "real-boot/vmlinuz").symlink_to("/real-boot/vmlinuz-6")
    (root / "real-boot/initrd").write_bytes(b"initrd")
    (root / "boot").symlink_to("/real-boot")
    boot_id = ensure_boot_cfg(root)
    assert boot_id == hashlib.sha256(b"kernelinitrd").hexdigest()[:32]
    assert (root / "real-boot/kairos-boot.cfg").is_file()
    assert not (host / "boot/kairos-boot.cfg").exists()
    # a link out of the tree (relative, climbing) stays inside too: /../host is /host
    (root / "real-boot/initrd").unlink()
    (root / "real-boot/initrd").symlink_to("../../host/boot/initrd")
    with pytest.raises(BadInput, match="/boot/initrd is missing"):
        compute_boot_id(root)


def test_a_planted_link_at_the_cfg_is_not_written_through(tmp_path: Path) -> None:
    root = tree(tmp_path)
    outside = tmp_path / "outside.cfg"
    outside.write_text("keep\n")
    (root / "boot/kairos-boot.cfg").symlink_to(outside)  # absolute: means <root>/<outside>
    assert read_boot_id(root) is None  # it leads nowhere inside the tree
    boot_id = ensure_boot_cfg(root)
    assert outside.read_text() == "keep\n"
    assert not (root / "boot/kairos-boot.cfg").is_symlink()  # replaced, not followed
    assert read_boot_id(root) == boot_id


@pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="busybox-static not installed")
def test_the_initrd_reads_what_the_factory_writes(tmp_path: Path) -> None:
    root = tree(tmp_path)
    boot_id = write_boot_cfg(root)
    out = subprocess.run(["/bin/busybox", "sh", "-c", f'. "{INIT}"; boot_id_of "$1"', "sh",
                          str(root)], env={"KAIROS_INITRD_LIB": "1", "PATH": "/bin"},
                         capture_output=True, text=True, check=True)
    assert out.stdout == boot_id + "\n"
    (root / "boot/kairos-boot.cfg").write_text(f"set kairos_boot_id={boot_id} x\n")
    out = subprocess.run(["/bin/busybox", "sh", "-c", f'. "{INIT}"; boot_id_of "$1"', "sh",
                          str(root)], env={"KAIROS_INITRD_LIB": "1", "PATH": "/bin"},
                         capture_output=True, text=True, check=True)
    assert out.stdout == ""
