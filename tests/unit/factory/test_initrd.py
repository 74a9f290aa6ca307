from __future__ import annotations

import gzip
import io
import stat
import subprocess
from pathlib import Path

import pytest

from kairos.artifacts.cpio import Entry, write_cpio
from kairos.artifacts.initrd import build_initrd, resolve_modules


def _fake_kernel(root: Path) -> None:
    moddir = root / "lib/modules/6.1.0-9-amd64"
    (moddir / "kernel/fs/ext4").mkdir(parents=True)
    (moddir / "kernel/lib").mkdir(parents=True)
    (moddir / "kernel/drivers").mkdir(parents=True)
    for rel in ("kernel/fs/ext4/ext4.ko", "kernel/lib/crc16.ko", "kernel/fs/mbcache.ko",
                "kernel/drivers/loop.ko", "kernel/drivers/virtio_blk.ko", "kernel/drivers/virtio.ko"):
        (moddir / rel).write_bytes(b"\x7fELF" + rel.encode())
    (moddir / "modules.dep").write_text(
        "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko\n"
        "kernel/lib/crc16.ko:\nkernel/fs/mbcache.ko:\nkernel/drivers/loop.ko:\n"
        "kernel/drivers/virtio_blk.ko: kernel/drivers/virtio.ko\nkernel/drivers/virtio.ko:\n")
    (root / "lib/modules/5.10.0-1-amd64").mkdir(parents=True)  # older, no modules.dep


def test_module_order_puts_dependencies_first(tmp_path: Path) -> None:
    _fake_kernel(tmp_path)
    order = resolve_modules(tmp_path / "lib/modules/6.1.0-9-amd64",
                            ("ext4", "virtio_blk", "not_there", "loop"))
    names = [Path(m).name for m in order]
    assert names.index("crc16.ko") < names.index("ext4.ko")
    assert names.index("mbcache.ko") < names.index("ext4.ko")
    assert names.index("virtio.ko") < names.index("virtio_blk.ko")
    assert "not_there.ko" not in names
    assert len(names) == len(set(names))


def test_cpio_is_readable_by_cpio_and_deterministic(tmp_path: Path) -> None:
    entries = [Entry("bin", stat.S_IFDIR | 0o755), Entry("bin/x", stat.S_IFREG | 0o755, b"abc"),
               Entry("bin/y", stat.S_IFLNK | 0o777, b"x")]
    a, b = io.BytesIO(), io.BytesIO()
    write_cpio(entries, a, 123)
    write_cpio(list(reversed(entries)), b, 123)
    assert a.getvalue() == b.getvalue()
    listing = subprocess.run(["cpio", "-t"], input=a.getvalue(), capture_output=True, check=True)
    assert listing.stdout.decode().split() == ["bin", "bin/x", "bin/y"]


@pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="busybox-static not installed")
def test_initrd_contents_and_reproducibility(tmp_path: Path) -> None:
    _fake_kernel(tmp_path)
    one = build_initrd(tmp_path, tmp_path / "one", mtime=1000)
    build_initrd(tmp_path, tmp_path / "two", mtime=1000)
    assert one.kernel_version == "6.1.0-9-amd64"
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()
    raw = gzip.decompress((tmp_path / "one").read_bytes())
    names = subprocess.run(["cpio", "-t"], input=raw, capture_output=True, check=True).stdout.decode()
    for want in ("init", "bin/busybox", "bin/switch_root", "dev/console", "etc/modules"):
        assert want in names.split(), want
    assert one.size < 3 * 2**20  # tiny: busybox plus a handful of modules
