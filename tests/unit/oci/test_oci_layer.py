"""write_layer: reproducible bytes, correct digests, every file type, xattrs as PAX records."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import socket
import stat
import tarfile
from pathlib import Path

import pytest

from kairos.errors import BadInput
from kairos.oci.layer import tar_entry, write_layer
from kairos.oci.media import MT_LAYER_GZIP, MT_LAYER_TAR, MT_LAYER_ZSTD
from tests.unit.oci.ocitest_helpers import EARLIER, EPOCH, make_tree


def _user_xattrs_work(path: Path) -> bool:
    probe = path / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def members(blob: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tf:
        return tf.getmembers()


@pytest.mark.parametrize("compress", ["gzip", "zstd", "none"])
def test_same_tree_same_bytes(tmp_path: Path, compress: str) -> None:
    tree = make_tree(tmp_path / "tree")
    first = write_layer(tree, tmp_path / "one", mtime=EPOCH, compress=compress)
    # A second tree built the same way: other inodes, ctimes and atimes, same content.
    copy = make_tree(tmp_path / "copy")
    second = write_layer(copy, tmp_path / "two", mtime=EPOCH, compress=compress)
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()
    assert (first.diff_id, first.digest, first.size) == (second.diff_id, second.digest,
                                                         second.size)


def test_other_epoch_other_bytes(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    a = write_layer(tree, tmp_path / "a", mtime=EPOCH)
    b = write_layer(tree, tmp_path / "b", mtime=EPOCH + 1)
    assert a.diff_id != b.diff_id


@pytest.mark.parametrize(("compress", "media_type"), [
    ("gzip", MT_LAYER_GZIP), ("zstd", MT_LAYER_ZSTD), ("none", MT_LAYER_TAR)])
def test_digests_match_the_bytes(tmp_path: Path, compress: str, media_type: str) -> None:
    tree = make_tree(tmp_path / "tree")
    out = tmp_path / "layer"
    info = write_layer(tree, out, mtime=EPOCH, compress=compress)
    blob = out.read_bytes()
    assert info.path == out and info.media_type == media_type
    assert info.size == len(blob)
    assert info.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    if compress == "gzip":
        tar = gzip.decompress(blob)
        assert blob[4:8] == b"\0\0\0\0"  # gzip header mtime is zero
    elif compress == "zstd":
        from kairos.run import run
        (tmp_path / "layer.zst").write_bytes(blob)
        run(["zstd", "-d", "-q", "-f", tmp_path / "layer.zst", "-o", tmp_path / "layer.tar"])
        tar = (tmp_path / "layer.tar").read_bytes()
    else:
        tar = blob
    assert info.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert not list(tmp_path.glob("*.part"))


def test_entries_sorted_numeric_and_clamped(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    write_layer(tree, tmp_path / "layer", mtime=EPOCH)
    ms = members((tmp_path / "layer").read_bytes())
    names = [m.name for m in ms]
    assert names.index("a-dir") < names.index("a-dir/Z") < names.index("a-dir/a")
    assert names.index("a-dir/a") < names.index("big") < names.index("bin")
    assert names[-1] == "ünïcode name"
    assert "d" * 90 + "/" + "e" * 90 + "/file-with-a-long-path" in names
    for m in ms:
        assert m.uname == "" and m.gname == ""
        assert m.uid == os.getuid() and m.gid == os.getgid()
        assert 0 < m.mtime <= EPOCH
    by_name = {m.name: m for m in ms}
    assert by_name["etc/hostname"].mtime == EPOCH  # newer than the epoch: clamped
    assert by_name["etc/os-release"].mtime == EARLIER  # older: kept


def test_file_types_and_modes(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    write_layer(tree, tmp_path / "layer", mtime=EPOCH)
    by_name = {m.name: m for m in members((tmp_path / "layer").read_bytes())}
    assert by_name["etc"].isdir()
    assert by_name["bin"].issym() and by_name["bin"].linkname == "usr/bin"
    assert by_name["usr/hostname-link"].linkname == "../etc/hostname"
    assert by_name["etc/initctl"].isfifo()
    assert by_name["usr/bin/su"].mode == 0o4755
    # Hard links: the first name in archive order carries the data, the second links to it.
    assert by_name["etc/os-release"].isreg() and by_name["etc/os-release"].size == 10
    hard = by_name["usr/os-release-hard"]
    assert hard.islnk() and hard.linkname == "etc/os-release"
    assert by_name["big"].size == 3 * 2**20 + 17


def test_sockets_are_skipped(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "file").write_text("x")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(os.fspath(tree / "sock"))
        write_layer(tree, tmp_path / "layer", mtime=EPOCH)
    finally:
        sock.close()
    assert [m.name for m in members((tmp_path / "layer").read_bytes())] == ["file"]


def test_device_node_header(tmp_path: Path) -> None:
    # Building a header needs no real device: give tar_entry the stat of one.
    fields = (stat.S_IFCHR | 0o666, 1, 5, 1, 0, 0, 0, EPOCH, EPOCH, EPOCH)
    st = os.stat_result(fields, {"st_rdev": os.makedev(1, 3), "st_mtime_ns": EPOCH * 10**9})
    info = tar_entry("dev/null", os.fspath(tmp_path), st, EPOCH, {})
    assert info is not None
    assert info.ischr() and (info.devmajor, info.devminor) == (1, 3) and info.mode == 0o666


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_real_device_node(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "dev").mkdir(parents=True)
    os.mknod(tree / "dev" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chown(tree / "dev", 0, 0)
    write_layer(tree, tmp_path / "layer", mtime=EPOCH)
    by_name = {m.name: m for m in members((tmp_path / "layer").read_bytes())}
    assert by_name["dev/null"].ischr() and by_name["dev/null"].devminor == 3


def test_xattrs_become_pax_records(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    if not _user_xattrs_work(tree):
        pytest.skip("the test filesystem has no user xattrs")
    f = tree / "ping"
    f.write_bytes(b"x")
    os.setxattr(f, "user.b", b"\xff\x00binary")
    os.setxattr(f, "user.a", b"text")
    write_layer(tree, tmp_path / "l1", mtime=EPOCH)
    write_layer(tree, tmp_path / "l2", mtime=EPOCH)
    blob = (tmp_path / "l1").read_bytes()
    assert blob == (tmp_path / "l2").read_bytes()
    tar = gzip.decompress(blob)
    assert tar.index(b"SCHILY.xattr.user.a=text") < tar.index(b"SCHILY.xattr.user.b=\xff\x00")
    with tarfile.open(fileobj=io.BytesIO(tar), encoding="utf-8",
                      errors="surrogateescape") as tf:
        pax = tf.getmember("ping").pax_headers
    assert pax["SCHILY.xattr.user.b"].encode("utf-8", "surrogateescape") == b"\xff\x00binary"


@pytest.mark.skipif(os.geteuid() != 0, reason="security.* xattrs need root")
def test_file_capability_kept(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    f = tree / "ping"
    f.write_bytes(b"x")
    # VFS_CAP_REVISION_2 with cap_net_raw (bit 13) permitted+effective.
    cap = bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000")
    os.setxattr(f, "security.capability", cap)
    write_layer(tree, tmp_path / "layer", mtime=EPOCH)
    with tarfile.open(tmp_path / "layer", encoding="utf-8", errors="surrogateescape") as tf:
        value = tf.getmember("ping").pax_headers["SCHILY.xattr.security.capability"]
    assert value.encode("utf-8", "surrogateescape") == cap


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not a directory"):
        write_layer(tmp_path / "missing", tmp_path / "l", mtime=EPOCH)
    with pytest.raises(BadInput, match="compression"):
        write_layer(tmp_path, tmp_path / "l", mtime=EPOCH, compress="bzip2")
    with pytest.raises(BadInput, match="negative"):
        write_layer(tmp_path, tmp_path / "l", mtime=-1)
    (tmp_path / "tree").mkdir()
    with pytest.raises(BadInput, match="inside the tree"):
        write_layer(tmp_path / "tree", tmp_path / "tree" / "layer.tar.gz", mtime=EPOCH)
