"""/boot/kairos-boot.cfg: the id of a slot image's kernel and initrd (artifacts/bootid.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from kairos.artifacts.bootid import (
    BootIds,
    compute_boot_id,
    compute_image_id,
    ensure_boot_cfg,
    parse_boot_cfg,
    read_boot_id,
    read_boot_ids,
    render_boot_cfg,
    write_boot_cfg,
)
from kairos.errors import BadInput

INIT = Path(__file__).resolve().parents[3] / "src/kairos/artifacts/data/initrd-init.sh"


A, B = "a" * 32, "b" * 32


def tree(tmp_path: Path, kernel: bytes = b"kernel", initrd: bytes = b"initrd") -> Path:
    root = tmp_path / "tree"
    (root / "boot").mkdir(parents=True, exist_ok=True)
    (root / "boot/vmlinuz").write_bytes(kernel)
    (root / "boot/initrd").write_bytes(initrd)
    return root


def image_id_of(boot_id: str, kairos_release: bytes, os_release: bytes) -> str:
    """The documented formula, spelled out independently of the module."""
    data = b"kairos image id v1\n" + boot_id.encode() + b"\n"
    for part in (kairos_release, os_release):
        data += str(len(part)).encode() + b"\n" + part
    return hashlib.sha256(data).hexdigest()[:32]


def cfg_text(root: Path) -> str:
    return (root / "boot/kairos-boot.cfg").read_text()


def test_id_is_sha256_of_kernel_then_initrd(tmp_path: Path) -> None:
    root = tree(tmp_path, b"K" * (3 << 20), b"I")  # more than one read chunk
    want = hashlib.sha256(b"K" * (3 << 20) + b"I").hexdigest()[:32]
    assert compute_boot_id(root) == want
    # the order matters: another split of the same bytes is another pair of files
    assert compute_boot_id(tree(tmp_path / "b", b"K" * (3 << 20) + b"I", b"")) == want
    assert compute_boot_id(tree(tmp_path / "c", b"I", b"K")) != compute_boot_id(
        tree(tmp_path / "d", b"K", b"I"))


def test_image_id_is_the_boot_id_and_the_release_files(tmp_path: Path) -> None:
    root = tree(tmp_path)
    (root / "etc").mkdir()
    (root / "etc/kairos-release").write_bytes(b'KAIROS_VERSION="v1"\n')
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_bytes(b"ID=debian\n")
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")  # as Debian has it
    v1 = compute_image_id(root, A)
    assert v1 == image_id_of(A, b'KAIROS_VERSION="v1"\n', b"ID=debian\n")
    assert compute_image_id(root, B) != v1  # another kernel or initrd: another image
    # v2 of the same image: only its version differs
    (root / "etc/kairos-release").write_bytes(b'KAIROS_VERSION="v2"\n')
    assert compute_image_id(root, A) not in (v1, image_id_of(A, b"", b"ID=debian\n"))
    # the lengths keep the files apart: the same bytes split otherwise are another image
    (root / "etc/kairos-release").write_bytes(b'KAIROS_VERSION="v1"\nID=')
    (root / "usr/lib/os-release").write_bytes(b"debian\n")
    assert compute_image_id(root, A) != v1
    with pytest.raises(BadInput, match="not a boot id"):
        compute_image_id(root, "x")


def test_missing_release_files_count_as_empty(tmp_path: Path) -> None:
    root = tree(tmp_path)
    assert compute_image_id(root, A) == image_id_of(A, b"", b"")
    (root / "etc").mkdir()
    (root / "etc/os-release").symlink_to("/usr/lib/os-release")  # a link to nothing
    assert compute_image_id(root, A) == image_id_of(A, b"", b"")


def test_release_files_are_read_inside_the_tree(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc/os-release").write_bytes(b"ID=host\n")
    root = tree(tmp_path)
    (root / "etc").mkdir()
    (root / "etc/os-release").symlink_to(host / "etc/os-release")  # means <root>/<host>/...
    (root / "etc/kairos-release").symlink_to("../../host/etc/os-release")  # climbs: /host/...
    assert compute_image_id(root, A) == image_id_of(A, b"", b"")
    (root / "etc/kairos-release").unlink()
    os.mkfifo(root / "etc/kairos-release")  # never opened: it would hang the build
    with pytest.raises(BadInput, match="not a regular file"):
        compute_image_id(root, A)


def test_render_and_read_round_trip(tmp_path: Path) -> None:
    root = tree(tmp_path)
    assert read_boot_id(root) is None and read_boot_ids(root) is None
    boot_id = write_boot_cfg(root)
    image_id = compute_image_id(root, boot_id)
    assert cfg_text(root) == f"set kairos_boot_id={boot_id}\nset kairos_image_id={image_id}\n"
    assert oct((root / "boot/kairos-boot.cfg").stat().st_mode & 0o777) == "0o644"
    assert read_boot_id(root) == boot_id
    assert read_boot_ids(root) == BootIds(boot_id, image_id)
    assert render_boot_cfg(A) == f"set kairos_boot_id={A}\n"  # the old one-line file
    assert render_boot_cfg(A, B) == f"set kairos_boot_id={A}\nset kairos_image_id={B}\n"
    with pytest.raises(BadInput, match="not a boot id"):
        render_boot_cfg("ABC")
    with pytest.raises(BadInput, match="not a boot id"):
        render_boot_cfg("0" * 31 + "g")
    with pytest.raises(BadInput, match="not an image id"):
        render_boot_cfg(A, "A" * 32)


@pytest.mark.parametrize("text,want", [
    (f"set kairos_boot_id={A}\n", BootIds(A, None)),
    (f"set kairos_boot_id={A}", BootIds(A, None)),
    (f"set kairos_boot_id={A}\nset kairos_image_id={B}\n", BootIds(A, B)),
    (f"set kairos_boot_id={A}\nset kairos_image_id={B}", BootIds(A, B)),
])
def test_parse_accepts_what_we_write_and_the_old_file(text: str, want: BootIds) -> None:
    assert parse_boot_cfg(text) == want


@pytest.mark.parametrize("text", [
    "",
    f"set kairos_image_id={B}\n",  # no boot id: the initrd could not check the kernel
    f"set kairos_image_id={B}\nset kairos_boot_id={A}\n",
    f"set kairos_boot_id={A}\n\nset kairos_image_id={B}\n",
    f"set kairos_boot_id={A}\nset kairos_image_id={B}\nreboot\n",
    f"set kairos_boot_id={A}; reboot\n",
    f"set kairos_boot_id={A}\r\n",
    f"set kairos_boot_id={A.upper()}\n",
    f"set kairos_boot_id={A}\nset kairos_image_id={B[:31]}\n",
    f"set kairos_boot_id={A}\nset kairos_image_id=\n",
    f"set kairos_boot_id={A}\nset kairos_image_id={B}\n\n",
])
def test_parse_refuses_anything_else(text: str) -> None:
    with pytest.raises(BadInput, match="not 'set kairos_boot_id=<id>'"):
        parse_boot_cfg(text)


def test_ensure_writes_when_missing_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    root = tree(tmp_path)
    boot_id = ensure_boot_cfg(root)
    image_id = compute_image_id(root, boot_id)
    assert read_boot_ids(root) == BootIds(compute_boot_id(root), image_id)
    before = (root / "boot/kairos-boot.cfg").stat()
    assert ensure_boot_cfg(root) == boot_id  # present and right: left as it is
    after = (root / "boot/kairos-boot.cfg").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    (root / "boot/initrd").write_bytes(b"another initrd")
    with pytest.raises(BadInput, match="says boot id"):
        ensure_boot_cfg(root)
    (root / "boot/kairos-boot.cfg").write_text("set kairos_boot_id=x; reboot\n")
    with pytest.raises(BadInput, match="not 'set kairos_boot_id=<id>'"):
        ensure_boot_cfg(root)


def test_ensure_completes_an_old_file_and_fixes_a_stale_image_id(tmp_path: Path) -> None:
    root = tree(tmp_path)
    boot_id = compute_boot_id(root)
    (root / "boot/kairos-boot.cfg").write_text(render_boot_cfg(boot_id))  # an older image
    assert read_boot_ids(root) == BootIds(boot_id, None)
    assert ensure_boot_cfg(root) == boot_id
    assert read_boot_ids(root) == BootIds(boot_id, compute_image_id(root, boot_id))
    # An image derived from ours (same kernel, another release) inherits our file: its
    # image id is made its own, or GRUB would judge it by its parent's verdict.
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text("ID=derived\n")
    assert ensure_boot_cfg(root) == boot_id
    assert cfg_text(root) == render_boot_cfg(boot_id, compute_image_id(root, boot_id))
    assert compute_image_id(root, boot_id) == image_id_of(boot_id, b"", b"ID=derived\n")


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


def run_initrd_boot_id_of(root: Path) -> str:
    out = subprocess.run(["/bin/busybox", "sh", "-c", f'. "{INIT}"; boot_id_of "$1"', "sh",
                          str(root)], env={"KAIROS_INITRD_LIB": "1", "PATH": "/bin"},
                         capture_output=True, text=True, check=True)
    return out.stdout


@pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="busybox-static not installed")
def test_the_initrd_reads_what_the_factory_writes(tmp_path: Path) -> None:
    root = tree(tmp_path)
    boot_id = write_boot_cfg(root)
    assert cfg_text(root).count("\n") == 2  # the boot id line and the image id line
    assert run_initrd_boot_id_of(root) == boot_id + "\n"
    (root / "boot/kairos-boot.cfg").write_text(render_boot_cfg(boot_id))  # an older image
    assert run_initrd_boot_id_of(root) == boot_id + "\n"
    (root / "boot/kairos-boot.cfg").write_text(f"set kairos_boot_id={boot_id} x\n")
    assert run_initrd_boot_id_of(root) == ""
