"""What each slot image file holds: records in `state.yaml` at the root of COS_STATE and
COS_RECOVERY, in the shape of Kairos's (elemental's `InstallState`) plus our own fields.

A record says which image a file was made from (source, OCI digest, version, arch) and what
the file is (sha256, size, inode). Records are written once, *before* an upgrade renames
the slot files, and a power cut may land between any two renames. So a record is never
trusted for the role it was saved under: reading stats each slot file and takes the record
with the file's inode and size (a rename keeps the inode), whatever role it was saved
under. A record without an inode (0) matches the file of its own role when the size does.

Shape (Kairos's keys, then ours; one partition section per file, the partition's own):

    date: '2025-06-01T10:00:00Z'
    state:                          # recovery: on COS_RECOVERY
      label: COS_STATE
      active:                       # passive; recovery (COS_SYSTEM) on COS_RECOVERY
        source: oci:registry.example/kairos/debian:v1.3.0
        source-metadata: {digest: 'sha256:…'}
        label: COS_ACTIVE
        fs: squashfs
        version: v1.3.0
        arch: amd64
        sha256: …
        size: 412876800
        inode: 14
        date: '2025-06-01T09:58:12Z'
      passive: {…}
      kept:                         # images that lost their role but may still be on disk
      - {…}
    failed:                         # images that failed their boot assessment (newest last)
    - {image-id: …, digest: 'sha256:…', version: v1.4.0, sha256: …, source: …, date: …}

A record may also carry `image-id` (the image's id from its /boot/kairos-boot.cfg) and
`assessment` (`good` or `failed`: what the last boot assessment of that image said).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kairos.safefs import write_file_atomic

log = logging.getLogger("kairos.slotstate")

STATE_FILE = "state.yaml"  # at the partition's root, as Kairos keeps it
KEPT = "kept"
FAILED = "failed"  # top level: a section's rewrite by an upgrade keeps it
# Kairos's partition keys and image labels.
SECTIONS = {"COS_STATE": "state", "COS_RECOVERY": "recovery"}
ROLE_SECTION = {"active": "state", "passive": "state", "recovery": "recovery"}
ROLE_LABELS = {"active": "COS_ACTIVE", "passive": "COS_PASSIVE", "recovery": "COS_SYSTEM"}
MAX_STATE_FILE = 1 << 20


@dataclass
class ImageRecord:
    source: str  # "oci:reg/repo:tag", "dir:/path", "file:/path", "ocifile:/path"
    digest: str  # OCI manifest digest ("" when the source had none)
    sha256: str  # of the slot image file
    size: int  # of the slot image file
    version: str  # KAIROS_VERSION (or VERSION) from the image's /etc/kairos-release
    arch: str
    date: str  # ISO 8601 UTC, when the slot file was written
    inode: int = 0  # of the slot file on its partition; 0 = unknown
    fs: str = "squashfs"
    image_id: str = ""  # kairos_image_id of its /boot/kairos-boot.cfg; "" = unknown
    assessment: str = ""  # "good" or "failed" once a boot of it was assessed


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def section_for(label: str) -> str:
    """The partition key of a filesystem label (COS_STATE → state)."""
    return SECTIONS.get(label, label.lower().removeprefix("cos_"))


def record_file(path: Path, **fields: Any) -> ImageRecord:
    """A record of the file at `path`: size and inode from its stat, the rest from `fields`."""
    st = os.stat(path)
    fields = {**fields, "size": st.st_size, "inode": st.st_ino}
    return ImageRecord(**fields)


# -- YAML -----------------------------------------------------------------------------------


def _entry(rec: ImageRecord, label: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"source": rec.source}
    if rec.digest:
        out["source-metadata"] = {"digest": rec.digest}
    if label:
        out["label"] = label
    out.update(fs=rec.fs, version=rec.version, arch=rec.arch, sha256=rec.sha256,
               size=rec.size, inode=rec.inode, date=rec.date)
    # Ours, only when known: records of older agents keep their shape.
    if rec.image_id:
        out["image-id"] = rec.image_id
    if rec.assessment:
        out["assessment"] = rec.assessment
    return out


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise ValueError(f"not a number: {value!r}")


def _record(data: Any) -> ImageRecord | None:
    """One image entry of the file; None (and a warning) when it is not one."""
    if not isinstance(data, dict):
        return None
    meta = data.get("source-metadata")
    digest = meta.get("digest") if isinstance(meta, dict) else ""
    try:
        return ImageRecord(
            source=str(data.get("source") or ""), digest=str(digest or ""),
            sha256=str(data.get("sha256") or ""), size=_int(data.get("size") or 0),
            version=str(data.get("version") or ""), arch=str(data.get("arch") or ""),
            date=str(data.get("date") or ""), inode=_int(data.get("inode") or 0),
            fs=str(data.get("fs") or "squashfs"), image_id=str(data.get("image-id") or ""),
            assessment=str(data.get("assessment") or ""))
    except ValueError as exc:
        log.warning("ignoring a slot record in %s: %s", STATE_FILE, exc)
        return None


def parse(text: str, where: str = STATE_FILE) -> dict[str, Any]:
    """The document of a state file; {} (and a warning) when it is not one."""
    try:
        doc = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        log.warning("%s is not valid YAML%s: slot records ignored", where, at)
        return {}
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        log.warning("%s is not a YAML mapping: slot records ignored", where)
        return {}
    return doc


def read_doc(part_root: Path) -> dict[str, Any]:
    """The parsed state file at the root of a mounted partition; {} when there is none or it
    is unreadable (with a warning)."""
    path = part_root / STATE_FILE
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_STATE_FILE + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc.strerror or exc)
        return {}
    if len(raw) > MAX_STATE_FILE:
        log.warning("%s is larger than %d bytes: slot records ignored", path, MAX_STATE_FILE)
        return {}
    return parse(raw.decode("utf-8", errors="replace"), str(path))


def _section_entries(doc: Mapping[str, Any], section: str) -> list[tuple[str, ImageRecord]]:
    """(role, record) of a section: its role entries in file order, then its kept ones
    (role "")."""
    part = doc.get(section)
    if not isinstance(part, dict):
        return []
    out: list[tuple[str, ImageRecord]] = []
    for key, value in part.items():
        if key in ("label", KEPT):
            continue
        rec = _record(value)
        if rec is not None:
            out.append((str(key), rec))
    kept = part.get(KEPT)
    for value in kept if isinstance(kept, list) else []:
        rec = _record(value)
        if rec is not None:
            out.append(("", rec))
    return out


def _sections(doc: Mapping[str, Any]) -> list[str]:
    return [k for k, v in doc.items() if k != "date" and isinstance(v, dict)]


def records_of(doc: Mapping[str, Any]) -> list[ImageRecord]:
    return [rec for section in _sections(doc) for _role, rec in _section_entries(doc, section)]


def load(part_root: Path) -> list[ImageRecord]:
    """Every record in the partition's state file; [] when there is none or it is unreadable
    (never raises for a bad file: it logs a warning)."""
    return records_of(read_doc(part_root))


def render(label: str, roles: Mapping[str, ImageRecord], keep: Sequence[ImageRecord] = (),
           previous: Mapping[str, Any] | None = None) -> str:
    """The state file with the section of partition `label` replaced (other sections of
    `previous` are kept as they were)."""
    section = section_for(label)
    part: dict[str, Any] = {"label": label}
    for role, rec in roles.items():
        part[role] = _entry(rec, ROLE_LABELS.get(role, ""))
    kept: list[ImageRecord] = []
    for rec in keep:
        if rec not in kept and rec not in roles.values():
            kept.append(rec)
    if kept:
        part[KEPT] = [_entry(rec, None) for rec in kept]
    doc: dict[str, Any] = {"date": now()}
    replaced = False
    for key, value in (previous or {}).items():
        if key == "date":
            continue
        if key == section:
            doc[key], replaced = part, True
        else:
            doc[key] = value
    if not replaced:
        doc[section] = part
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def save(part_root: Path, label: str, roles: Mapping[str, ImageRecord],
         keep: Sequence[ImageRecord] = ()) -> None:
    """Write the records of partition `label` (COS_STATE, COS_RECOVERY) into its state file,
    atomically (temp file, fsync, rename, fsync of the directory)."""
    text = render(label, roles, keep, read_doc(part_root))
    write_file_atomic(part_root / STATE_FILE, text.encode(), mode=0o644)


# -- matching files to records ----------------------------------------------------------------

Stat = tuple[int, int]  # (inode, size)


def match(doc: Mapping[str, Any], stats: Mapping[str, Stat | None]) -> dict[str, ImageRecord | None]:
    """role → the record of the file with that (inode, size), None when the file is missing
    or no record describes it. Only the sections owning the roles are searched (inode numbers
    of another partition mean nothing here). The record returned carries the file's inode."""
    wanted = {ROLE_SECTION.get(role) for role in stats}
    sections = _sections(doc) if None in wanted else [s for s in _sections(doc) if s in wanted]
    entries = [e for section in sections for e in _section_entries(doc, section)]
    out: dict[str, ImageRecord | None] = {}
    for role, st in stats.items():
        if st is None:
            out[role] = None
            continue
        ino, size = st
        found = [(saved, rec) for saved, rec in entries
                 if rec.inode and rec.inode == ino and rec.size == size]
        pick = next((rec for saved, rec in found if saved == role), None)
        if pick is None and found:
            pick = found[0][1]
        if pick is None:
            pick = next((rec for saved, rec in entries
                         if saved == role and rec.inode == 0 and rec.size == size), None)
        out[role] = dataclasses.replace(pick, inode=ino) if pick is not None else None
    return out


def file_stat(path: Path) -> Stat | None:
    """(inode, size) of a regular file; None when there is none (a link is not followed)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_ino, st.st_size


def parse_debugfs_ls(text: str) -> dict[str, Stat]:
    """name → (inode, size) of the regular files in `debugfs -R "ls -p DIR"` output (lines
    `/inode/mode/uid/gid/name/size/`)."""
    found: dict[str, Stat] = {}
    for line in text.splitlines():
        parts = line.split("/")
        if len(parts) >= 7 and parts[1].isdigit() and parts[2].startswith("10"):
            found[parts[5]] = (int(parts[1]), int(parts[6] or 0))
    return found


def resolve(part_root: Path, files: Mapping[str, str]) -> dict[str, ImageRecord | None]:
    """role → record of the file, `files` mapping role → path relative to `part_root`
    (e.g. {"active": "cOS/active.img", "passive": "cOS/passive.img"})."""
    stats = {role: file_stat(part_root / rel) for role, rel in files.items()}
    return match(read_doc(part_root), stats)


# -- assessment: the failed list and a record's verdict ------------------------------------------


@dataclass(frozen=True)
class FailedImage:
    """An image that failed its boot assessment (GRUB gave up on it)."""

    image_id: str
    digest: str = ""
    version: str = ""
    sha256: str = ""
    source: str = ""
    date: str = ""  # when the failure was recorded

    def to_json(self) -> dict[str, str]:
        return {"image-id": self.image_id, "digest": self.digest, "version": self.version,
                "sha256": self.sha256, "source": self.source, "date": self.date}

    @classmethod
    def of(cls, rec: ImageRecord | None, image_id: str, date: str) -> FailedImage:
        if rec is None:
            return cls(image_id, date=date)
        return cls(image_id, rec.digest, rec.version, rec.sha256, rec.source, date)


def failed_images(doc: Mapping[str, Any]) -> list[FailedImage]:
    """The `failed` list of a state document (entries that are not maps are ignored)."""
    found = doc.get(FAILED)
    out: list[FailedImage] = []
    for item in found if isinstance(found, list) else []:
        if isinstance(item, dict) and (item.get("image-id") or item.get("digest")):
            out.append(FailedImage(*(str(item.get(k) or "") for k in (
                "image-id", "digest", "version", "sha256", "source", "date"))))
    return out


def load_failed(part_root: Path) -> list[FailedImage]:
    return failed_images(read_doc(part_root))


def find_failed(failed: Sequence[FailedImage], *, digest: str = "", image_id: str = ""
                ) -> FailedImage | None:
    """The entry with this digest or image id (empty values never match), or None."""
    return next((f for f in failed if (digest and f.digest == digest)
                 or (image_id and f.image_id == image_id)), None)


def is_listed(failed: Sequence[FailedImage], *, digest: str = "", image_id: str = "") -> bool:
    return find_failed(failed, digest=digest, image_id=image_id) is not None


def _write_doc(part_root: Path, doc: Mapping[str, Any]) -> None:
    out = {"date": now(), **{k: v for k, v in doc.items() if k != "date"}}
    text = yaml.safe_dump(out, sort_keys=False, default_flow_style=False)
    write_file_atomic(part_root / STATE_FILE, text.encode(), mode=0o644)


def add_failed(part_root: Path, entry: FailedImage) -> bool:
    """Append `entry` to the failed list unless its image id is there already; whether the
    file was written (atomically; the caller checkpoints)."""
    doc = read_doc(part_root)
    listed = failed_images(doc)
    if is_listed(listed, image_id=entry.image_id):
        return False
    _write_doc(part_root, {**doc, FAILED: [f.to_json() for f in [*listed, entry]]})
    return True


def drop_failed(part_root: Path, image_id: str) -> bool:
    """Take an image off the failed list (it has since been assessed good); whether the
    file was written."""
    doc = read_doc(part_root)
    listed = failed_images(doc)
    kept = [f for f in listed if f.image_id != image_id]
    if not image_id or len(kept) == len(listed):
        return False
    _write_doc(part_root, {**doc, FAILED: [f.to_json() for f in kept]})
    return True


def _same_image(a: ImageRecord, b: ImageRecord) -> bool:
    """Two records of one written file (one may lack the inode an install could not know)."""
    return (a.sha256, a.size, a.source, a.date) == (b.sha256, b.size, b.source, b.date)


def others(doc: Mapping[str, Any], label: str, roles: Mapping[str, ImageRecord]
           ) -> list[ImageRecord]:
    """The records of partition `label`'s section that are none of `roles` (images that lost
    their role, kept ones): what a rewrite of the section keeps as `kept`."""
    return [v for _r, v in _section_entries(doc, section_for(label))
            if not any(_same_image(v, c) for c in roles.values())]


def update_record(part_root: Path, label: str, files: Mapping[str, str], role: str,
                  **changes: Any) -> bool:
    """Change fields of the record of the file that has `role` (matched by inode, as
    `resolve`), keeping every other record of the section; whether the file was written
    (False: no record matches the file, or nothing changes)."""
    doc = read_doc(part_root)
    current = match(doc, {r: file_stat(part_root / rel) for r, rel in files.items()})
    rec = current.get(role)
    if rec is None:
        return False
    new = dataclasses.replace(rec, **changes)
    if new == rec:
        return False
    roles = {r: (new if r == role else v) for r, v in current.items() if v is not None}
    text = render(label, roles, others(doc, label, roles), doc)
    write_file_atomic(part_root / STATE_FILE, text.encode(), mode=0o644)
    return True
