"""Builds sharing one step cache: flock(2) locks keep one build from deleting or replacing
what another reads, and two builds of one key make it once. Each StepCache stands for one
build (flock locks belong to open files, so two instances conflict even in one process)."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from kairos.factory.cache import CREATED, StepCache

LINE = "debian:bookworm systemd"


def _make(cache: StepCache, key: str, text: str = "") -> Path:
    with cache.claim("squash", key, reuse=False), \
            cache.produce("squash", key, lineage=LINE) as out:
        (out / "rootfs.squashfs").write_text(text or key)
    return cache.path("squash", key)


def test_prune_spares_an_entry_another_build_uses(tmp_path: Path) -> None:
    one, two = StepCache(tmp_path), StepCache(tmp_path)
    theirs = _make(one, "aaa")  # build one made it and still reads it
    mine = _make(two, "bbb")
    assert two.prune("squash", "bbb", lineage=LINE) == []
    assert (theirs / "rootfs.squashfs").read_text() == "aaa"
    one.close()  # build one has finished
    assert two.prune("squash", "bbb", lineage=LINE) == ["aaa"]
    assert not theirs.exists() and mine.is_dir()
    assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == [
        "squash-bbb.make", "squash-bbb.use"]


def test_a_lookup_holds_the_entry_too(tmp_path: Path) -> None:
    maker = StepCache(tmp_path)
    _make(maker, "aaa")
    maker.close()
    reader, pruner = StepCache(tmp_path), StepCache(tmp_path)
    assert reader.lookup("squash", "aaa") is not None
    _make(pruner, "bbb")
    assert pruner.prune("squash", "bbb") == []
    reader.close()
    assert pruner.prune("squash", "bbb") == ["aaa"]


def test_prune_spares_an_entry_being_made(tmp_path: Path) -> None:
    one, two = StepCache(tmp_path), StepCache(tmp_path)
    _make(one, "aaa")
    one.close()
    with one.claim("squash", "aaa", reuse=False):  # build one is remaking it (--rebuild)
        _make(two, "bbb")
        assert two.prune("squash", "bbb") == []
    assert two.prune("squash", "bbb") == ["aaa"]


def test_two_builds_of_one_key_make_it_once(tmp_path: Path) -> None:
    made: list[str] = []
    results: dict[str, str] = {}

    def build(name: str) -> None:
        cache = StepCache(tmp_path)
        with cache.claim("squash", "same") as hit:
            if hit is None:
                with cache.produce("squash", "same") as out:
                    time.sleep(0.3)  # long enough for the other build to be waiting
                    (out / "rootfs.squashfs").write_text(name)
                made.append(name)
        results[name] = (cache.path("squash", "same") / "rootfs.squashfs").read_text()
        cache.close()

    threads = [threading.Thread(target=build, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(made) == 1, made
    assert results == {"a": made[0], "b": made[0]}


def test_replacing_an_entry_waits_for_its_readers(tmp_path: Path) -> None:
    maker = StepCache(tmp_path)
    _make(maker, "aaa", "old")
    maker.close()
    reader, writer = StepCache(tmp_path), StepCache(tmp_path)
    assert reader.lookup("squash", "aaa") is not None
    done = threading.Event()

    def rebuild() -> None:  # `kairos build --rebuild` of the same inputs
        _make(writer, "aaa", "new")
        done.set()

    t = threading.Thread(target=rebuild)
    t.start()
    time.sleep(0.3)
    assert not done.is_set(), "the entry was replaced under its reader"
    entry = reader.path("squash", "aaa") / "rootfs.squashfs"
    assert entry.read_text() == "old"
    reader.close()
    t.join(10)
    assert done.is_set() and entry.read_text() == "new"
    writer.close()


def test_clean_stale_keeps_a_live_builds_scratch_dir(tmp_path: Path) -> None:
    """A scratch dir whose pid looks dead (another pid namespace, a reused pid) but whose
    lock is held belongs to a live build: it stays. Once nobody holds it, it goes."""
    StepCache(tmp_path)
    scratch = tmp_path / "steps" / ".tmp-kairosify-abc-0f0f0f-999999999"
    (scratch / "tree/boot").mkdir(parents=True)
    (scratch / "tree/boot/vmlinuz-6.1").write_text("k")
    fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        StepCache(tmp_path)  # another build starting: cleans what is stale
        assert (scratch / "tree/boot/vmlinuz-6.1").exists()
    finally:
        os.close(fd)
    StepCache(tmp_path)
    assert not scratch.exists()


def test_produce_records_when_and_cleans_up_on_failure(tmp_path: Path) -> None:
    cache = StepCache(tmp_path)
    before = time.time()
    _make(cache, "aaa")
    made = cache.created("squash", "aaa")
    assert made is not None and before - 1 <= made <= time.time() + 1
    assert (cache.path("squash", "aaa") / CREATED).is_file()
    try:
        with cache.claim("squash", "bbb", reuse=False), cache.produce("squash", "bbb"):
            raise RuntimeError("step failed")
    except RuntimeError:
        pass
    assert [p.name for p in (tmp_path / "steps").iterdir()] == ["squash-aaa"]
    assert cache.created("squash", "bbb") is None
