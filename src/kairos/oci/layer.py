"""Write a directory tree as one reproducible OCI layer blob, streamed and hashed in one pass.

Same tree + same `mtime` gives byte-identical output: entries in sorted depth-first order,
numeric ids only, mtimes clamped to SOURCE_DATE_EPOCH, no atime/ctime, deterministic PAX
records (xattrs in sorted order), gzip with a zero timestamp and a fixed level.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import subprocess
import tarfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from kairos.errors import BadInput, KairosError
from kairos.oci.media import CHUNK, MT_LAYER_GZIP, MT_LAYER_TAR, MT_LAYER_ZSTD
from kairos.run import popen, require
from kairos.ui import Progress

log = logging.getLogger("kairos.oci")

MEDIA_TYPES: dict[str, str] = {"gzip": MT_LAYER_GZIP, "zstd": MT_LAYER_ZSTD, "none": MT_LAYER_TAR}
# Fixed levels: the level is part of what makes the compressed bytes reproducible.
GZIP_LEVEL = 6
ZSTD_LEVEL = 3
# Host-policy labels say nothing about the image and differ between build hosts.
SKIPPED_XATTRS = frozenset({"security.selinux"})


@dataclass(frozen=True)
class LayerInfo:
    """A layer blob on disk plus the digests an image config and manifest need."""

    path: Path
    diff_id: str  # sha256 of the uncompressed tar
    digest: str  # sha256 of the blob as stored
    size: int  # bytes of the blob as stored
    media_type: str


class _DigestFile:
    """Writes to a file while hashing exactly the bytes written."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.hash.update(data)
        self.size += len(data)
        self.fh.write(data)


class _Sink:
    """The file object tarfile writes to: hashes the tar stream and compresses it."""

    def __init__(self, out: _DigestFile, compress: str, progress: Progress) -> None:
        self.out = out
        self.compress = compress
        self.progress = progress
        self.diff_hash = hashlib.sha256()
        self._zlib: Any = None  # a zlib compress object
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._reader_error: BaseException | None = None
        if compress == "gzip":
            # wbits 31 = gzip container; zlib writes mtime 0 and no file name.
            self._zlib = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        elif compress == "zstd":
            # One thread: zstd's multi-threaded frames differ from single-threaded ones.
            self._proc = popen(
                ["zstd", "-q", "-c", f"-{ZSTD_LEVEL}", "-T1", "--no-progress"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )
            self._reader = threading.Thread(target=self._pump, daemon=True)
            self._reader.start()

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            while chunk := self._proc.stdout.read(CHUNK):
                self.out.write(chunk)
        except BaseException as exc:  # re-raised in finish()
            self._reader_error = exc

    def write(self, data: bytes) -> int:
        self.diff_hash.update(data)
        self.progress.advance(len(data))
        if self._zlib is not None:
            self.out.write(self._zlib.compress(data))
        elif self._proc is not None:
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(data)
            except BrokenPipeError:
                self._fail_zstd()
        else:
            self.out.write(data)
        return len(data)

    def _fail_zstd(self) -> None:
        assert self._proc is not None
        rc = self._proc.wait()
        raise KairosError(f"zstd stopped while compressing the layer (exit code {rc})",
                          "check free space and run again with --debug")

    def finish(self) -> str:
        if self._zlib is not None:
            self.out.write(self._zlib.flush())
        elif self._proc is not None:
            assert self._proc.stdin is not None and self._reader is not None
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
            self._reader.join()
            if self._proc.wait() != 0:
                self._fail_zstd()
            if self._reader_error is not None:
                raise self._reader_error
        return "sha256:" + self.diff_hash.hexdigest()

    def abort(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
            if self._reader is not None:
                self._reader.join()


def write_layer(tree: Path, out: Path, *, mtime: int, compress: str = "gzip") -> LayerInfo:
    """Write `tree` as a layer blob to `out`; return its digests.

    `mtime` is SOURCE_DATE_EPOCH: later file times are clamped to it. `compress` is
    'gzip', 'zstd' (via the zstd tool) or 'none'. The file appears only when complete.
    """
    if not tree.is_dir():
        raise BadInput(f"layer source {tree} is not a directory", "pass the root of a rootfs tree")
    if compress not in MEDIA_TYPES:
        raise BadInput(f"unknown layer compression {compress!r}",
                       f"use one of: {', '.join(MEDIA_TYPES)}")
    if mtime < 0:
        raise BadInput(f"SOURCE_DATE_EPOCH must not be negative (got {mtime})",
                       "use seconds since 1970-01-01 UTC")
    if out.resolve().is_relative_to(tree.resolve()):
        raise BadInput(f"the layer file {out} is inside the tree it archives",
                       "write the layer outside the rootfs directory")
    if compress == "zstd":
        require("zstd")
    part = out.with_name(out.name + ".part")
    progress = Progress(f"layer {out.name}")
    try:
        with open(part, "wb") as fh:
            digest_file = _DigestFile(fh)
            sink = _Sink(digest_file, compress, progress)
            try:
                _write_tar(tree, sink, mtime)
                diff_id = sink.finish()
            except BaseException:
                sink.abort()
                raise
        os.replace(part, out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    progress.finish()
    return LayerInfo(
        path=out,
        diff_id=diff_id,
        digest="sha256:" + digest_file.hash.hexdigest(),
        size=digest_file.size,
        media_type=MEDIA_TYPES[compress],
    )


def _write_tar(tree: Path, sink: _Sink, mtime: int) -> None:
    # "w|" streams through the sink: no seeking, no file held in memory. The buffer size
    # only changes how the bytes are chunked, not the bytes (padding is to 10 KiB records).
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                      encoding="utf-8", errors="surrogateescape", copybufsize=CHUNK,
                      bufsize=CHUNK) as tf:
        hardlinks: dict[tuple[int, int], str] = {}
        for name, path in iter_tree(tree):
            st = os.lstat(path)
            info = tar_entry(name, path, st, mtime, hardlinks)
            if info is None:
                continue
            if info.type == tarfile.REGTYPE:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as src:
                    # Size from the open file, so stat and content agree.
                    info.size = os.fstat(src.fileno()).st_size
                    tf.addfile(info, src)
            else:
                tf.addfile(info)
            tf.members.clear()  # tarfile remembers every header: a rootfs has 100k+


def iter_tree(tree: Path) -> Iterator[tuple[str, str]]:
    """(archive name, host path) depth-first, siblings sorted by their bytes; root excluded."""

    def walk(directory: str, prefix: str) -> Iterator[tuple[str, str]]:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
        for entry in entries:
            name = prefix + entry.name
            yield name, entry.path
            if entry.is_dir(follow_symlinks=False):
                yield from walk(entry.path, name + "/")

    yield from walk(os.fspath(tree), "")


def tar_entry(
    name: str, path: str, st: os.stat_result, mtime: int, hardlinks: dict[tuple[int, int], str]
) -> tarfile.TarInfo | None:
    """The tar header for one tree entry (None for sockets, which tar cannot carry)."""
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""  # numeric ids only: names would depend on the build host
    info.mtime = max(0, min(st.st_mtime_ns // 1_000_000_000, mtime))
    mode = st.st_mode
    if not stat.S_ISDIR(mode) and st.st_nlink > 1:
        key = (st.st_dev, st.st_ino)
        first = hardlinks.get(key)
        if first is not None:
            info.type = tarfile.LNKTYPE
            info.linkname = first
            return info
        hardlinks[key] = name
    if stat.S_ISREG(mode):
        info.type = tarfile.REGTYPE
        info.size = st.st_size
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:
        log.debug("skipping %s: sockets cannot be stored in a layer", path)
        return None
    xattrs = read_xattrs(path)
    if xattrs:
        info.pax_headers = {
            f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape")
            for key, value in xattrs.items()
        }
    return info


def read_xattrs(path: str) -> dict[str, bytes]:
    """Extended attributes of `path` (not following symlinks), sorted by name."""
    if not hasattr(os, "listxattr"):
        return {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:  # filesystem without xattrs, or a symlink on one that refuses them
        return {}
    out: dict[str, bytes] = {}
    for key in sorted(names):
        if key in SKIPPED_XATTRS:
            continue
        try:
            out[key] = os.getxattr(path, key, follow_symlinks=False)
        except OSError:
            continue
    return out
