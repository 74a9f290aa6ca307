"""write_image: layout structure and JSON shapes, digests, refs, reproducible archives."""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from pathlib import Path

import jsonschema
import pytest

from kairos.errors import BadInput
from kairos.oci.image import ImageConfig, blob_path, read_index, write_image
from kairos.oci.layer import write_layer
from tests.unit.oci.ocitest_helpers import (
    CONFIG_SCHEMA,
    EPOCH,
    INDEX_SCHEMA,
    LAYOUT_SCHEMA,
    MANIFEST_SCHEMA,
    Entry,
    layer_blob,
    layer_tar,
    make_image,
)


def load(path: Path) -> dict:
    return json.loads(path.read_bytes())


def blob(layout: Path, digest: str) -> bytes:
    data = blob_path(layout, digest).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def build(tmp_path: Path, **kw) -> tuple[Path, object]:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "kairos-release").write_text('KAIROS_ID="kairos"\n')
    layer = write_layer(tree, tmp_path / "layer.tar.gz", mtime=EPOCH)
    config = ImageConfig(created_epoch=EPOCH, labels={"io.kairos.flavor": "debian"},
                         env=["PATH=/usr/sbin:/usr/bin"], cmd=["/sbin/init"])
    layout = tmp_path / "layout"
    return layout, write_image([layer], layout, ref="kairos/debian:v1", config=config, **kw)


def test_layout_structure_and_shapes(tmp_path: Path) -> None:
    layout, ref = build(tmp_path)
    jsonschema.validate(load(layout / "oci-layout"), LAYOUT_SCHEMA)
    index = load(layout / "index.json")
    jsonschema.validate(index, INDEX_SCHEMA)
    assert len(index["manifests"]) == 1
    entry = index["manifests"][0]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "kairos/debian:v1"
    assert entry["digest"] == ref.digest
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    manifest_bytes = blob(layout, ref.digest)
    assert entry["size"] == len(manifest_bytes) == ref.manifest_size
    manifest = json.loads(manifest_bytes)
    jsonschema.validate(manifest, MANIFEST_SCHEMA)
    config_bytes = blob(layout, manifest["config"]["digest"])
    assert manifest["config"]["size"] == len(config_bytes)
    assert manifest["config"]["digest"] == ref.config_digest
    config = json.loads(config_bytes)
    jsonschema.validate(config, CONFIG_SCHEMA)
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert config["config"]["Labels"] == {"io.kairos.flavor": "debian"}
    assert config["config"]["Env"] == ["PATH=/usr/sbin:/usr/bin"]
    assert config["config"]["Cmd"] == ["/sbin/init"]
    assert len(config["history"]) == len(manifest["layers"]) == 1
    layer = manifest["layers"][0]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert layer["size"] == len(blob(layout, layer["digest"]))
    tar = gzip.decompress(blob(layout, layer["digest"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(tar).hexdigest()]
    # Only the blobs the image needs, no temporary files left behind.
    blobs = sorted(p.name for p in (layout / "blobs" / "sha256").iterdir())
    assert blobs == sorted(d[7:] for d in (ref.digest, ref.config_digest, layer["digest"]))
    assert not list(layout.rglob("*.part"))


def test_same_input_same_digest(tmp_path: Path) -> None:
    _, a = build(tmp_path / "a")
    _, b = build(tmp_path / "b")
    assert a.digest == b.digest and a.config_digest == b.config_digest


def test_refs_add_and_replace(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    first = make_image(tmp_path / "1", [[Entry("a", data=b"1")]], ref="one", layout=layout)
    second = make_image(tmp_path / "2", [[Entry("a", data=b"2")]], ref="two", layout=layout)
    again = make_image(tmp_path / "3", [[Entry("a", data=b"3")]], ref="one", layout=layout)
    names = {(d.annotations or {})["org.opencontainers.image.ref.name"]: d.digest
             for d in read_index(layout)}
    assert names == {"one": again.digest, "two": second.digest}
    assert first.digest != again.digest
    jsonschema.validate(load(layout / "index.json"), INDEX_SCHEMA)


@pytest.mark.parametrize("ref", ["", "UPPER lower", "a//b", "-lead", "tag:", "x/../y"])
def test_bad_ref_refused(tmp_path: Path, ref: str) -> None:
    info = layer_blob(tmp_path, layer_tar([Entry("a")]))
    with pytest.raises(BadInput, match="reference"):
        write_image([info], tmp_path / "layout", ref=ref,
                    config=ImageConfig(created_epoch=EPOCH))


@pytest.mark.parametrize("ref", ["latest", "v1.0", "kairos/debian:v1.2.3-k3s", "a--b", "x@y+z"])
def test_good_refs(tmp_path: Path, ref: str) -> None:
    info = layer_blob(tmp_path, layer_tar([Entry("a")]))
    out = write_image([info], tmp_path / "layout", ref=ref,
                      config=ImageConfig(created_epoch=EPOCH))
    assert out.oci_transport == f"oci:{tmp_path / 'layout'}:{ref}"


def test_refuses_foreign_directory_and_bad_layers(tmp_path: Path) -> None:
    info = layer_blob(tmp_path, layer_tar([Entry("a")]))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    cfg = ImageConfig(created_epoch=EPOCH)
    with pytest.raises(BadInput, match="not an OCI layout"):
        write_image([info], tmp_path / "busy", ref="x", config=cfg)
    with pytest.raises(BadInput, match="at least one layer"):
        write_image([], tmp_path / "layout", ref="x", config=cfg)
    info.path.write_bytes(b"changed")
    with pytest.raises(BadInput, match="expected"):
        write_image([info], tmp_path / "layout", ref="x", config=cfg)


def test_archive_is_reproducible_and_complete(tmp_path: Path) -> None:
    _, a = build(tmp_path / "a", archive=tmp_path / "a.tar")
    build(tmp_path / "b", archive=tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tf:
        ms = tf.getmembers()
        names = [m.name for m in ms]
        index = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
    assert names[:2] == ["blobs", "blobs/sha256"]
    assert names[-2:] == ["index.json", "oci-layout"]
    assert len(names) == 2 + 3 + 2
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == EPOCH and not m.uname for m in ms)
    jsonschema.validate(index, INDEX_SCHEMA)
    assert [m["digest"] for m in index["manifests"]] == [a.digest]


def test_archive_holds_only_its_image(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    make_image(tmp_path / "1", [[Entry("a", data=b"other")]], ref="other", layout=layout)
    mine = make_image(tmp_path / "2", [[Entry("a", data=b"mine")]], ref="mine", layout=layout,
                      archive=tmp_path / "mine.tar")
    with tarfile.open(tmp_path / "mine.tar") as tf:
        blobs = [m.name for m in tf.getmembers() if m.name.startswith("blobs/sha256/")]
    assert len(blobs) == 3 and f"blobs/sha256/{mine.digest[7:]}" in blobs
