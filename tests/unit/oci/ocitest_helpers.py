"""Helpers for the OCI tests: hand-made layer tars, layouts and docker archives, JSON shapes."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path

from kairos.oci.image import ImageConfig, ImageRef, write_image
from kairos.oci.layer import LayerInfo
from kairos.oci.media import MT_LAYER_GZIP, MT_LAYER_TAR

EPOCH = 1_700_000_000
LATER = EPOCH + 86_400
EARLIER = EPOCH - 86_400


@dataclass
class Entry:
    """One entry of a hand-made layer tar."""

    name: str
    kind: str = "file"  # file | dir | symlink | hardlink | fifo
    data: bytes = b""
    target: str = ""
    mode: int = 0o644
    xattrs: dict[str, bytes] | None = None


def layer_tar(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mtime = EPOCH
            info.mode = e.mode
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = e.mode if e.mode != 0o644 else 0o755
            elif e.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, e.target
            elif e.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, e.target
            elif e.kind == "fifo":
                info.type = tarfile.FIFOTYPE
            else:
                info.size = len(e.data)
            if e.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                                    for k, v in e.xattrs.items()}
            tf.addfile(info, io.BytesIO(e.data) if e.kind == "file" else None)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_blob(tmp: Path, tar: bytes, *, compress: bool = True, name: str = "l") -> LayerInfo:
    blob = gzip.compress(tar, mtime=0) if compress else tar
    path = tmp / f"{name}-{sha(blob)[7:19]}.blob"
    path.write_bytes(blob)
    return LayerInfo(path=path, diff_id=sha(tar), digest=sha(blob), size=len(blob),
                     media_type=MT_LAYER_GZIP if compress else MT_LAYER_TAR)


def make_image(tmp: Path, layers: list[list[Entry]], *, ref: str = "test:v1",
               layout: Path | None = None, archive: Path | None = None,
               labels: dict[str, str] | None = None) -> ImageRef:
    tmp.mkdir(parents=True, exist_ok=True)
    infos = [layer_blob(tmp, layer_tar(entries), name=f"l{i}")
             for i, entries in enumerate(layers)]
    return write_image(infos, layout or tmp / "layout", ref=ref, archive=archive,
                       config=ImageConfig(created_epoch=EPOCH, labels=labels or {}))


def docker_archive(path: Path, layers: list[list[Entry]], tags: list[str],
                   diff_ids: list[str] | None = None) -> str:
    """A `docker save`-style archive: manifest.json, <id>.json config, <n>/layer.tar (the
    config's diff_ids those of the tars unless given)."""
    tars = [layer_tar(entries) for entries in layers]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"from": "docker"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids or [sha(t) for t in tars]},
    }).encode()
    config_name = sha(config)[7:] + ".json"
    manifest = [{"Config": config_name, "RepoTags": tags,
                 "Layers": [f"{i}/layer.tar" for i in range(len(tars))]}]
    with tarfile.open(path, "w") as tf:
        files = {config_name: config, "manifest.json": json.dumps(manifest).encode()}
        files.update({f"{i}/layer.tar": t for i, t in enumerate(tars)})
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return sha(config)


# Shapes of the OCI documents (image-spec: image-layout, image-index, manifest, config),
# written down for the tests: required fields and their types.
_DIGEST = {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}
_DESCRIPTOR = {
    "type": "object",
    "required": ["mediaType", "digest", "size"],
    "properties": {
        "mediaType": {"type": "string", "pattern": "^[a-z]+/[a-zA-Z0-9.+-]+$"},
        "digest": _DIGEST,
        "size": {"type": "integer", "minimum": 0},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "platform": {
            "type": "object", "required": ["architecture", "os"],
            "properties": {"architecture": {"type": "string"}, "os": {"type": "string"}},
        },
    },
}
LAYOUT_SCHEMA = {
    "type": "object", "required": ["imageLayoutVersion"],
    "properties": {"imageLayoutVersion": {"const": "1.0.0"}},
}
INDEX_SCHEMA = {
    "type": "object", "required": ["schemaVersion", "manifests"],
    "properties": {
        "schemaVersion": {"const": 2},
        "mediaType": {"const": "application/vnd.oci.image.index.v1+json"},
        "manifests": {"type": "array", "items": _DESCRIPTOR},
    },
}
MANIFEST_SCHEMA = {
    "type": "object", "required": ["schemaVersion", "mediaType", "config", "layers"],
    "properties": {
        "schemaVersion": {"const": 2},
        "mediaType": {"const": "application/vnd.oci.image.manifest.v1+json"},
        "config": {**_DESCRIPTOR, "properties": {
            **_DESCRIPTOR["properties"],
            "mediaType": {"const": "application/vnd.oci.image.config.v1+json"}}},
        "layers": {"type": "array", "minItems": 1, "items": _DESCRIPTOR},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
CONFIG_SCHEMA = {
    "type": "object", "required": ["architecture", "os", "rootfs"],
    "properties": {
        "created": {"type": "string",
                    "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$"},
        "architecture": {"type": "string"},
        "os": {"type": "string"},
        "config": {
            "type": "object",
            "properties": {
                "Env": {"type": "array", "items": {"type": "string", "pattern": "^[^=]+="}},
                "Cmd": {"type": "array", "items": {"type": "string"}},
                "Entrypoint": {"type": "array", "items": {"type": "string"}},
                "Labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "rootfs": {
            "type": "object", "required": ["type", "diff_ids"],
            "properties": {"type": {"const": "layers"},
                           "diff_ids": {"type": "array", "items": _DIGEST}},
        },
        "history": {"type": "array", "items": {
            "type": "object",
            "properties": {"created": {"type": "string"}, "created_by": {"type": "string"},
                           "empty_layer": {"type": "boolean"}},
        }},
    },
}


def make_tree(root: Path) -> Path:
    """A small rootfs with the awkward cases: links, fifo, setuid, old and new mtimes."""
    (root / "etc").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("kairos\n")
    (root / "etc" / "os-release").write_text("ID=debian\n")
    os.link(root / "etc" / "os-release", root / "usr" / "os-release-hard")
    (root / "usr" / "bin" / "su").write_bytes(b"\x7fELF fake")
    os.chmod(root / "usr" / "bin" / "su", 0o4755)
    os.symlink("usr/bin", root / "bin")
    os.symlink("../etc/hostname", root / "usr" / "hostname-link")
    os.mkfifo(root / "etc" / "initctl")
    (root / "big").write_bytes(random.Random(7).randbytes(3 * 2**20 + 17))
    (root / "a-dir").mkdir()
    (root / "a-dir" / "Z").write_text("upper")
    (root / "a-dir" / "a").write_text("lower")
    (root / "ünïcode name").write_text("x")
    long_dir = root / ("d" * 90) / ("e" * 90)
    long_dir.mkdir(parents=True)
    (long_dir / "file-with-a-long-path").write_text("long")
    os.utime(root / "etc" / "hostname", (LATER, LATER))
    os.utime(root / "etc" / "os-release", (EARLIER, EARLIER))
    return root
