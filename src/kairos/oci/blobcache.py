"""A content-addressed blob cache: `<root>/sha256/<hex>`, downloads in `<hex>.partial`.

With `<root>` named `blobs`, its parent becomes an OCI image layout once registry.write_layout()
adds `oci-layout` and `index.json`: the unpacker then reads the cached blobs in place.

A blob is only renamed into place after its size and digest were verified, so a file named
`<hex>` is trusted by size on later use (cheap); the unpacker hashes every blob it reads
anyway, and `verify()` re-hashes one on demand. "Last used" is the file's mtime, set by
`touch()`: atime is unreliable on relatime/noatime mounts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kairos.errors import BadInput, KairosError
from kairos.oci.media import CHUNK, digest_hex

PARTIAL = ".partial"


@dataclass(frozen=True)
class CacheEntry:
    digest: str
    path: Path
    size: int
    last_used: float
    partial: bool


class BlobCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "sha256"

    def ensure(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot create the blob cache {self.root}: {exc.strerror}",
                           "choose a writable directory on persistent storage") from None

    def path(self, digest: str) -> Path:
        return self.dir / digest_hex(digest)

    def partial_path(self, digest: str) -> Path:
        return self.dir / (digest_hex(digest) + PARTIAL)

    def lookup(self, digest: str, size: int) -> Path | None:
        """The cached blob if present with the right size (a wrong one is removed)."""
        path = self.path(digest)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        if st.st_size != size:
            path.unlink(missing_ok=True)
            return None
        return path

    def touch(self, digest: str) -> None:
        now = time.time()
        for path in (self.path(digest), self.partial_path(digest)):
            with contextlib.suppress(FileNotFoundError):
                os.utime(path, (now, now))

    def lock(self, digest: str) -> int:
        """Open (creating) the partial file locked exclusively; one downloader per blob."""
        self.ensure()
        path = self.partial_path(digest)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise KairosError(f"another process is downloading blob {digest[:19]}",
                                  "wait for it to finish, then run again") from None
            raise
        return fd

    def commit(self, digest: str, fd: int) -> Path:
        """Make the verified partial the blob: fsync, rename, fsync the directory."""
        os.fsync(fd)
        final = self.path(digest)
        os.rename(self.partial_path(digest), final)
        dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return final

    def put_bytes(self, data: bytes) -> Path:
        """Store a small verified blob (a manifest) atomically; returns its path."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        final = self.path(digest)
        if self.lookup(digest, len(data)) is not None:
            self.touch(digest)
            return final
        fd = self.lock(digest)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            return self.commit(digest, fd)
        finally:
            os.close(fd)

    def discard(self, digest: str) -> None:
        """Forget a blob and its partial download."""
        self.path(digest).unlink(missing_ok=True)
        self.partial_path(digest).unlink(missing_ok=True)

    def verify(self, digest: str) -> bool:
        """Re-hash a cached blob; a bad one is removed."""
        path = self.path(digest)
        h = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
        except FileNotFoundError:
            return False
        if "sha256:" + h.hexdigest() != digest:
            path.unlink(missing_ok=True)
            return False
        return True

    def entries(self) -> list[CacheEntry]:
        if not self.dir.is_dir():
            return []
        out = []
        for path in self.dir.iterdir():
            partial = path.name.endswith(PARTIAL)
            hexpart = path.name[: -len(PARTIAL)] if partial else path.name
            if len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
                continue  # not ours: leave it alone
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            out.append(CacheEntry("sha256:" + hexpart, path, st.st_size, st.st_mtime, partial))
        return out

    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries())

    def prune(self, max_bytes: int, keep: Iterable[str] = ()) -> list[CacheEntry]:
        """Drop least recently used blobs (and partials) until the cache fits `max_bytes`.

        Blobs in `keep` (e.g. those of the image being installed) are never dropped, so the
        cache may stay above `max_bytes`. Returns what was removed.
        """
        kept = set(keep)
        entries = self.entries()
        total = sum(e.size for e in entries)
        removed: list[CacheEntry] = []
        for entry in sorted(entries, key=lambda e: (e.last_used, e.path.name)):
            if total <= max_bytes:
                break
            if entry.digest in kept:
                continue
            entry.path.unlink(missing_ok=True)
            total -= entry.size
            removed.append(entry)
        return removed
