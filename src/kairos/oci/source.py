"""Find an image inside a base the factory was given: OCI layout, OCI archive, docker archive.

Reads only metadata (index, manifests, config) and says where each layer blob is; the layers
themselves are streamed by unpack.py. Every JSON blob is checked against its digest.
"""

from __future__ import annotations

import contextlib
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kairos.errors import BadInput
from kairos.oci.media import (
    ANNOTATION_REF_NAME,
    INDEX_FILE,
    INDEX_TYPES,
    MAX_JSON_BYTES,
    OCI_LAYOUT_FILE,
    Descriptor,
    digest_hex,
    is_digest,
    parse_json,
    sha256_digest,
)

CONTAINERD_NAME = "io.containerd.image.name"
DOCKER_MANIFEST = "manifest.json"
HINT_FORMATS = ("give an OCI layout directory, an OCI archive (skopeo copy ... oci-archive:FILE) "
                "or a docker archive (podman save / docker save)")


@dataclass(frozen=True)
class LayerRef:
    """One layer of the chosen image: where its blob is and what it must hash to."""

    member: str  # path inside the store
    diff_id: str  # sha256 of the uncompressed tar (from the config)
    digest: str | None  # sha256 of the blob as stored (None: same as diff_id, docker layer.tar)
    media_type: str


@dataclass
class ResolvedImage:
    kind: str  # oci-layout | oci-archive | docker-archive | docker-directory
    ref: str | None
    manifest_digest: str | None  # docker archives have no manifest blob
    config_digest: str
    config: dict[str, Any]
    layers: list[LayerRef] = field(default_factory=list)


class Store:
    """Named files of a directory or a tar archive, opened for (seekable) reading."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if source.is_dir():
            return
        if not source.is_file():
            raise BadInput(f"image source {source} does not exist", HINT_FORMATS)
        try:
            # "r:*" also reads a gzip'd archive (docker save | gzip), just more slowly.
            self._tar = tarfile.open(  # noqa: SIM115 (kept open for the Store's life)
                source, "r:*", encoding="utf-8", errors="surrogateescape")
            for member in self._tar.getmembers():
                self._members[_norm(member.name)] = member
        except (tarfile.TarError, EOFError, OSError) as exc:
            self.close()
            raise BadInput(f"{source} is not a readable tar archive ({exc})",
                           HINT_FORMATS) from None

    @property
    def is_dir(self) -> bool:
        return self._tar is None

    def has(self, name: str) -> bool:
        if self._tar is None:
            return (self.source / _safe(name, self.source)).is_file()
        member = self._members.get(_norm(name))
        return member is not None and (member.isfile() or member.issym() or member.islnk())

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        if self._tar is None:
            path = self.source / _safe(name, self.source)
            try:
                fh: IO[bytes] = open(path, "rb")  # noqa: SIM115 (closed below)
            except (FileNotFoundError, IsADirectoryError):
                raise BadInput(f"{self.source} lacks {name}",
                               "the image is incomplete; export it again") from None
        else:
            member = self._members.get(_norm(name))
            extracted = None
            if member is not None:
                try:
                    extracted = self._tar.extractfile(member)
                except (tarfile.TarError, KeyError):
                    extracted = None
            if extracted is None:
                raise BadInput(f"{self.source} lacks {name}",
                               "the archive is incomplete; export it again")
            fh = extracted
        try:
            yield fh
        finally:
            fh.close()

    def size(self, name: str) -> int | None:
        if self._tar is None:
            return (self.source / _safe(name, self.source)).stat().st_size
        member = self._members.get(_norm(name))
        return member.size if member is not None and member.isfile() else None

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            data = fh.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            raise BadInput(f"{name} in {self.source} is too large for image metadata",
                           "the image is damaged or not an image")
        return data

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _safe(name: str, source: Path) -> str:
    parts = name.split("/")
    if name.startswith("/") or ".." in parts:
        raise BadInput(f"{source} names a file outside itself: {name!r}",
                       "the image metadata is damaged or hostile; do not use it")
    return _norm(name)


def resolve(store: Store, ref: str | None, architecture: str = "amd64") -> ResolvedImage:
    """Pick the image `ref` (or the only one) in `store` and read its metadata."""
    if store.has(OCI_LAYOUT_FILE) and store.has(INDEX_FILE):
        return _resolve_oci(store, ref, architecture)
    if store.has(DOCKER_MANIFEST):
        return _resolve_docker(store, ref)
    what = "directory" if store.is_dir else "archive"
    raise BadInput(f"{store.source} is a {what} without oci-layout/index.json or manifest.json",
                   HINT_FORMATS)


def _blob_name(digest: str) -> str:
    return f"blobs/sha256/{digest_hex(digest)}"


def _read_blob(store: Store, desc: Descriptor, what: str) -> dict[str, Any]:
    data = store.read(_blob_name(desc.digest))
    if sha256_digest(data) != desc.digest:
        raise BadInput(f"{what} {desc.digest} in {store.source} does not match its digest",
                       "the image is corrupt; export or copy it again")
    return parse_json(data, f"{what} {desc.digest} in {store.source}")


def _resolve_oci(store: Store, ref: str | None, architecture: str) -> ResolvedImage:
    index = parse_json(store.read(INDEX_FILE), f"{INDEX_FILE} in {store.source}")
    entries = [Descriptor.from_json(e, f"{INDEX_FILE} manifests[{i}]")
               for i, e in enumerate(_list(index.get("manifests"), INDEX_FILE, store))]
    if not entries:
        raise BadInput(f"{store.source} holds no image (empty {INDEX_FILE})", HINT_FORMATS)
    desc = _pick_entry(entries, ref, store)
    name = ref or (desc.annotations or {}).get(ANNOTATION_REF_NAME)
    # A multi-platform image: the entry is an index of per-platform manifests.
    for _ in range(4):
        doc = _read_blob(store, desc, "manifest")
        is_index = (desc.media_type in INDEX_TYPES or doc.get("mediaType") in INDEX_TYPES
                    or ("manifests" in doc and "layers" not in doc))
        if not is_index:
            break
        subs = [Descriptor.from_json(e, f"index {desc.digest}")
                for e in _list(doc.get("manifests"), f"index {desc.digest}", store)]
        desc = _pick_platform(subs, architecture, store)
    else:
        raise BadInput(f"{store.source}: image indexes nest too deeply", HINT_FORMATS)
    manifest = doc
    config_desc = Descriptor.from_json(manifest.get("config"), f"manifest {desc.digest} config")
    config = _read_blob(store, config_desc, "config")
    layer_descs = [Descriptor.from_json(e, f"manifest {desc.digest} layers[{i}]")
                   for i, e in enumerate(_list(manifest.get("layers"), "manifest", store))]
    diff_ids = _diff_ids(config, store)
    if len(diff_ids) != len(layer_descs):
        raise BadInput(f"{store.source}: manifest lists {len(layer_descs)} layers but the config "
                       f"has {len(diff_ids)} diff_ids", "the image is corrupt; export it again")
    layers = [LayerRef(_blob_name(d.digest), diff, d.digest, d.media_type)
              for d, diff in zip(layer_descs, diff_ids, strict=True)]
    kind = "oci-layout" if store.is_dir else "oci-archive"
    return ResolvedImage(kind, name, desc.digest, config_desc.digest, config, layers)


def _pick_entry(entries: list[Descriptor], ref: str | None, store: Store) -> Descriptor:
    if ref is None:
        if len(entries) == 1:
            return entries[0]
        raise BadInput(f"{store.source} holds {len(entries)} images; say which one",
                       f"pass a ref, one of: {', '.join(_names(entries))}")
    for desc in entries:
        ann = desc.annotations or {}
        if ref in (ann.get(ANNOTATION_REF_NAME), ann.get(CONTAINERD_NAME), desc.digest):
            return desc
    # Docker's own archives name images the docker way: accept 'busybox' for
    # 'docker.io/library/busybox:latest'.
    wanted = _docker_names(_with_tag(ref))
    for desc in entries:
        name = (desc.annotations or {}).get(CONTAINERD_NAME)
        if name and _docker_names(_with_tag(name)) & wanted:
            return desc
    raise BadInput(f"{store.source} has no image named {ref!r}",
                   f"it holds: {', '.join(_names(entries)) or 'images without names'}")


def _names(entries: list[Descriptor]) -> list[str]:
    return [(d.annotations or {}).get(ANNOTATION_REF_NAME) or d.digest for d in entries]


def _pick_platform(subs: list[Descriptor], architecture: str, store: Store) -> Descriptor:
    for desc in subs:
        plat = desc.platform or {}
        if plat.get("os", "linux") == "linux" and plat.get("architecture") == architecture:
            return desc
    if len(subs) == 1 and not subs[0].platform:
        return subs[0]
    plats = [d.platform or {} for d in subs]
    have = sorted({f"{p.get('os', '?')}/{p.get('architecture', '?')}" for p in plats})
    raise BadInput(f"{store.source} has no linux/{architecture} image",
                   f"it has: {', '.join(have) or 'nothing'}")


def _diff_ids(config: dict[str, Any], store: Store) -> list[str]:
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and is_digest(d)
                                                 for d in diff_ids):
        raise BadInput(f"{store.source}: the image config has no valid rootfs.diff_ids",
                       "the image is corrupt or not a container image")
    return list(diff_ids)


def _list(value: object, where: str, store: Store) -> list[Any]:
    if not isinstance(value, list):
        raise BadInput(f"{store.source}: {where} has no list where one is required",
                       "the image metadata is damaged; export the image again")
    return value


def _resolve_docker(store: Store, ref: str | None) -> ResolvedImage:
    doc: Any = _parse_any(store.read(DOCKER_MANIFEST), store)
    entries = [e for e in doc if isinstance(e, dict)] if isinstance(doc, list) else []
    if not entries:
        raise BadInput(f"{DOCKER_MANIFEST} in {store.source} lists no image", HINT_FORMATS)
    entry = _pick_docker_entry(entries, ref, store)
    config_name = entry.get("Config")
    layer_names = entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list) \
            or not all(isinstance(n, str) for n in layer_names):
        raise BadInput(f"{DOCKER_MANIFEST} in {store.source} lacks Config or Layers",
                       "the archive is damaged; save the image again")
    config_bytes = store.read(_safe(config_name, store.source))
    config = parse_json(config_bytes, f"config {config_name} in {store.source}")
    diff_ids = _diff_ids(config, store)
    if len(diff_ids) != len(layer_names):
        raise BadInput(f"{store.source}: {DOCKER_MANIFEST} lists {len(layer_names)} layers but "
                       f"the config has {len(diff_ids)} diff_ids", "save the image again")
    layers = [LayerRef(_safe(name, store.source), diff, None, "")
              for name, diff in zip(layer_names, diff_ids, strict=True)]
    tags = entry.get("RepoTags")
    first = tags[0] if isinstance(tags, list) and tags else None
    name = ref or (first if isinstance(first, str) else None)
    kind = "docker-directory" if store.is_dir else "docker-archive"
    return ResolvedImage(kind, name, None, sha256_digest(config_bytes), config, layers)


def _parse_any(data: bytes, store: Store) -> Any:
    import json

    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadInput(f"{DOCKER_MANIFEST} in {store.source} is not valid JSON",
                       "the archive is damaged; save the image again") from None


def _docker_names(tag: str) -> set[str]:
    """The spellings a user may give for a RepoTags entry (short, docker.io, localhost)."""
    names = {tag}
    for prefix in ("docker.io/library/", "docker.io/", "localhost/"):
        if tag.startswith(prefix):
            names.add(tag[len(prefix):])
    return names


def _with_tag(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


def _pick_docker_entry(entries: list[dict[str, Any]], ref: str | None,
                       store: Store) -> dict[str, Any]:
    if ref is None:
        if len(entries) == 1:
            return entries[0]
        tags = [t for e in entries for t in (e.get("RepoTags") or []) if isinstance(t, str)]
        raise BadInput(f"{store.source} holds {len(entries)} images; say which one",
                       f"pass a ref, one of: {', '.join(tags) or '(untagged)'}")
    wanted = _docker_names(_with_tag(ref))
    for entry in entries:
        for tag in entry.get("RepoTags") or []:
            if isinstance(tag, str) and _docker_names(_with_tag(tag)) & wanted:
                return entry
    tags = [t for e in entries for t in (e.get("RepoTags") or []) if isinstance(t, str)]
    raise BadInput(f"{store.source} has no image tagged {ref!r}",
                   f"it holds: {', '.join(tags) or '(untagged images)'}")
