"""Build steps cached by a hash of their inputs (osbuild's idea): unchanged prefixes reuse
their outputs, and only a step that finished completely is ever reused."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("kairos.cache")
COMPLETE = ".kairos-step-complete"
LINEAGE = ".kairos-step-lineage"  # which line of builds made it (base and init)
CREATED = ".kairos-step-created"  # when it was made (seconds since the epoch)


def input_key(*parts: object) -> str:
    """A stable hash of a step's inputs (anything JSON can encode)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def hash_tree(root: Path, *, exclude: tuple[str, ...] = ("__pycache__",)) -> str:
    """Content hash of a small source tree (paths, modes and bytes)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if any(part in exclude for part in path.parts) or not path.is_file():
            continue
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(oct(path.stat().st_mode & 0o777).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:24]


def fingerprint_path(path: Path) -> str:
    """A cheap fingerprint of an input file or tree: size and mtime of every entry."""
    h = hashlib.sha256()
    entries = [path] if path.is_file() else sorted(path.rglob("*"))
    for p in entries:
        try:
            st = p.lstat()
        except OSError:
            continue
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}:{st.st_mode}".encode())
    return h.hexdigest()[:24]


def _lock(path: Path, how: int, *, blocking: bool = True) -> int | None:
    """An fd holding flock `how` (LOCK_SH or LOCK_EX) on the lock file `path`; None when
    not blocking and another holds it. Lock files may be deleted by whoever holds them
    exclusively: a lock won on a file that is no longer at `path` is retried."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, how | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _wait_lock(path: Path, how: int, why: str) -> int:
    """A blocking `_lock`, saying once what it waits for when it has to."""
    fd = _lock(path, how, blocking=False)
    if fd is None:
        log.info("  waiting for another build (%s)", why)
        fd = _lock(path, how)
    assert fd is not None
    return fd


@dataclass
class StepCache:
    """Step outputs under `root/steps`, shared by concurrent builds through flock(2) locks
    in `root/locks`:

    - `NAME-KEY.use`: shared by every build that uses the entry, until the build ends
      (`close`); exclusive to delete or replace it (prune skips entries others hold);
    - `NAME-KEY.make`: exclusive while a build makes the entry, so a second build of the
      same key waits and then reuses it (`claim`);
    - a step's scratch dir is locked (flock on the directory) by the build making it, so
      `clean_stale` never deletes a live build's work.
    """

    root: Path
    enabled: bool = True
    held: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)
    making: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        (self.root / "steps").mkdir(parents=True, exist_ok=True)
        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        self.clean_stale()

    def __enter__(self) -> StepCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release every entry this build used (other builds may prune them now)."""
        for fd in self.held.values():
            os.close(fd)
        self.held.clear()

    def path(self, name: str, key: str) -> Path:
        return self.root / "steps" / f"{name}-{key}"

    def _lockfile(self, name: str, key: str, kind: str) -> Path:
        return self.root / "locks" / f"{name}-{key}.{kind}"

    def _complete(self, name: str, key: str) -> bool:
        return (self.path(name, key) / COMPLETE).exists()

    def use(self, name: str, key: str) -> None:
        """Hold a shared lock on an entry until `close`: no other build deletes it meanwhile."""
        if (name, key) not in self.held:
            self.held[name, key] = _wait_lock(self._lockfile(name, key, "use"), fcntl.LOCK_SH,
                                              f"{name} step being replaced")

    def release(self, name: str, key: str) -> None:
        fd = self.held.pop((name, key), None)
        if fd is not None:
            os.close(fd)

    def lookup(self, name: str, key: str) -> Path | None:
        """The complete entry for (name, key), now held for this build; else None."""
        if not self.enabled or not self._complete(name, key):
            return None
        self.use(name, key)
        if self._complete(name, key):  # still there once held (a prune may have won)
            return self.path(name, key)
        self.release(name, key)
        return None

    def created(self, name: str, key: str) -> float | None:
        """When the entry was made (seconds since the epoch), None when there is none."""
        p = self.path(name, key)
        try:
            return float((p / CREATED).read_text().strip())
        except (OSError, ValueError):
            pass
        try:
            return (p / COMPLETE).stat().st_mtime
        except OSError:
            return None

    @contextlib.contextmanager
    def claim(self, name: str, key: str, *, reuse: bool = True) -> Iterator[Path | None]:
        """The right to make (name, key): yields the entry when `reuse` and it is there
        (made meanwhile by another build that held the claim), else None and the caller
        makes it with `produce`. Two builds of one key never both make it."""
        if reuse and (hit := self.lookup(name, key)):
            yield hit
            return
        fd = _wait_lock(self._lockfile(name, key, "make"), fcntl.LOCK_EX,
                        f"{name} step being made")
        self.making.add((name, key))
        try:
            yield self.lookup(name, key) if reuse else None
        finally:
            self.making.discard((name, key))
            os.close(fd)

    def clean_stale(self) -> None:
        """Remove what an interrupted build left (invariant 5: re-runs converge); a scratch
        dir whose build is alive (its lock held, or its pid running) stays."""
        for p in (self.root / "steps").glob(".tmp-*"):
            pid = p.name.rsplit("-", 1)[-1]
            if pid.isdigit() and pid_alive(int(pid)):
                continue
            fd = _lock_dir(p, blocking=False)
            if fd is None:
                continue
            try:
                log.debug("removing stale step dir %s", p)
                _rmtree(p)
            finally:
                os.close(fd)

    @contextlib.contextmanager
    def produce(self, name: str, key: str, *, lineage: str = "") -> Iterator[Path]:
        """A scratch dir for a step's output, published only if the step completes (then
        held for this build, as `use`). Inside `claim`, or it claims the key itself."""
        if (name, key) not in self.making:
            with self.claim(name, key, reuse=False), self.produce(name, key,
                                                                 lineage=lineage) as out:
                yield out
            return
        final = self.path(name, key)
        tmp = self.root / "steps" / f".tmp-{name}-{key}-{secrets.token_hex(3)}-{os.getpid()}"
        tmp.mkdir(parents=True)
        dir_fd = _lock_dir(tmp, blocking=True)
        try:
            try:
                yield tmp
            except BaseException:
                _rmtree(tmp)
                raise
            if lineage:
                (tmp / LINEAGE).write_text(lineage + "\n")
            (tmp / CREATED).write_text(f"{time.time():.0f}\n")
            (tmp / COMPLETE).write_text(name + "\n")
            self._publish(name, key, tmp, final)
        finally:
            if dir_fd is not None:
                os.close(dir_fd)

    def _publish(self, name: str, key: str, tmp: Path, final: Path) -> None:
        self.release(name, key)
        fd = _wait_lock(self._lockfile(name, key, "use"), fcntl.LOCK_EX,
                        f"{name} step in use by another build")
        try:
            if os.path.lexists(final):
                old = final.with_name(f".tmp-old-{final.name}-{os.getpid()}")
                final.rename(old)
                tmp.rename(final)
                _rmtree(old)
            else:
                tmp.rename(final)
        except BaseException:
            _rmtree(tmp)
            os.close(fd)
            raise
        # EX to SH is not atomic, but the make lock (held by the caller's `claim`) keeps
        # pruners away meanwhile, and others only take SH.
        fcntl.flock(fd, fcntl.LOCK_SH)
        self.held[name, key] = fd

    def lineage(self, name: str, key: str) -> str:
        try:
            return (self.path(name, key) / LINEAGE).read_text().strip()
        except OSError:
            return ""

    def prune(self, name: str, keep: str, *, lineage: str | None = None) -> list[str]:
        """Drop older outputs of a step so the cache does not grow without bound; returns
        the keys dropped.

        With a lineage, only outputs of that line of builds (and unlabelled ones) go: a
        bookworm-openrc build must not throw away the bookworm-systemd image, nor the other
        way round. An entry another build uses or makes right now stays.
        """
        dropped = []
        for p in sorted((self.root / "steps").glob(f"{name}-*")):
            other = p.name.removeprefix(f"{name}-")
            if other == keep:
                continue
            theirs = self.lineage(name, other)
            if lineage is not None and theirs and theirs != lineage:
                continue
            self.release(name, other)  # this build has moved on to `keep`
            if self._drop(name, other):
                dropped.append(other)
        return dropped

    def _drop(self, name: str, key: str) -> bool:
        """Delete an entry nobody holds (no waiting); False when another build has it."""
        make = _lock(self._lockfile(name, key, "make"), fcntl.LOCK_EX, blocking=False)
        if make is None:
            log.debug("not pruning %s-%s: another build is making it", name, key)
            return False
        try:
            use = _lock(self._lockfile(name, key, "use"), fcntl.LOCK_EX, blocking=False)
            if use is None:
                log.debug("not pruning %s-%s: another build uses it", name, key)
                return False
            try:
                _rmtree(self.path(name, key))
                self._lockfile(name, key, "use").unlink(missing_ok=True)
            finally:
                os.close(use)
            self._lockfile(name, key, "make").unlink(missing_ok=True)
        finally:
            os.close(make)
        return True


def _lock_dir(path: Path, *, blocking: bool) -> int | None:
    """An fd of directory `path` holding an exclusive flock on it; None if another holds it
    (not blocking) or the directory is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rmtree(p: Path) -> None:
    """Delete a cache entry or scratch dir, never through something still mounted in it."""
    from kairos.disk.mounts import remove_tree
    remove_tree(p)
