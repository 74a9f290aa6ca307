"""unpack_image: round trips, whiteouts, path-escape refusal, formats, and damaged inputs."""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import tarfile
import uuid
import zlib
from pathlib import Path

import pytest

from kairos.errors import BadInput
from kairos.oci.apply import ApplyState, apply_layer
from kairos.oci.image import ImageConfig, blob_path, write_image
from kairos.oci.layer import LayerInfo, iter_tree, write_layer
from kairos.oci.media import canonical_json
from kairos.oci.unpack import inflate_gzip, inspect_image, unpack_image
from tests.unit.oci.ocitest_helpers import (
    EPOCH,
    Entry,
    docker_archive,
    layer_tar,
    make_image,
    make_tree,
    sha,
)


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Type, mode, content or target, and mtime of every entry below `root`."""
    out: dict[str, tuple[object, ...]] = {}
    for name, path in iter_tree(root):
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            out[name] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[name] = ("dir", stat.S_IMODE(st.st_mode))
        elif stat.S_ISFIFO(st.st_mode):
            out[name] = ("fifo", stat.S_IMODE(st.st_mode), min(int(st.st_mtime), EPOCH))
        else:
            out[name] = ("file", stat.S_IMODE(st.st_mode), Path(path).read_bytes(),
                         min(int(st.st_mtime), EPOCH))
    return out


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_round_trip_layout_and_archive(tmp_path: Path, compress: str) -> None:
    tree = make_tree(tmp_path / "tree")
    layer = write_layer(tree, tmp_path / "layer", mtime=EPOCH, compress=compress)
    ref = write_image([layer], tmp_path / "layout", ref="rt:1", archive=tmp_path / "img.tar",
                      config=ImageConfig(created_epoch=EPOCH, labels={"k": "v"}))
    want = snapshot(tree)
    for source in (tmp_path / "layout", tmp_path / "img.tar"):
        dest = tmp_path / f"out-{source.name}"
        info = unpack_image(source, dest, ref="rt:1")
        assert snapshot(dest) == want
        assert info.manifest_digest == ref.digest and info.labels == {"k": "v"}
        assert info.diff_ids == [layer.diff_id]
        assert info.kind == ("oci-layout" if source.is_dir() else "oci-archive")
        a = os.lstat(dest / "etc" / "os-release")
        b = os.lstat(dest / "usr" / "os-release-hard")
        assert a.st_ino == b.st_ino  # hard link kept
        assert os.lstat(dest / "etc" / "hostname").st_mtime == EPOCH


def test_whiteouts(tmp_path: Path) -> None:
    lower = [
        Entry("a", "dir"), Entry("a/x", data=b"x"), Entry("a/y", data=b"y"),
        Entry("d", "dir"), Entry("d/old", data=b"old"), Entry("d/sub", "dir"),
        Entry("d/sub/deep", data=b"deep"), Entry("d/sub2", "dir"),
        Entry("d/sub2/lower", data=b"lower"),
        Entry("gone", data=b"bye"), Entry("gonedir", "dir"), Entry("gonedir/f", data=b"f"),
        Entry("keep", data=b"keep"),
    ]
    upper = [
        Entry(".wh.gone"), Entry(".wh.gonedir"), Entry("a/.wh.x"),
        # Same-layer entries survive the layer's own whiteouts and opaque markers.
        Entry("a/z", data=b"z"), Entry("a/.wh.z"),
        Entry("d/new", data=b"new"), Entry("d/sub2/upper", data=b"up"),
        Entry("d/.wh..wh..opq"), Entry("d/later", data=b"later"),
        Entry(".wh.never-existed"),
    ]
    make_image(tmp_path, [lower, upper], archive=tmp_path / "img.tar")
    dest = tmp_path / "out"
    unpack_image(tmp_path / "img.tar", dest)
    names = {name for name, _ in iter_tree(dest)}
    assert names == {"a", "a/y", "a/z", "d", "d/later", "d/new", "d/sub2", "d/sub2/upper",
                     "keep"}
    assert (dest / "a" / "z").read_bytes() == b"z"


def test_opaque_marker_first_in_directory(tmp_path: Path) -> None:
    lower = [Entry("etc", "dir"), Entry("etc/a", data=b"a"), Entry("etc/b", data=b"b")]
    upper = [Entry("etc", "dir"), Entry("etc/.wh..wh..opq"), Entry("etc/c", data=b"c")]
    make_image(tmp_path, [lower, upper])
    unpack_image(tmp_path / "layout", tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out" / "etc")) == ["c"]


@pytest.mark.parametrize(("entries", "why"), [
    ([Entry("/etc/passwd", data=b"root")], "absolute"),
    ([Entry("../escape", data=b"x")], "'..'"),
    ([Entry("a/../../escape", data=b"x")], "'..'"),
    ([Entry("ok", data=b"x"), Entry("link", "hardlink", target="../outside")], "'..'"),
    ([Entry("up", "symlink", target="../../.."), Entry("up/escape", data=b"x")], "outside"),
    ([Entry("loop", "symlink", target="loop"), Entry("loop/x", data=b"x")], "loop"),
    ([Entry("a/.wh..."), ], "whiteout"),
])
def test_escapes_are_refused(tmp_path: Path, entries: list[Entry], why: str) -> None:
    make_image(tmp_path / "img", [[Entry("base", data=b"b")], entries])
    dest = tmp_path / "root" / "dest"
    with pytest.raises(BadInput, match=why) as err:
        unpack_image(tmp_path / "img" / "layout", dest)
    assert "layer 2/2" in err.value.message
    assert "\n" not in str(err.value)
    assert not (tmp_path / "root" / "escape").exists()
    assert not (tmp_path / "escape").exists()


def test_symlink_escape_in_later_layer(tmp_path: Path) -> None:
    # A link left by a lower layer must not carry an upper layer's file out of the root.
    make_image(tmp_path / "img", [[Entry("evil", "symlink", target="../../..")],
                                  [Entry("evil/tmp/escape", data=b"x")]])
    with pytest.raises(BadInput, match=r"layer 2/2.*outside"):
        unpack_image(tmp_path / "img" / "layout", tmp_path / "dest")


def test_symlink_replacing_a_directory_in_the_same_layer(tmp_path: Path) -> None:
    # The applier remembers directories it has made; a link that replaces one later in the
    # same layer must be followed (and refused) for the entries after it, not bypassed.
    make_image(tmp_path / "img", [[
        Entry("a", "dir"), Entry("a/first", data=b"1"),
        Entry("a", "symlink", target="../../.."), Entry("a/tmp/escape", data=b"x")]])
    with pytest.raises(BadInput, match=r"layer 1/1.*outside"):
        unpack_image(tmp_path / "img" / "layout", tmp_path / "dest")
    make_image(tmp_path / "img2", [[
        Entry("etc", "dir"), Entry("a", "dir"), Entry("a/first", data=b"1"),
        Entry("a", "symlink", target="/etc"), Entry("a/second", data=b"2")]])
    dest = tmp_path / "dest2"
    unpack_image(tmp_path / "img2" / "layout", dest)
    assert (dest / "etc" / "second").read_bytes() == b"2"
    assert os.readlink(dest / "a") == "/etc"


def test_gzip_in_process_without_any_tool(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # gzip layers are inflated in a thread of ours: no process is started, so a base or a
    # device without a gzip binary unpacks alike.
    import kairos.oci.unpack as unpack
    tree = make_tree(tmp_path / "tree")
    layer = write_layer(tree, tmp_path / "layer", mtime=EPOCH, compress="gzip")
    write_image([layer], tmp_path / "layout", ref="rt:1",
                config=ImageConfig(created_epoch=EPOCH))

    def no_process(*_a: object, **_k: object) -> None:
        raise AssertionError("a process was started")
    monkeypatch.setattr(unpack, "popen", no_process)
    unpack_image(tmp_path / "layout", tmp_path / "dest", ref="rt:1")
    assert snapshot(tmp_path / "dest") == snapshot(tree)


def _inflated(data: bytes, chunk: int = 7) -> bytes:
    return b"".join(inflate_gzip(iter([data[i:i + chunk] for i in range(0, len(data), chunk)])))


def test_inflate_members_padding_and_damage() -> None:
    one, two = gzip.compress(b"first " * 50), gzip.compress(b"second")
    assert _inflated(one) == b"first " * 50
    assert _inflated(one + two, chunk=5) == b"first " * 50 + b"second"  # members concatenated
    # after the last member: zero padding and other trailing bytes are ignored, as gzip
    # does with a warning (the blob's digest over every byte decides)
    assert _inflated(one + bytes(512)) == b"first " * 50
    assert _inflated(one + b"trailing junk") == b"first " * 50
    with pytest.raises(EOFError):
        _inflated(one[:-10])  # ends inside the member
    with pytest.raises(EOFError):
        _inflated(b"")
    bad = bytearray(one)
    bad[-5] ^= 0xFF  # the trailer's length
    with pytest.raises(zlib.error):
        _inflated(bytes(bad))


def test_absolute_symlinks_stay_inside_the_root(tmp_path: Path) -> None:
    name = f"kairos-oci-test-{uuid.uuid4().hex}"
    make_image(tmp_path / "img", [
        [Entry("run", "dir"), Entry("var", "dir"), Entry("var/run", "symlink", target="/run")],
        [Entry(f"var/run/{name}", data=b"inside")],
    ])
    dest = tmp_path / "dest"
    unpack_image(tmp_path / "img" / "layout", dest)
    assert (dest / "run" / name).read_bytes() == b"inside"
    assert not Path("/run", name).exists()
    assert os.readlink(dest / "var" / "run") == "/run"


def test_file_replaces_symlink_instead_of_writing_through(tmp_path: Path) -> None:
    make_image(tmp_path / "img", [
        [Entry("etc", "dir"), Entry("etc/target", data=b"old"),
         Entry("etc/link", "symlink", target="target")],
        [Entry("etc/link", data=b"new")],
    ])
    dest = tmp_path / "dest"
    unpack_image(tmp_path / "img" / "layout", dest)
    assert (dest / "etc" / "target").read_bytes() == b"old"
    assert not (dest / "etc" / "link").is_symlink()
    assert (dest / "etc" / "link").read_bytes() == b"new"


def test_dir_replaces_file_and_file_replaces_dir(tmp_path: Path) -> None:
    make_image(tmp_path / "img", [
        [Entry("x", data=b"file"), Entry("y", "dir"), Entry("y/inner", data=b"i")],
        [Entry("x", "dir"), Entry("x/child", data=b"c"), Entry("y", data=b"now a file")],
    ])
    dest = tmp_path / "dest"
    unpack_image(tmp_path / "img" / "layout", dest)
    assert (dest / "x" / "child").read_bytes() == b"c"
    assert (dest / "y").read_bytes() == b"now a file"


def test_unprivileged_apply_keeps_readonly_dirs_fillable(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    state = ApplyState(root, privileged=False)
    apply_layer(io.BytesIO(layer_tar([Entry("ro", "dir", mode=0o555),
                                      Entry("dev", "dir")])), state, "layer 1")
    apply_layer(io.BytesIO(layer_tar([Entry("ro/file", data=b"x"), Entry("ro/.wh.none")])),
                state, "layer 2")
    state.finish()
    assert (root / "ro" / "file").read_bytes() == b"x"
    assert stat.S_IMODE(os.stat(root / "ro").st_mode) == 0o555
    assert os.stat(root / "ro").st_mtime == EPOCH
    os.chmod(root / "ro", 0o755)  # let pytest clean up


def test_xattrs_are_applied(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.p", b"1")
    except OSError:
        pytest.skip("the test filesystem has no user xattrs")
    make_image(tmp_path / "img", [[Entry("f", data=b"x", xattrs={"user.k": b"\xff\x00v"})]])
    unpack_image(tmp_path / "img" / "layout", tmp_path / "dest")
    assert os.getxattr(tmp_path / "dest" / "f", "user.k") == b"\xff\x00v"


def test_docker_archive(tmp_path: Path) -> None:
    config_digest = docker_archive(
        tmp_path / "save.tar",
        [[Entry("etc", "dir"), Entry("etc/a", data=b"a"), Entry("etc/b", data=b"b")],
         [Entry("etc/.wh.a"), Entry("etc/c", data=b"c")]],
        ["docker.io/library/busybox:latest"])
    for ref in (None, "busybox", "busybox:latest", "docker.io/library/busybox:latest"):
        dest = tmp_path / f"out-{ref}"
        info = unpack_image(tmp_path / "save.tar", dest, ref=ref)
        assert sorted(os.listdir(dest / "etc")) == ["b", "c"]
        assert info.kind == "docker-archive" and info.manifest_digest is None
        assert info.config_digest == config_digest and info.labels == {"from": "docker"}
    with pytest.raises(BadInput, match=r"no image tagged 'alpine'.*busybox"):
        unpack_image(tmp_path / "save.tar", tmp_path / "x", ref="alpine")


def test_choosing_among_images(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    one = make_image(tmp_path / "1", [[Entry("one", data=b"1")]], ref="one", layout=layout)
    make_image(tmp_path / "2", [[Entry("two", data=b"2")]], ref="two", layout=layout)
    with pytest.raises(BadInput, match="holds 2 images") as err:
        unpack_image(layout, tmp_path / "x")
    assert "one, two" in err.value.hint
    with pytest.raises(BadInput, match="no image named 'three'"):
        unpack_image(layout, tmp_path / "x", ref="three")
    assert unpack_image(layout, tmp_path / "a", ref="two").ref == "two"
    assert os.listdir(tmp_path / "a") == ["two"]
    assert inspect_image(layout, ref=one.digest).manifest_digest == one.digest


def test_multi_platform_index(tmp_path: Path) -> None:
    img = make_image(tmp_path / "img", [[Entry("amd64-file", data=b"x")]], ref="multi")
    layout = tmp_path / "img" / "layout"
    nested = canonical_json({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(b"nope"),
             "size": 4, "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": img.digest,
             "size": img.manifest_size, "platform": {"architecture": "amd64", "os": "linux"}},
        ]})
    blob_path(layout, sha(nested)).write_bytes(nested)
    (layout / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha(nested),
         "size": len(nested), "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}))
    info = unpack_image(layout, tmp_path / "dest")
    assert info.manifest_digest == img.digest and (tmp_path / "dest" / "amd64-file").exists()
    with pytest.raises(BadInput, match=r"no linux/s390x image.*linux/amd64, linux/arm64"):
        inspect_image(layout, architecture="s390x")


def test_corrupt_blob_is_reported(tmp_path: Path) -> None:
    img = make_image(tmp_path / "img", [[Entry("f", data=b"content")]])
    layout = tmp_path / "img" / "layout"
    manifest = json.loads(blob_path(layout, img.digest).read_bytes())
    layer = blob_path(layout, manifest["layers"][0]["digest"])
    data = bytearray(layer.read_bytes())
    data[-9] ^= 0xFF  # inside the gzip trailer's CRC: decompression itself notices
    layer.write_bytes(bytes(data))
    with pytest.raises(BadInput, match="layer 1/1"):
        unpack_image(layout, tmp_path / "dest")
    # Same bytes, wrong name: the digest check catches what decompression cannot.
    layer.write_bytes(gzip.compress(layer_tar([Entry("f", data=b"evil")])))
    with pytest.raises(BadInput, match="does not match its digest"):
        unpack_image(layout, tmp_path / "dest2")


def test_diff_id_is_checked_where_no_digest_binds_the_layer(tmp_path: Path) -> None:
    # A docker archive names its layers by path: the config's diff_id is their only check.
    docker_archive(tmp_path / "save.tar", [[Entry("f", data=b"x")]], ["x:1"],
                   diff_ids=[sha(b"something else")])
    with pytest.raises(BadInput, match="diff_id"):
        unpack_image(tmp_path / "save.tar", tmp_path / "dest")
    # An OCI layer's blob digest (bound by the manifest) covers every byte already: a config
    # that lies about the uncompressed digest changes nothing that is unpacked, and hashing
    # every layer twice is what made upgrades slow on small devices.
    good = make_image(tmp_path / "a", [[Entry("f", data=b"x")]])
    manifest = json.loads(blob_path(tmp_path / "a" / "layout", good.digest).read_bytes())
    desc = manifest["layers"][0]
    blob = blob_path(tmp_path / "a" / "layout", desc["digest"])
    lying = LayerInfo(path=blob, diff_id=sha(b"something else"), digest=desc["digest"],
                      size=desc["size"], media_type=desc["mediaType"])
    write_image([lying], tmp_path / "b", ref="x", config=ImageConfig(created_epoch=EPOCH))
    unpack_image(tmp_path / "b", tmp_path / "dest2")
    assert (tmp_path / "dest2" / "f").read_bytes() == b"x"


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        unpack_image(tmp_path / "missing", tmp_path / "d")
    (tmp_path / "junk").write_bytes(b"this is not a tar archive at all" * 50)
    with pytest.raises(BadInput, match="not a readable tar archive") as err:
        unpack_image(tmp_path / "junk", tmp_path / "d")
    assert "oci-archive" in err.value.hint
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="without oci-layout"):
        unpack_image(tmp_path / "empty", tmp_path / "d")
    with tarfile.open(tmp_path / "other.tar", "w") as tf:
        tf.add(tmp_path / "junk", arcname="junk")
    with pytest.raises(BadInput, match="archive without"):
        unpack_image(tmp_path / "other.tar", tmp_path / "d")
    layout = tmp_path / "layout"
    make_image(tmp_path / "img", [[Entry("f")]], layout=layout)
    (layout / "index.json").write_text("{not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        unpack_image(layout, tmp_path / "d")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput, match="not a directory"):
        unpack_image(layout, tmp_path / "file")


def test_missing_blob(tmp_path: Path) -> None:
    img = make_image(tmp_path / "img", [[Entry("f")]], archive=tmp_path / "img.tar")
    blob_path(tmp_path / "img" / "layout", img.config_digest).unlink()
    with pytest.raises(BadInput, match="lacks blobs/sha256/"):
        unpack_image(tmp_path / "img" / "layout", tmp_path / "d")


def test_docker_style_names_in_an_oci_index(tmp_path: Path) -> None:
    # Newer `docker save` writes an OCI layout whose index names images the docker way.
    img = make_image(tmp_path / "img", [[Entry("f", data=b"x")]], ref="latest")
    layout = tmp_path / "img" / "layout"
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"][0]["annotations"]["io.containerd.image.name"] = (
        "docker.io/library/busybox:latest")
    (layout / "index.json").write_bytes(canonical_json(index))
    for ref in ("latest", "busybox", "busybox:latest", "docker.io/library/busybox:latest"):
        assert inspect_image(layout, ref=ref).manifest_digest == img.digest
    with pytest.raises(BadInput, match="no image named 'busybox:1'"):
        inspect_image(layout, ref="busybox:1")


@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_finish_never_changes_a_directory_outside_the_root(tmp_path: Path, link: str) -> None:
    # Layer 1 has directories a/ and a/sub (mode 0700); layer 2 turns a/ into a symlink that
    # points out of the root. The modes and times recorded for a/ and a/sub must not land on
    # the host's directory the link names.
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    os.chmod(outside / "sub", 0o755)
    os.utime(outside / "sub", (EPOCH + 12345, EPOCH + 12345))
    os.chmod(outside, 0o751)
    os.utime(outside, (EPOCH + 678, EPOCH + 678))
    before = {p: os.stat(p) for p in (outside, outside / "sub")}
    target = str(outside) if link == "absolute" else "../outside"
    root = tmp_path / "root"
    root.mkdir()
    state = ApplyState(root, privileged=False)  # records modes too, not only times
    apply_layer(io.BytesIO(layer_tar([Entry("a", "dir", mode=0o700),
                                      Entry("a/sub", "dir", mode=0o700),
                                      Entry("keep", "dir", mode=0o700)])), state, "layer 1")
    apply_layer(io.BytesIO(layer_tar([Entry("a", "symlink", target=target)])), state,
                "layer 2")
    state.finish()
    for path, st in before.items():
        now = os.stat(path)
        assert stat.S_IMODE(now.st_mode) == stat.S_IMODE(st.st_mode), path
        assert now.st_mtime_ns == st.st_mtime_ns, path
    assert os.readlink(root / "a") == target
    # directories that are still directories get their recorded mode and time
    assert stat.S_IMODE(os.stat(root / "keep").st_mode) == 0o700
    assert os.stat(root / "keep").st_mtime == EPOCH
