"""OCI vocabulary shared by writer and readers: media types, digests, canonical JSON, refs."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from kairos.errors import BadInput

OCI_LAYOUT_FILE = "oci-layout"
OCI_LAYOUT_VERSION = "1.0.0"
INDEX_FILE = "index.json"

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
# Docker's manifest list type, found in layouts copied from a docker registry.
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

INDEX_TYPES = frozenset({MT_INDEX, MT_DOCKER_LIST})

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"

# Manifests, indexes and configs are small; a bigger one is a broken or hostile input.
MAX_JSON_BYTES = 16 * 2**20
CHUNK = 1 << 20

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# The OCI image-layout grammar for org.opencontainers.image.ref.name.
_REF_RE = re.compile(
    r"^[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*(?:/[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*)*$"
)


class Reader(Protocol):
    """Anything with read(): files, decompressors, hashing wrappers, pipes."""

    def read(self, n: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a manifest or index points at."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] | None = None
    platform: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type, "digest": self.digest, "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        return out

    @classmethod
    def from_json(cls, obj: object, where: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise BadInput(f"{where}: a descriptor is not a JSON object",
                           "the image metadata is damaged; export the image again")
        digest = obj.get("digest")
        size = obj.get("size")
        media_type = obj.get("mediaType", "")
        if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
            raise BadInput(f"{where}: unsupported or malformed digest {digest!r}",
                           "only sha256 digests are supported")
        if not isinstance(size, int) or size < 0:
            raise BadInput(f"{where}: descriptor {digest} has no valid size",
                           "the image metadata is damaged; export the image again")
        annotations = obj.get("annotations")
        platform = obj.get("platform")
        return cls(
            media_type=media_type if isinstance(media_type, str) else "",
            digest=digest,
            size=size,
            annotations=(
                {str(k): str(v) for k, v in annotations.items()}
                if isinstance(annotations, dict) else None
            ),
            platform=(
                {str(k): str(v) for k, v in platform.items() if isinstance(v, str)}
                if isinstance(platform, dict) else None
            ),
        )


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no whitespace: the same object always gives the same bytes (and digest)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_hex(digest: str) -> str:
    """The hex part of a sha256 digest, refusing anything that could be a path trick."""
    if not _DIGEST_RE.match(digest):
        raise BadInput(f"unsupported or malformed digest {digest!r}",
                       "only sha256 digests are supported")
    return digest.split(":", 1)[1]


def is_digest(value: str) -> bool:
    return bool(_DIGEST_RE.match(value))


def check_ref(ref: str) -> str:
    """Validate an image-layout ref name (e.g. 'v1.2', 'kairos/debian:v1')."""
    if not _REF_RE.match(ref):
        raise BadInput(
            f"invalid image reference name {ref!r}",
            "use letters, digits and . _ - : @ + separators, e.g. 'kairos/debian:v1.0'",
        )
    return ref


def rfc3339(epoch: int) -> str:
    """SOURCE_DATE_EPOCH as the RFC 3339 UTC timestamp OCI configs carry."""
    when = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_json(data: bytes, where: str) -> dict[str, Any]:
    """Parse a JSON object from image metadata into a one-line BadInput on failure."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{where} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})",
                       "the image metadata is damaged; export the image again") from None
    if not isinstance(obj, dict):
        raise BadInput(f"{where} is not a JSON object",
                       "the image metadata is damaged; export the image again")
    return obj
