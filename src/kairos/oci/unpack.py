"""Unpack an image the factory takes as a base into a directory, verifying every digest.

Sources: an OCI layout directory, an OCI archive (a tar holding a layout), or a docker
archive (`docker save` / `podman save`, with manifest.json). Layers are streamed: hashed,
decompressed (by the gzip or zstd tool, in a process of its own) and applied in one pass. A digest
mismatch is reported after its layer was applied, so unpack into a fresh directory.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import shutil
import subprocess
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kairos.errors import BadInput
from kairos.oci.apply import ApplyState, apply_layer
from kairos.oci.media import CHUNK, Reader
from kairos.oci.source import LayerRef, ResolvedImage, Store, resolve
from kairos.run import popen, require
from kairos.ui import Progress

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class ImageInfo:
    """What the factory needs to know about a base image (from its config)."""

    source: Path
    kind: str  # oci-layout | oci-archive | docker-archive | docker-directory
    ref: str | None
    manifest_digest: str | None  # None for docker archives, which carry no manifest blob
    config_digest: str
    architecture: str
    os: str
    created: str | None
    labels: dict[str, str]
    env: list[str]
    cmd: list[str] | None
    entrypoint: list[str] | None
    diff_ids: list[str]
    config: dict[str, Any]


def inspect_image(source: Path, *, ref: str | None = None,
                  architecture: str = "amd64") -> ImageInfo:
    """Read an image's metadata without unpacking it."""
    store = Store(source)
    try:
        return _info(source, resolve(store, ref, architecture))
    finally:
        store.close()


def unpack_image(source: Path, dest: Path, *, ref: str | None = None,
                 architecture: str = "amd64") -> ImageInfo:
    """Apply the layers of image `ref` (or the only image) in `source` onto `dest`.

    Ownership, modes, device nodes and capabilities are kept when running as root.
    """
    if dest.exists() and not dest.is_dir():
        raise BadInput(f"unpack target {dest} is not a directory", "choose a directory")
    store = Store(source)
    try:
        image = resolve(store, ref, architecture)
        dest.mkdir(parents=True, exist_ok=True)
        state = ApplyState(dest)
        count = len(image.layers)
        for i, layer in enumerate(image.layers, 1):
            short = (layer.digest or layer.diff_id)[7:19]
            label = f"layer {i}/{count} ({short}) of {source.name}"
            _apply_one(store, layer, state, label)
        state.finish()
        return _info(source, image)
    finally:
        store.close()


class _HashReader:
    """Reads through to `inner`, hashing every byte that passes."""

    def __init__(self, inner: Reader, progress: Progress | None = None) -> None:
        self.inner = inner
        self.hash = hashlib.sha256()
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.hash.update(data)
        if self.progress is not None:
            self.progress.advance(len(data))
        return data

    def seek(self, n: int, /) -> int:
        raise io.UnsupportedOperation("a layer stream is read once, front to back")

    def drain(self) -> str:
        while self.read(CHUNK):
            pass
        return "sha256:" + self.hash.hexdigest()


def _apply_one(store: Store, layer: LayerRef, state: ApplyState, label: str) -> None:
    progress = Progress(label, store.size(layer.member))
    try:
        with store.open(layer.member) as raw:
            magic = raw.read(4)
            raw.seek(0)
            blob = _HashReader(raw, progress)
            with _decompressed(blob, magic, label) as tar_stream:
                tar = _HashReader(tar_stream)
                apply_layer(tar, state, label)
                diff_id = tar.drain()
            digest = blob.drain()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        # Damage after the tar's end-of-archive marker (padding, gzip trailer) shows up here.
        raise BadInput(f"{label} is damaged ({exc})",
                       "the image is corrupt; export or copy it again") from None
    progress.finish()
    if layer.digest is not None and digest != layer.digest:
        raise BadInput(f"{label}: the blob does not match its digest (got {digest})",
                       "the image is corrupt; export or copy it again")
    if diff_id != layer.diff_id:
        raise BadInput(f"{label}: the unpacked layer does not match the config's diff_id "
                       f"(got {diff_id})", "the image is corrupt; export or copy it again")


@contextlib.contextmanager
def _decompressed(blob: _HashReader, magic: bytes, label: str) -> Iterator[Reader]:
    """The layer's tar stream, whatever compression the blob uses (told by its magic).

    Decompression runs in a tool's own process where one is installed, so it overlaps with
    the tar apply (Python, one core): on a two-core device that is most of a core more."""
    if magic.startswith(GZIP_MAGIC):
        if shutil.which("gzip") is None:  # a base without the tool: decompress in-process
            with gzip.GzipFile(fileobj=blob, mode="rb") as gz:
                yield gz
            return
        # Exit code 2 is a warning (trailing zeros or garbage after the stream): the blob's
        # digest, checked over every byte, is what decides whether the blob is intact.
        with _tool_stream(["gzip", "-d", "-c", "-q"], blob, label, ok_codes=(0, 2)) as out:
            yield out
    elif magic == ZSTD_MAGIC:
        require("zstd")
        with _tool_stream(["zstd", "-d", "-c", "-q"], blob, label) as out:
            yield out
    else:
        yield blob


@contextlib.contextmanager
def _tool_stream(argv: list[str], blob: _HashReader, label: str,
                 ok_codes: tuple[int, ...] = (0,)) -> Iterator[IO[bytes]]:
    """`argv`'s output while a thread feeds it `blob` (hashed on the way)."""
    proc = popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    stdin = proc.stdin

    def feed() -> None:
        try:
            while chunk := blob.read(CHUNK):
                stdin.write(chunk)
        except (BrokenPipeError, ValueError):
            pass  # the tool stopped early: its exit code tells why
        finally:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    ok = False
    try:
        yield proc.stdout
        ok = True
    finally:
        if not ok:
            proc.kill()
        proc.stdout.close()
        feeder.join()
        rc = proc.wait()
    if rc not in ok_codes:
        raise BadInput(f"{label}: {argv[0]} could not decompress the layer (exit code {rc})",
                       "the image is corrupt; export or copy it again")


def _info(source: Path, image: ResolvedImage) -> ImageInfo:
    cfg = image.config
    runtime = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
    assert isinstance(runtime, dict)
    labels = runtime.get("Labels") if isinstance(runtime.get("Labels"), dict) else {}
    assert isinstance(labels, dict)
    return ImageInfo(
        source=source,
        kind=image.kind,
        ref=image.ref,
        manifest_digest=image.manifest_digest,
        config_digest=image.config_digest,
        architecture=str(cfg.get("architecture", "")),
        os=str(cfg.get("os", "")),
        created=cfg["created"] if isinstance(cfg.get("created"), str) else None,
        labels={str(k): str(v) for k, v in labels.items()},
        env=_strings(runtime.get("Env")) or [],
        cmd=_strings(runtime.get("Cmd")),
        entrypoint=_strings(runtime.get("Entrypoint")),
        diff_ids=[layer.diff_id for layer in image.layers],
        config=cfg,
    )


def _strings(value: object) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None
