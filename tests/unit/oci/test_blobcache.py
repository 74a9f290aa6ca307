"""The blob cache: lookups by size, commit, verify, locks, LRU prune with a keep-set."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from kairos.errors import BadInput, KairosError
from kairos.oci.blobcache import BlobCache


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put(cache: BlobCache, data: bytes, used: float) -> str:
    d = digest(data)
    fd = cache.lock(d)
    try:
        os.write(fd, data)
        cache.commit(d, fd)
    finally:
        os.close(fd)
    os.utime(cache.path(d), (used, used))
    return d


def test_commit_lookup_verify(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    d = put(cache, b"hello", 1000)
    assert cache.lookup(d, 5) == cache.path(d)
    assert not cache.partial_path(d).exists()
    assert cache.verify(d)
    assert cache.lookup(d, 6) is None and not cache.path(d).exists()  # wrong size: dropped
    d2 = put(cache, b"world", 1000)
    cache.path(d2).write_bytes(b"WORLD")
    assert not cache.verify(d2) and not cache.path(d2).exists()


def test_one_downloader_per_blob(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    d = digest(b"x")
    fd = cache.lock(d)
    try:
        with pytest.raises(KairosError, match="another process"):
            os.close(cache.lock(d))
    finally:
        os.close(fd)
    os.close(cache.lock(d))


def test_path_tricks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        BlobCache(tmp_path).path("sha256:../../etc/passwd")


def test_prune_drops_oldest_used_first_and_keeps(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    old = put(cache, b"a" * 100, 1000)
    mid = put(cache, b"b" * 100, 2000)
    new = put(cache, b"c" * 100, 3000)
    partial = digest(b"d" * 100)
    cache.partial_path(partial).write_bytes(b"d" * 50)
    os.utime(cache.partial_path(partial), (1500, 1500))
    (cache.dir / "not-a-blob").write_bytes(b"z" * 1000)  # someone else's file: never counted
    assert cache.total_bytes() == 350

    removed = cache.prune(250, keep={old})
    assert [e.digest for e in removed] == [partial, mid]
    assert cache.path(old).exists() and cache.path(new).exists()
    assert (cache.dir / "not-a-blob").exists()

    cache.touch(old)  # used now: newest
    assert [e.digest for e in cache.prune(100)] == [new]
    assert cache.prune(0, keep={old}) == []
    assert cache.total_bytes() == 100


def test_prune_of_an_empty_cache(tmp_path: Path) -> None:
    assert BlobCache(tmp_path / "none").prune(0) == []


def test_put_bytes_is_idempotent(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    path = cache.put_bytes(b'{"schemaVersion": 2}')
    assert path == cache.path(digest(b'{"schemaVersion": 2}')) and cache.verify(digest(path.read_bytes()))
    assert cache.put_bytes(b'{"schemaVersion": 2}') == path
    assert not list(cache.dir.glob("*.partial"))
