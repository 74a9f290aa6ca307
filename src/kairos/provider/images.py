"""The image's container images (OCI archives listed in the manifest), imported into
containerd's k8s.io namespace once per archive digest.

Nothing is pulled from a registry: the pause image and every in-cluster image ship in the
OS image. containerd's store (/var/lib/containerd) is persistent, so an import lasts; the
record (/var/lib/kairos/k8s/images.json, persistent too) says which archive digest was
imported under which names. An unchanged archive (same size and mtime) is not even hashed;
an image whose name went missing from containerd (the kubelet's image garbage collection
under disk pressure) is imported again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kairos import safefs
from kairos.run import Result, run

log = logging.getLogger("kairos.provider")

RECORD = "/var/lib/kairos/k8s/images.json"
NAMESPACE = "k8s.io"
NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


@dataclass(frozen=True)
class Archive:
    path: str
    size: int
    mtime_ns: int
    sha256: str = ""  # filled only when it had to be hashed
    names: tuple[str, ...] = ()


def archive_names(path: Path) -> tuple[str, ...]:
    """The image names an OCI archive's index.json gives (full references only: a bare tag
    tells containerd nothing to name it by)."""
    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile("index.json")
            index: Any = json.loads(member.read()) if member is not None else {}
    except (OSError, KeyError, ValueError, tarfile.TarError):
        return ()
    names: list[str] = []
    for desc in index.get("manifests") or [] if isinstance(index, dict) else []:
        notes = desc.get("annotations") or {} if isinstance(desc, dict) else {}
        for key in NAME_ANNOTATIONS:
            name = notes.get(key)
            if isinstance(name, str) and ("/" in name or ":" in name) and name not in names:
                names.append(name)
                break
    return tuple(names)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def needs_import(archive: Archive, record: Mapping[str, Any], present: set[str]) -> bool:
    """Whether an archive (sha256 known) must be imported, given the record and the names
    containerd has now."""
    entry = record.get(archive.path)
    if not isinstance(entry, dict) or entry.get("sha256") != archive.sha256:
        return True
    return any(name not in present for name in entry.get("names") or [])


def unchanged(archive: Archive, record: Mapping[str, Any], present: set[str]) -> bool:
    """Whether the record vouches for an archive without hashing it."""
    entry = record.get(archive.path)
    return (isinstance(entry, dict) and entry.get("size") == archive.size
            and entry.get("mtime_ns") == archive.mtime_ns and bool(entry.get("sha256"))
            and all(name in present for name in entry.get("names") or []))


Ctr = Callable[..., Result]


def _ctr(socket: str, *args: str, runner: Ctr = run) -> Result:
    return runner(["ctr", f"--address={socket}", "--namespace", NAMESPACE, *args])


def ensure_images(root: Path, images: Sequence[str], socket: str,
                  runner: Ctr = run) -> list[str]:
    """Import what is not imported yet; the archives imported."""
    raw = safefs.read_bytes(root, RECORD)
    try:
        record: dict[str, Any] = json.loads(raw) if raw else {}
    except ValueError:
        record = {}
    before = json.dumps(record, sort_keys=True)
    listing = _ctr(socket, "images", "ls", "-q", runner=runner).stdout
    present = {line.strip() for line in listing.splitlines() if line.strip()}
    imported: list[str] = []
    for path in images:
        host = root / path.lstrip("/")
        try:
            st = host.stat()
        except FileNotFoundError:
            log.warning("the image archive %s is missing", path)
            continue
        archive = Archive(path, st.st_size, st.st_mtime_ns)
        if unchanged(archive, record, present):
            continue
        archive = Archive(path, st.st_size, st.st_mtime_ns, sha256_file(host),
                          archive_names(host))
        if needs_import(archive, record, present):
            log.info("importing %s into containerd", path)
            _ctr(socket, "images", "import", str(host), runner=runner)
            imported.append(path)
        record[path] = {"size": archive.size, "mtime_ns": archive.mtime_ns,
                        "sha256": archive.sha256, "names": list(archive.names)}
    if json.dumps(record, sort_keys=True) != before:
        safefs.write_atomic(root, RECORD, (json.dumps(record, indent=1, sort_keys=True)
                                           + "\n").encode(), mode=0o644, create_parents=True)
    return imported
