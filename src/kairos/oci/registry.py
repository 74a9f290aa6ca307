"""The OCI distribution API for the device, on the standard library.

RegistryClient pulls manifests (OCI and Docker v2, single or multi-platform), streams blobs
into a BlobCache verifying size and digest as they arrive, resumes an interrupted blob with a
Range request, lists tags, and reads and pushes the small artifacts of signatures.
write_layout() turns a pulled cache into an OCI layout. Talking HTTP(S) to the host
(schemes, auth, redirects, error lines) is kairos.oci.transport's job; this module builds
on its RegistrySession.

Why our own client and not skopeo: the agent runs on the image's system Python, skopeo (and
its Go runtime) would add ~30 MB to every device image, and neither skopeo nor a library
keeps partial blobs across runs for a Range resume.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from kairos.errors import BadInput, KairosError
from kairos.oci.blobcache import BlobCache
from kairos.oci.media import (
    ANNOTATION_REF_NAME,
    CHUNK,
    INDEX_FILE,
    INDEX_TYPES,
    MAX_JSON_BYTES,
    MT_INDEX,
    MT_MANIFEST,
    OCI_LAYOUT_FILE,
    OCI_LAYOUT_VERSION,
    Descriptor,
    canonical_json,
    check_ref,
    is_digest,
    parse_json,
    sha256_digest,
)
from kairos.oci.platform import check_config_platform, parse_platform, pick_platform
from kairos.oci.reference import Reference
from kairos.oci.transport import RegistrySession, Response, error_code, error_detail
from kairos.safefs import write_file_atomic
from kairos.ui import Progress

log = logging.getLogger("kairos.oci.registry")

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                     "application/vnd.docker.distribution.manifest.v1+prettyjws")
MANIFEST_TYPES = frozenset({MT_MANIFEST, MT_DOCKER_MANIFEST})
ACCEPT = ", ".join([MT_MANIFEST, MT_INDEX, MT_DOCKER_MANIFEST, MT_DOCKER_LIST])
DEFAULT_PLATFORM = "linux/amd64"
MAX_TAG_PAGES = 1000
PROGRESS_MIN_BYTES = 1 << 20  # configs and tiny layers need no progress line
HINT_CORRUPT = "the registry or the network corrupted it; run again, and push the image again " \
               "if it persists"

_LINK_RE = re.compile(r'<([^>]*)>\s*;[^,]*?rel="?next"?')
_RANGE_RE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")


# ---------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Manifest:
    """The image manifest chosen for our platform, verified against its digest."""

    ref: Reference
    digest: str
    media_type: str
    raw: bytes
    config: Descriptor
    layers: list[Descriptor]
    index_digest: str | None = None  # set when `ref` named a multi-platform index
    platforms: list[str] = field(default_factory=list)  # what that index offered


@dataclass(frozen=True)
class BlobResult:
    digest: str
    path: Path
    size: int
    downloaded: int  # bytes that came over the network in this call (0: cache hit)
    cached: bool
    resumed_from: int = 0  # bytes of an earlier partial download that were kept


@dataclass(frozen=True)
class PullResult:
    manifest: Manifest
    config: dict[str, Any]
    config_blob: BlobResult
    layers: list[BlobResult]

    @property
    def downloaded(self) -> int:
        return self.config_blob.downloaded + sum(b.downloaded for b in self.layers)

    @property
    def layer_bytes_downloaded(self) -> int:
        return sum(b.downloaded for b in self.layers)

    @property
    def digests(self) -> set[str]:
        """Every blob of the image in the cache: the keep-set for BlobCache.prune()."""
        return {self.manifest.digest, self.config_blob.digest, *(b.digest for b in self.layers)}


class _Interrupted(Exception):
    """The connection died mid-blob: the partial file is kept for a Range resume."""


# ---------------------------------------------------------------------------- client

class RegistryClient(RegistrySession):
    """One client per command run; it remembers schemes, challenges and tokens per host."""

    def __init__(self, *, auth_file: Path | None = None, insecure: Iterable[str] = (),
                 timeout: float = 60.0, retries: int = 3,
                 environ: Mapping[str, str] | None = None, progress: bool = True) -> None:
        super().__init__(auth_file=auth_file, insecure=insecure, timeout=timeout,
                         retries=retries, environ=environ)
        self.progress = progress
        # Called as on_chunk(digest, bytes_so_far, size) while a blob streams in (the
        # upgrade's phase markers hang on it).
        self.on_chunk: Callable[[str, int, int], None] | None = None
        # Bytes received over the network, per blob digest, over this client's life.
        self.downloaded: dict[str, int] = {}

    # -- public API ------------------------------------------------------------

    def resolve(self, ref: Reference, platform: str = DEFAULT_PLATFORM) -> Manifest:
        """The manifest `ref` names, resolved through an index to `platform`."""
        want = parse_platform(platform)
        raw, media_type, digest = self._get_manifest(ref, ref.reference)
        doc = parse_json(raw, f"manifest of {ref}")
        media_type = str(doc.get("mediaType") or media_type)
        index_digest: str | None = None
        platforms: list[str] = []
        if _is_index(doc, media_type):
            entries = [Descriptor.from_json(e, f"index of {ref}")
                       for e in _as_list(doc.get("manifests"), ref)]
            chosen, platforms = pick_platform(entries, want, ref)
            index_digest = digest
            raw, media_type, digest = self._get_manifest(ref, chosen.digest)
            doc = parse_json(raw, f"manifest {chosen.digest} of {ref}")
            media_type = str(doc.get("mediaType") or media_type)
            if _is_index(doc, media_type):
                raise BadInput(f"{ref}: an index inside an index is not supported",
                               "push a plain multi-platform image")
        if media_type in MT_DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
            raise BadInput(f"{ref} has an old Docker schema 1 manifest, which is not supported",
                           "push the image again with a current docker, podman or skopeo")
        if media_type and media_type not in MANIFEST_TYPES:
            raise BadInput(f"{ref} is not a container image (manifest type {media_type})",
                           "check the reference")
        config = Descriptor.from_json(doc.get("config"), f"manifest of {ref}: config")
        layers = [Descriptor.from_json(e, f"manifest of {ref}: layers[{i}]")
                  for i, e in enumerate(_as_list(doc.get("layers"), ref))]
        if not layers:
            raise BadInput(f"{ref} has no layers", "check the reference; it is not an OS image")
        return Manifest(ref, digest, media_type or MT_MANIFEST, raw, config, layers,
                        index_digest, platforms)

    def pull(self, ref: Reference, cache: BlobCache, platform: str = DEFAULT_PLATFORM, *,
             verify_cached: bool = False) -> PullResult:
        """Resolve `ref`, then bring its config and layers into `cache` (verified)."""
        want = parse_platform(platform)
        manifest = self.resolve(ref, platform)
        cache.ensure()
        cache.put_bytes(manifest.raw)  # verified by resolve(); lets the cache act as a layout
        config_blob = self.fetch_blob(ref, manifest.config, cache, verify_cached=True)
        config = parse_json(config_blob.path.read_bytes(), f"config of {ref}")
        check_config_platform(config, want, ref)
        layers = [self.fetch_blob(ref, d, cache, verify_cached=verify_cached)
                  for d in manifest.layers]
        return PullResult(manifest, config, config_blob, layers)

    def fetch_blob(self, ref: Reference, desc: Descriptor, cache: BlobCache, *,
                   verify_cached: bool = False) -> BlobResult:
        """Bring one blob into `cache`; a cached one (right size) is not downloaded again.

        A cached blob is trusted by size (it was verified before it was renamed into place);
        `verify_cached` re-hashes it first. A dropped connection is resumed with a Range
        request, `retries` times in this call and again by a later call (the partial stays).
        """
        path = cache.lookup(desc.digest, desc.size)
        if path is not None and (not verify_cached or cache.verify(desc.digest)):
            cache.touch(desc.digest)
            return BlobResult(desc.digest, path, desc.size, 0, True)
        fd = cache.lock(desc.digest)
        try:
            got = 0
            for attempt in range(self.retries + 1):
                try:
                    return self._download(ref, desc, cache, fd, got)
                except _Interrupted as exc:
                    got += int(exc.args[1])
                    if attempt == self.retries:
                        have = os.fstat(fd).st_size
                        raise KairosError(
                            f"download of blob {desc.digest[:19]} from {ref.registry} was "
                            f"interrupted at {have} of {desc.size} bytes ({exc.args[0]})",
                            "check the network and run again: the bytes already here are kept "
                            "(resumed where the registry honours Range requests)") from None
                    log.info("  blob %s: %s; resuming", desc.digest[7:19], exc.args[0])
                    time.sleep(min(0.5 * 2**attempt, 5.0))
            raise AssertionError("unreachable")
        finally:
            if os.fstat(fd).st_size == 0:  # nothing to resume: leave no empty partial behind
                cache.partial_path(desc.digest).unlink(missing_ok=True)
            os.close(fd)

    def list_tags(self, ref: Reference, page_size: int | None = None) -> list[str]:
        """Every tag of `ref`'s repository, following `Link: <…>; rel="next"` pages."""
        path = f"/v2/{ref.repository}/tags/list"
        if page_size:
            path += f"?n={page_size}"
        url: str | None = self._url(ref.registry, path)
        tags: list[str] = []
        for _ in range(MAX_TAG_PAGES):
            if url is None:
                return tags
            resp = self._request(ref, "GET", url, {"Accept": "application/json"})
            try:
                if resp.status == 404:
                    raise BadInput(f"no repository {ref.name}", "check the repository name")
                if resp.status != 200:
                    self._fail(resp, ref, "the tag list")
                doc = parse_json(resp.read_small("the tag list"), f"tag list of {ref.name}")
                url = _next_link(resp.headers.get("Link"), resp.url)
            finally:
                resp.close()
            page = doc.get("tags") or []
            tags.extend(t for t in page if isinstance(t, str))
        raise KairosError(f"the tag list of {ref.name} has more than {MAX_TAG_PAGES} pages",
                          "the registry's pagination loops; report it to its operator")

    # -- manifests -------------------------------------------------------------

    def _get_manifest(self, ref: Reference, reference: str) -> tuple[bytes, str, str]:
        url = self._url(ref.registry, f"/v2/{ref.repository}/manifests/{reference}")
        resp = self._request(ref, "GET", url, {"Accept": ACCEPT})
        try:
            if resp.status == 404:
                code = error_code(resp.read(65536))
                if code == "NAME_UNKNOWN":
                    raise BadInput(f"no repository {ref.name}", "check the repository name")
                shown = ref.with_reference(reference)
                raise BadInput(f"no image {shown}",
                               "check the tag (kairos upgrade list-releases shows them)")
            if resp.status != 200:
                self._fail(resp, ref, "the manifest")
            raw = resp.read_small(f"the manifest of {ref}")
            media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
            header_digest = resp.headers.get("Docker-Content-Digest")
        finally:
            resp.close()
        digest = sha256_digest(raw)
        expected = reference if is_digest(reference) else header_digest
        if expected and is_digest(expected) and digest != expected:
            raise BadInput(f"manifest {expected[:19]} of {ref.name} from {ref.registry} does "
                           "not match its digest", HINT_CORRUPT)
        return raw, media_type, digest

    # -- blobs -----------------------------------------------------------------

    def _download(self, ref: Reference, desc: Descriptor, cache: BlobCache, fd: int,
                  got_before: int) -> BlobResult:
        have = os.fstat(fd).st_size
        if have > desc.size:
            os.ftruncate(fd, 0)
            have = 0
        h = _hash_prefix(fd, have)
        headers = {"Accept": "*/*"}
        if have:
            headers["Range"] = f"bytes={have}-"
        url = self._url(ref.registry, f"/v2/{ref.repository}/blobs/{desc.digest}")
        resp = self._request(ref, "GET", url, headers) if have < desc.size else None
        got = 0
        try:
            if resp is not None:
                have, h = self._check_blob_response(resp, ref, desc, fd, have, h)
                got = self._stream(resp, ref, desc, fd, have, h)
                have += got
        finally:
            if resp is not None:
                resp.close()
        self.downloaded[desc.digest] = self.downloaded.get(desc.digest, 0) + got
        total = got_before + got
        if have != desc.size or "sha256:" + h.hexdigest() != desc.digest:
            cache.discard(desc.digest)
            what = "is truncated" if have < desc.size else "does not match its digest"
            raise BadInput(f"blob {desc.digest} from {ref.registry} {what}", HINT_CORRUPT)
        path = cache.commit(desc.digest, fd)
        return BlobResult(desc.digest, path, desc.size, total, False, max(desc.size - total, 0))

    def _check_blob_response(self, resp: Response, ref: Reference, desc: Descriptor, fd: int,
                             have: int, h: Any) -> tuple[int, Any]:
        """Where the body starts: at `have` for a 206, at 0 for a 200 (Range ignored)."""
        if resp.status == 206:
            m = _RANGE_RE.match(resp.headers.get("Content-Range") or "")
            if m and int(m.group(1)) == have:
                return have, h
            os.ftruncate(fd, 0)
            raise _Interrupted("the registry answered the range request with another range", 0)
        if resp.status == 200:
            if have:
                log.info("  blob %s: %s ignored the range request; downloading it again",
                         desc.digest[7:19], ref.registry)
                os.ftruncate(fd, 0)
            return 0, hashlib.sha256()
        if resp.status == 416:  # our partial is stale or bigger than the blob: start over
            os.ftruncate(fd, 0)
            raise _Interrupted("the registry refused the range request", 0)
        if resp.status == 404:
            raise BadInput(f"blob {desc.digest} is missing from {ref.name}",
                           "the image in the registry is incomplete; push it again")
        self._fail(resp, ref, f"blob {desc.digest[:19]}")

    def _stream(self, resp: Response, ref: Reference, desc: Descriptor, fd: int, have: int,
                h: Any) -> int:
        """Append the body at `have`, hashing; return the bytes received."""
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        show = self.progress and desc.size >= PROGRESS_MIN_BYTES
        progress = Progress(f"blob {desc.digest[7:19]} from {ref.registry}", desc.size)
        if show and have:
            progress.advance(have)
        os.lseek(fd, have, os.SEEK_SET)
        got = 0
        start = time.monotonic()
        while True:
            try:
                chunk = resp.read(CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise _Interrupted(str(exc) or type(exc).__name__, got) from None
            if not chunk:
                break
            room = desc.size - have - got
            if len(chunk) > room:
                # More than the descriptor says: keep what fits, the digest decides.
                chunk = chunk[:room]
            _write_all(fd, chunk)
            h.update(chunk)
            got += len(chunk)
            if show:
                progress.advance(len(chunk))
            if self.on_chunk is not None:
                self.on_chunk(desc.digest, have + got, desc.size)
            if len(chunk) == room:
                break
        if expected is not None and got < expected and have + got < desc.size:
            raise _Interrupted(f"connection closed after {got} of {expected} bytes", got)
        if show:
            progress.finish()
            secs = max(time.monotonic() - start, 1e-3)
            log.info("  blob %s: %.1f MiB in %.1fs (%.1f MiB/s)", desc.digest[7:19],
                     got / 2**20, secs, got / 2**20 / secs)
        return got

    # -- signatures: small reads and pushes (kairos.oci.signature) --------------

    def get_manifest_raw(self, ref: Reference, reference: str) -> tuple[bytes, str, str] | None:
        """The manifest at `reference` (a tag or digest) of `ref`'s repository as stored: raw
        bytes, media type, digest (checked against a digest reference or the registry's
        Docker-Content-Digest). None when the registry has no such manifest."""
        url = self._url(ref.registry, f"/v2/{ref.repository}/manifests/{reference}")
        resp = self._request(ref, "GET", url, {"Accept": ACCEPT})
        try:
            if resp.status == 404:
                return None
            if resp.status != 200:
                self._fail(resp, ref, "the manifest")
            raw = resp.read_small(f"the manifest {reference} of {ref.name}")
            media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
            header_digest = resp.headers.get("Docker-Content-Digest")
        finally:
            resp.close()
        digest = sha256_digest(raw)
        expected = reference if is_digest(reference) else header_digest
        if expected and is_digest(expected) and digest != expected:
            raise BadInput(f"manifest {reference} of {ref.name} from {ref.registry} does not "
                           "match its digest", HINT_CORRUPT)
        return raw, media_type, digest

    def get_blob_bytes(self, ref: Reference, desc: Descriptor,
                       limit: int = MAX_JSON_BYTES) -> bytes:
        """A small blob in memory, checked against the descriptor's size and digest."""
        if desc.size > limit:
            raise BadInput(f"blob {desc.digest[:19]} of {ref.name} is too large "
                           f"({desc.size} bytes, at most {limit})", "check the reference")
        url = self._url(ref.registry, f"/v2/{ref.repository}/blobs/{desc.digest}")
        resp = self._request(ref, "GET", url, {"Accept": "*/*"})
        try:
            if resp.status == 404:
                raise BadInput(f"blob {desc.digest} is missing from {ref.name}",
                               "the artifact in the registry is incomplete; push it again")
            if resp.status != 200:
                self._fail(resp, ref, f"blob {desc.digest[:19]}")
            data = resp.read(desc.size + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise KairosError(f"download of blob {desc.digest[:19]} from {ref.registry} "
                              f"failed ({exc})", "check the network and run again") from None
        finally:
            resp.close()
        if len(data) != desc.size or sha256_digest(data) != desc.digest:
            raise BadInput(f"blob {desc.digest} from {ref.registry} does not match its digest",
                           HINT_CORRUPT)
        return data

    def push_blob(self, ref: Reference, data: bytes) -> str:
        """Upload `data` to `ref`'s repository (a monolithic upload: POST, then PUT ?digest=),
        unless the registry has it already; returns its digest."""
        digest = sha256_digest(data)
        blob_url = self._url(ref.registry, f"/v2/{ref.repository}/blobs/{digest}")
        resp = self._push_request(ref, "HEAD", blob_url, {})
        resp.close()
        if resp.status == 200:
            return digest
        start = self._url(ref.registry, f"/v2/{ref.repository}/blobs/uploads/")
        resp = self._push_request(ref, "POST", start, {})
        try:
            if resp.status != 202 or not resp.headers.get("Location"):
                self._push_fail(resp, ref, "the blob upload")
            location = urllib.parse.urljoin(resp.url, resp.headers["Location"])
        finally:
            resp.close()
        sep = "&" if urllib.parse.urlsplit(location).query else "?"
        put = f"{location}{sep}{urllib.parse.urlencode({'digest': digest})}"
        resp = self._push_request(ref, "PUT", put, {"Content-Type": "application/octet-stream"},
                                  data)
        try:
            if resp.status not in (201, 204):
                self._push_fail(resp, ref, f"the upload of blob {digest[:19]}")
        finally:
            resp.close()
        return digest

    def push_manifest(self, ref: Reference, tag: str, raw: bytes, media_type: str) -> str:
        """PUT `raw` as the manifest tagged `tag` in `ref`'s repository; returns its digest."""
        digest = sha256_digest(raw)
        url = self._url(ref.registry, f"/v2/{ref.repository}/manifests/{tag}")
        resp = self._push_request(ref, "PUT", url, {"Content-Type": media_type}, raw)
        try:
            if resp.status not in (200, 201):
                self._push_fail(resp, ref, f"the manifest {tag}")
            answered = resp.headers.get("Docker-Content-Digest")
        finally:
            resp.close()
        if answered and is_digest(answered) and answered != digest:
            raise KairosError(f"{ref.registry} stored manifest {tag} as {answered[:19]}, not "
                              f"{digest[:19]}", "the registry rewrote the manifest; report it")
        return digest

    def _push_fail(self, resp: Response, ref: Reference, what: str) -> NoReturn:
        if resp.status == 403:
            detail = error_detail(resp.read(65536))
            tail = f": {detail}" if detail else ""
            raise BadInput(f"{ref.registry} denied pushing to {ref.repository}{tail}",
                           "check that your credentials may push to this repository")
        self._fail(resp, ref, what)


# ---------------------------------------------------------------------------- layout

def write_layout(result: PullResult, cache: BlobCache, name: str) -> Path:
    """Make the parent of a cache rooted at `.../blobs` an OCI layout whose index names the
    pulled image `name`, so kairos.oci.unpack reads (and hashes again) the cached blobs in
    place. Returns the layout directory."""
    if cache.root.name != "blobs":
        raise ValueError(f"the blob cache {cache.root} is not a layout's blobs/ directory")
    check_ref(name)
    layout = cache.root.parent
    desc = Descriptor(result.manifest.media_type, result.manifest.digest,
                      len(result.manifest.raw), annotations={ANNOTATION_REF_NAME: name})
    write_file_atomic(layout / OCI_LAYOUT_FILE,
                  canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
    write_file_atomic(layout / INDEX_FILE, canonical_json(
        {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [desc.to_json()]}))
    return layout


# ---------------------------------------------------------------------------- helpers

def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _hash_prefix(fd: int, size: int) -> Any:
    """The sha256 state after the first `size` bytes of a partial download."""
    h = hashlib.sha256()
    pos = 0
    while pos < size:
        chunk = os.pread(fd, min(CHUNK, size - pos), pos)
        if not chunk:
            break
        h.update(chunk)
        pos += len(chunk)
    return h


def _is_index(doc: dict[str, Any], media_type: str) -> bool:
    return media_type in INDEX_TYPES or ("manifests" in doc and "layers" not in doc)


def _as_list(value: object, ref: Reference) -> list[Any]:
    if not isinstance(value, list):
        raise BadInput(f"the manifest of {ref} is malformed (a list is missing)",
                       "the image in the registry is damaged; push it again")
    return value


def _next_link(header: str | None, base: str) -> str | None:
    if not header:
        return None
    m = _LINK_RE.search(header)
    return urllib.parse.urljoin(base, m.group(1)) if m else None

