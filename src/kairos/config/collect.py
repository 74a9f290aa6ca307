"""Collect the cloud-config of a machine: Kairos's directories, then the kernel command line.

Sources, in merge order (later wins): every `.yaml`/`.yml` file under /run/initramfs/live,
/etc/kairos, /usr/local/cloud-config and /oem (Kairos's code order; each tree walked in
lexical order), then the kernel command line. A file counts only with a #cloud-config
header (or the legacy #kairos-config / #node-config) in its first 10 lines and at most
1 MiB. A source's `config_url` is fetched (recursively) and merged over that source before
the source joins the result, so later sources still win. Problems with one source are
warnings and never stop collection; only a merge conflict (a map in one source, a list in
another) is an error, as in Kairos.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kairos.boot.live import LIVE_DIR
from kairos.config.cmdline import parse_cmdline
from kairos.config.diagnostic import WARNING, Diagnostic
from kairos.config.fetch import RETRY_DELAY, fetch_text
from kairos.config.merge import Layer, merge_layer, merge_layers
from kairos.config.paths import KeyPath, format_path, parse_path, resolve
from kairos.config.yamlsrc import (
    YamlDocument,
    YamlError,
    has_header,
    load_yaml_document,
    read_text,
)
from kairos.errors import KairosError

log = logging.getLogger("kairos.config")

# The first is the live medium (boot/live.py): the ISO's /config.yaml and oem/ directory.
CONFIG_DIRS: tuple[str, ...] = (str(LIVE_DIR), "/etc/kairos", "/usr/local/cloud-config", "/oem")
EXTENSIONS = (".yaml", ".yml")
MAX_FILE_SIZE = 1 << 20  # 1 MiB
MAX_URL_CHAIN = 10  # config_url pointing to config_url …: stop a loop or a runaway chain
CMDLINE = "cmdline"


@dataclass
class MergedConfig:
    """The merged cloud-config and where each part of it came from."""

    data: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # "users[0].name" -> source
    files: list[str] = field(default_factory=list)  # merged sources in order: files, URLs, cmdline
    warnings: list[Diagnostic] = field(default_factory=list)

    def get(self, path: str, default: Any = None) -> Any:
        """The value at a dotted/indexed path (`install.device`, `users[0].name`)."""
        found, value = resolve(self.data, parse_path(path))
        return value if found else default


def _walk(directory: Path) -> Iterator[Path]:
    """Files below directory in lexical order, subdirectories in place (Go's filepath.Walk)."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(Path(entry.path))
            elif entry.is_file():
                yield Path(entry.path)
        except OSError:
            continue


def config_files(root: Path, dirs: Sequence[str] | None = None) -> list[Path]:
    """Every file the collector looks at, in merge order."""
    found: list[Path] = []
    for d in CONFIG_DIRS if dirs is None else dirs:
        found.extend(_walk(root / d.lstrip("/")))
    return found


class _Collector:
    def __init__(self, fetch: bool, validate: bool, fetcher: Callable[[str], str]) -> None:
        self.fetch = fetch
        self.validate = validate
        self.fetcher = fetcher
        self.result = MergedConfig()
        self.data: dict[str, Any] = {}
        self.sources: dict[KeyPath, str] = {}

    def warn(self, file: str, message: str, hint: str = "", line: int = 0,
             column: int = 0) -> None:
        log.debug("%s: %s", file, message)
        self.result.warnings.append(Diagnostic(WARNING, file, line, column, "", message, hint))

    def load(self, text: str, name: str) -> YamlDocument | None:
        """A document whose top level is a map, or None with a warning."""
        try:
            doc = load_yaml_document(text, name)
        except YamlError as exc:
            self.warn(name, f"skipped: {exc.problem}", exc.hint, exc.line, exc.column)
            return None
        if doc.data is None:
            doc.data = {}
        if not isinstance(doc.data, dict):
            line, col = doc.position(())
            self.warn(name, "skipped: the top level is not a map of keys",
                      "start with keys such as users:, install: or stages:", line, col)
            return None
        if self.validate:
            from kairos.config.validate import validate_document  # jsonschema only if asked

            self.result.warnings.extend(validate_document(doc))
        return doc

    def read_file(self, path: Path) -> YamlDocument | None:
        name = str(path)
        if not path.name.endswith(EXTENSIONS):
            return None
        try:
            size = path.stat().st_size
        except OSError as exc:
            self.warn(name, f"skipped: {exc.strerror or exc}")
            return None
        if size > MAX_FILE_SIZE:
            self.warn(name, f"skipped: larger than {MAX_FILE_SIZE // 2**20} MiB ({size} bytes)",
                      "split it into smaller files")
            return None
        try:
            text = read_text(path)
        except YamlError as exc:
            self.warn(name, f"skipped: {exc.problem}", exc.hint, exc.line, exc.column)
            return None
        except KairosError as exc:
            self.warn(name, f"skipped: {exc.message}", exc.hint)
            return None
        if not has_header(text):
            self.warn(name, "skipped: no #cloud-config header in its first 10 lines",
                      "add '#cloud-config' as the first line")
            return None
        return self.load(text, name)

    def with_config_url(self, layer: Layer, seen: frozenset[str]) -> Layer:
        """The layer with its config_url chain fetched and merged over it."""
        url = layer.data.get("config_url")
        if not self.fetch or not isinstance(url, str) or not url.strip():
            return layer
        origin = layer.source_of(("config_url",))
        if "{{" in url:
            self.warn(origin, f"config_url not fetched: templates are not rendered ({url})",
                      "write the URL out in full")
            return layer
        if url in seen or len(seen) >= MAX_URL_CHAIN:
            self.warn(origin, f"config_url not fetched: {url} is already in the chain "
                      f"({' -> '.join(sorted(seen))})", "remove the loop of config_url values")
            return layer
        try:
            text = self.fetcher(url)
        except KairosError as exc:
            self.warn(origin, f"config_url not fetched: {exc.message}", exc.hint)
            return layer
        if not has_header(text):
            self.warn(url, "config_url ignored: no #cloud-config header in its first 10 lines",
                      "serve the file with '#cloud-config' as its first line")
            return layer
        doc = self.load(text, url)
        if doc is None:
            return layer
        self.result.files.append(url)
        remote = self.with_config_url(Layer.single(doc.data, url), seen | {url})
        return merge_layers(layer, remote)

    def add(self, data: dict[str, Any], source: str) -> None:
        self.result.files.append(source)
        layer = self.with_config_url(Layer.single(data, source), frozenset())
        merged = merge_layer(self.data, self.sources, layer)
        self.data = merged if isinstance(merged, dict) else {}

    def finish(self) -> MergedConfig:
        self.result.data = self.data
        self.result.sources = {format_path(path): src for path, src in self.sources.items()
                               if path}
        return self.result


def read_cmdline(root: Path) -> str:
    """root/proc/cmdline, or "" when there is none (a chroot, a test root)."""
    try:
        return (root / "proc/cmdline").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def collect(root: Path = Path("/"), cmdline: str | None = None,
            dirs: Sequence[str] | None = None, fetch: bool = True, *,
            validate: bool = False, retry_delay: float = RETRY_DELAY,
            fetcher: Callable[[str], str] | None = None) -> MergedConfig:
    """Merge every cloud-config source of the system at `root`.

    cmdline: the kernel command line (None: read root/proc/cmdline; "": none).
    dirs: config directories relative to root (default: Kairos's four, in Kairos's order).
    fetch: follow config_url. validate: add schema findings of each source to `warnings`.
    retry_delay / fetcher: how config_url is fetched (tests pass 0 or a fake).
    Raises MergeConflict (BadInput) when two sources give one key different shapes.
    """
    root = Path(root)
    if fetcher is None:
        def fetcher(url: str) -> str:
            return fetch_text(url, delay=retry_delay)

    collector = _Collector(fetch, validate, fetcher)
    for path in config_files(root, dirs):
        doc = collector.read_file(path)
        if doc is not None:
            collector.add(doc.data, doc.name)
    text = read_cmdline(root) if cmdline is None else cmdline
    from_cmdline = parse_cmdline(text) if text.strip() else {}
    if from_cmdline:
        collector.add(from_cmdline, CMDLINE)
    return collector.finish()
