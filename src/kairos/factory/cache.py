"""Build steps cached by a hash of their inputs (osbuild's idea): unchanged prefixes reuse
their outputs, and only a step that finished completely is ever reused."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("kairos.cache")
COMPLETE = ".kairos-step-complete"
LINEAGE = ".kairos-step-lineage"  # which line of builds made it (base and init)


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


@dataclass
class StepCache:
    root: Path
    enabled: bool = True

    def __post_init__(self) -> None:
        (self.root / "steps").mkdir(parents=True, exist_ok=True)
        self.clean_stale()

    def path(self, name: str, key: str) -> Path:
        return self.root / "steps" / f"{name}-{key}"

    def lookup(self, name: str, key: str) -> Path | None:
        p = self.path(name, key)
        if self.enabled and (p / COMPLETE).exists():
            return p
        return None

    def clean_stale(self) -> None:
        """Remove what an interrupted build left (invariant 5: re-runs converge)."""
        for p in (self.root / "steps").glob(".tmp-*"):
            pid = p.name.rsplit("-", 1)[-1]
            if pid.isdigit() and _alive(int(pid)):
                continue
            log.debug("removing stale step dir %s", p)
            _rmtree(p)

    @contextlib.contextmanager
    def produce(self, name: str, key: str, *, lineage: str = "") -> Iterator[Path]:
        """A scratch dir for a step's output, published only if the step completes."""
        final = self.path(name, key)
        tmp = self.root / "steps" / f".tmp-{name}-{key}-{os.getpid()}"
        _rmtree(tmp)
        tmp.mkdir(parents=True)
        try:
            yield tmp
        except BaseException:
            _rmtree(tmp)
            raise
        if lineage:
            (tmp / LINEAGE).write_text(lineage + "\n")
        (tmp / COMPLETE).write_text(name + "\n")
        _rmtree(final)
        tmp.rename(final)

    def lineage(self, name: str, key: str) -> str:
        try:
            return (self.path(name, key) / LINEAGE).read_text().strip()
        except OSError:
            return ""

    def prune(self, name: str, keep: str, *, lineage: str | None = None) -> None:
        """Drop older outputs of a step so the cache does not grow without bound.

        With a lineage, only outputs of that line of builds (and unlabelled ones) go: a
        bookworm-openrc build must not throw away the bookworm-systemd image, nor the other
        way round.
        """
        for p in (self.root / "steps").glob(f"{name}-*"):
            if p.name == f"{name}-{keep}":
                continue
            other = self.lineage(name, p.name.removeprefix(f"{name}-"))
            if lineage is not None and other and other != lineage:
                continue
            _rmtree(p)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rmtree(p: Path) -> None:
    if p.exists() or p.is_symlink():
        from kairos.disk.mounts import unmount_below
        unmount_below(p)
        shutil.rmtree(p, ignore_errors=True)
