"""Find and read stage files the way yip does.

Sources are directories (walked recursively, entries in lexical order, only .yaml/.yml) or
single files, all below `root`. Files with the #cloud-config header get the cloud-init key
mapping; files without it (Kairos's bundled /system/oem files) are plain stage files. A file
that cannot be read or parsed is a warning naming file and line, never an exception: a bad
file on a device must not stop it from booting.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kairos.stages.fields import DecimalInt
from kairos.stages.model import StageDoc, parse_doc

log = logging.getLogger("kairos.stages")

# Where Kairos looks for stage files, in order (image defaults, user config, persistent).
DEFAULT_DIRS: tuple[str, ...] = ("/system/oem", "/oem", "/usr/local/cloud-config")
EXTENSIONS = (".yaml", ".yml")

try:  # libyaml's parser when present: several times faster, which matters at boot
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]


class _Loader(_BaseLoader):
    """Safe YAML plus DecimalInt marking (see kairos.stages.fields.DecimalInt)."""


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    value: int = loader.construct_yaml_int(node)
    digits = str(node.value).replace("_", "").lstrip("+-")
    if digits.isdigit() and not (len(digits) > 1 and digits.startswith("0")):
        return DecimalInt(value)
    return value


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def is_cloud_config(text: str) -> bool:
    """yip's header test: `#cloud-config` before any non-comment line in the first 10."""
    for line in text.split("\n", 10)[:10]:
        header = line.rstrip()
        if header == "#cloud-config":
            return True
        if header == "" or header.startswith("#"):
            continue
        return False
    return False


def parse_yaml(text: str, source: str) -> tuple[Any, str | None]:
    """YAML data, or None and a one-line warning naming source and line."""
    try:
        return yaml.load(text, Loader=_Loader), None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        return None, (f"{source}{line}: invalid YAML ({problem}); file ignored "
                      "(fix the indentation or quoting on that line)")
    except yaml.YAMLError as exc:
        return None, f"{source}: invalid YAML ({exc}); file ignored"


def display_path(path: Path, root: Path) -> str:
    """The path as the device sees it (without the root prefix)."""
    try:
        return "/" + str(path.relative_to(root)).lstrip("/") if root != Path("/") else str(path)
    except ValueError:
        return str(path)


def load_file(path: Path, source: str) -> StageDoc:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        doc = StageDoc(source=source)
        doc.errors.append(f"{source}: cannot read ({exc.strerror}); file ignored")
        return doc
    return load_text(text, source)


def load_text(text: str, source: str) -> StageDoc:
    data, problem = parse_yaml(text, source)
    if problem:
        doc = StageDoc(source=source)
        doc.errors.append(problem)
        return doc
    return parse_doc(data, source, cloud_config=is_cloud_config(text))


def _walk(directory: Path) -> Iterator[Path]:
    """Files below a directory, depth first, entries in lexical order (Go's filepath.Walk)."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        log.warning("cannot list %s: %s", directory, exc.strerror)
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir():
            yield from _walk(path)
        elif entry.name.endswith(EXTENSIONS):
            yield path


def stage_files(root: Path, dirs: Sequence[str]) -> list[tuple[Path, str]]:
    """(host path, device path) of every stage file in `dirs` below `root`, in run order."""
    found: list[tuple[Path, str]] = []
    for entry in dirs:
        target = root / str(entry).lstrip("/")
        if target.is_dir():
            found.extend((p, display_path(p, root)) for p in _walk(target))
        elif target.is_file():
            found.append((target, display_path(target, root)))
        elif "://" in str(entry):
            log.warning("stage source %s: URLs are not supported here; skipped", entry)
        else:
            log.debug("stage source %s does not exist; skipped", entry)
    return found


@dataclass
class Loaded:
    docs: list[StageDoc] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def load_docs(root: Path, dirs: Sequence[str] | None,
              extra_docs: Sequence[tuple[str, dict[str, Any]]] = ()) -> Loaded:
    """All documents in run order: files from `dirs` (default DEFAULT_DIRS), then extra
    in-memory configs (treated as cloud-config: they come from merged user config)."""
    loaded = Loaded()
    for path, source in stage_files(root, DEFAULT_DIRS if dirs is None else dirs):
        doc = load_file(path, source)
        loaded.docs.append(doc)
    for source, data in extra_docs:
        loaded.docs.append(parse_doc(data, source, cloud_config=True))
    for doc in loaded.docs:
        loaded.errors.extend(doc.errors)
        loaded.warnings.extend(doc.warnings)
    return loaded
