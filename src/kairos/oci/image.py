"""Write an OCI image layout (and optionally a reproducible OCI archive) from layer blobs."""

from __future__ import annotations

import errno
import io
import os
import shutil
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kairos.errors import BadInput
from kairos.oci.layer import LayerInfo
from kairos.oci.media import (
    ANNOTATION_CREATED,
    ANNOTATION_REF_NAME,
    CHUNK,
    INDEX_FILE,
    MT_CONFIG,
    MT_INDEX,
    MT_MANIFEST,
    OCI_LAYOUT_FILE,
    OCI_LAYOUT_VERSION,
    Descriptor,
    canonical_json,
    check_ref,
    digest_hex,
    parse_json,
    rfc3339,
    sha256_digest,
)
from kairos.ui import Progress


@dataclass(kw_only=True)
class ImageConfig:
    """What goes into the image config besides the layers' diff_ids."""

    created_epoch: int  # SOURCE_DATE_EPOCH; also the archive's file times
    labels: dict[str, str] = field(default_factory=dict)
    env: list[str] = field(default_factory=list)
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    architecture: str = "amd64"
    os: str = "linux"
    created_by: str = "kairos build"


@dataclass(frozen=True)
class ImageRef:
    """Where an image was written and the digest that names it."""

    layout: Path
    ref: str
    digest: str  # of the manifest
    config_digest: str
    manifest_size: int
    archive: Path | None = None

    @property
    def oci_transport(self) -> str:
        """The reference skopeo and podman understand for the layout directory."""
        return f"oci:{self.layout}:{self.ref}"


def blob_path(layout_dir: Path, digest: str) -> Path:
    return layout_dir / "blobs" / "sha256" / digest_hex(digest)


def config_json(config: ImageConfig, diff_ids: list[str]) -> dict[str, Any]:
    """The OCI image config document (application/vnd.oci.image.config.v1+json)."""
    created = rfc3339(config.created_epoch)
    runtime: dict[str, Any] = {}
    if config.env:
        runtime["Env"] = list(config.env)
    if config.entrypoint is not None:
        runtime["Entrypoint"] = list(config.entrypoint)
    if config.cmd is not None:
        runtime["Cmd"] = list(config.cmd)
    if config.labels:
        runtime["Labels"] = dict(config.labels)
    return {
        "architecture": config.architecture,
        "os": config.os,
        "created": created,
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created": created, "created_by": config.created_by} for _ in diff_ids],
    }


def manifest_json(config: Descriptor, layers: Iterable[Descriptor], created: str) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
        "annotations": {ANNOTATION_CREATED: created},
    }


def write_image(
    layers: list[LayerInfo],
    layout_dir: Path,
    *,
    ref: str,
    config: ImageConfig,
    archive: Path | None = None,
    annotations: dict[str, str] | None = None,
) -> ImageRef:
    """Add an image made of `layers` to the OCI layout at `layout_dir` under the name `ref`.

    An existing layout keeps its other images; an image already named `ref` is replaced.
    With `archive`, also write a reproducible OCI archive holding only this image.
    `annotations` go on the image's entry in the index, beside its ref name (containerd
    reads `io.containerd.image.name` there when importing).
    """
    check_ref(ref)
    if not layers:
        raise BadInput("an image needs at least one layer", "pass the layer written by write_layer")
    if config.created_epoch < 0:
        raise BadInput(f"SOURCE_DATE_EPOCH must not be negative (got {config.created_epoch})",
                       "use seconds since 1970-01-01 UTC")
    _init_layout(layout_dir)
    layer_descs = []
    for layer in layers:
        _put_blob_file(layout_dir, layer)
        layer_descs.append(Descriptor(layer.media_type, layer.digest, layer.size))
    created = rfc3339(config.created_epoch)
    cfg_bytes = canonical_json(config_json(config, [layer.diff_id for layer in layers]))
    cfg_desc = Descriptor(MT_CONFIG, sha256_digest(cfg_bytes), len(cfg_bytes))
    _put_blob_bytes(layout_dir, cfg_bytes)
    man_bytes = canonical_json(manifest_json(cfg_desc, layer_descs, created))
    man_desc = Descriptor(
        MT_MANIFEST, sha256_digest(man_bytes), len(man_bytes),
        annotations={**(annotations or {}), ANNOTATION_REF_NAME: ref},
        platform={"architecture": config.architecture, "os": config.os},
    )
    _put_blob_bytes(layout_dir, man_bytes)
    _update_index(layout_dir, man_desc, ref)
    if archive is not None:
        blobs = [man_desc.digest, cfg_desc.digest, *(d.digest for d in layer_descs)]
        write_archive(layout_dir, man_desc, blobs, archive, mtime=config.created_epoch)
    return ImageRef(layout=layout_dir, ref=ref, digest=man_desc.digest,
                    config_digest=cfg_desc.digest, manifest_size=len(man_bytes), archive=archive)


def index_json(manifests: list[Descriptor]) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [m.to_json() for m in manifests],
    }


def _init_layout(layout_dir: Path) -> None:
    marker = layout_dir / OCI_LAYOUT_FILE
    if layout_dir.exists() and not layout_dir.is_dir():
        raise BadInput(f"{layout_dir} exists and is not a directory",
                       "choose a directory for the OCI layout")
    if layout_dir.is_dir() and any(layout_dir.iterdir()) and not marker.is_file():
        raise BadInput(f"{layout_dir} is not empty and not an OCI layout",
                       "choose an empty or new directory for the OCI layout")
    (layout_dir / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        _atomic_write(marker, canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION}))


def _update_index(layout_dir: Path, desc: Descriptor, ref: str) -> None:
    path = layout_dir / INDEX_FILE
    kept: list[Descriptor] = []
    if path.is_file():
        old = parse_json(path.read_bytes(), str(path))
        for i, entry in enumerate(old.get("manifests") or []):
            d = Descriptor.from_json(entry, f"{path} manifests[{i}]")
            if (d.annotations or {}).get(ANNOTATION_REF_NAME) != ref:
                kept.append(d)
    _atomic_write(path, canonical_json(index_json([*kept, desc])))


def _put_blob_bytes(layout_dir: Path, data: bytes) -> None:
    target = blob_path(layout_dir, sha256_digest(data))
    if not target.is_file():
        _atomic_write(target, data)


def _put_blob_file(layout_dir: Path, layer: LayerInfo) -> None:
    """Hard-link the layer into blobs/ (copy across filesystems); blobs are immutable."""
    target = blob_path(layout_dir, layer.digest)
    try:
        size = layer.path.stat().st_size
    except FileNotFoundError:
        raise BadInput(f"layer blob {layer.path} does not exist",
                       "write it with write_layer first") from None
    if size != layer.size:
        raise BadInput(f"layer blob {layer.path} has {size} bytes, expected {layer.size}",
                       "the layer changed after it was written; write it again")
    if target.is_file() and target.stat().st_size == size:
        return
    target.unlink(missing_ok=True)
    try:
        os.link(layer.path, target)
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
    part = target.with_name(target.name + ".part")
    try:
        shutil.copyfile(layer.path, part)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


def write_archive(
    layout_dir: Path, manifest: Descriptor, blobs: list[str], archive: Path, *, mtime: int
) -> None:
    """A reproducible OCI archive (tar of a layout) holding one image.

    Fixed entry order, root-owned entries with fixed modes and `mtime` for every entry, so
    the same image always gives the same archive bytes.
    """
    entries: list[tuple[str, bytes | Path | None]] = [
        ("blobs/", None),
        ("blobs/sha256/", None),
        *((f"blobs/sha256/{digest_hex(d)}", blob_path(layout_dir, d)) for d in sorted(set(blobs))),
        (INDEX_FILE, canonical_json(index_json([manifest]))),
        (OCI_LAYOUT_FILE, canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION})),
    ]
    part = archive.with_name(archive.name + ".part")
    progress = Progress(f"archive {archive.name}")
    try:
        with open(part, "wb") as fh, tarfile.open(
            fileobj=fh, mode="w|", format=tarfile.PAX_FORMAT, copybufsize=CHUNK  # type: ignore[call-overload]
        ) as tf:
            for name, content in entries:
                info = tarfile.TarInfo(name)
                info.mtime = mtime
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if content is None:
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tf.addfile(info)
                elif isinstance(content, bytes):
                    info.mode, info.size = 0o644, len(content)
                    tf.addfile(info, io.BytesIO(content))
                else:
                    info.mode, info.size = 0o644, content.stat().st_size
                    with open(content, "rb") as src:
                        tf.addfile(info, src)
                    progress.advance(info.size)
        os.replace(part, archive)
    finally:
        part.unlink(missing_ok=True)
    progress.finish()


def read_index(layout_dir: Path) -> list[Descriptor]:
    """The manifests an OCI layout lists (for callers that want to see what is there)."""
    path = layout_dir / INDEX_FILE
    if not path.is_file():
        raise BadInput(f"{layout_dir} has no {INDEX_FILE}", "is it an OCI layout directory?")
    doc = parse_json(path.read_bytes(), str(path))
    return [Descriptor.from_json(e, f"{path} manifests[{i}]")
            for i, e in enumerate(doc.get("manifests") or [])]


__all__ = ["ImageConfig", "ImageRef", "blob_path", "read_index", "write_archive", "write_image"]
