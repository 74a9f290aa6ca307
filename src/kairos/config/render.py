"""Print a merged config as YAML with `# source` comments (what `kairos config show` prints).

A key's comment names the source that set it; children inherit their parent's comment and
get their own only where the source differs, so one file's block carries one comment. The
output reads back (yaml.safe_load) to exactly the same data.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from kairos.config.paths import KeyPath, format_path
from kairos.config.yamlsrc import resolves_as_string

HEADER = "#cloud-config"
_BAD_IN_BLOCK = set("\r\x85\u2028\u2029\ufeff")
MAX_KEY = 1000  # YAML forbids implicit keys over 1024 characters


def scalar_text(value: Any) -> str:
    """One value as YAML text on one line (or `|` block marker + lines for long text)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return yaml.safe_dump(value).split("\n", 1)[0]
    text = str(value)
    plain = yaml.safe_dump(text, width=2**30, allow_unicode=True)
    plain = plain.removesuffix("\n...\n").removesuffix("\n")
    one_line = not any(ch in plain for ch in "\n\r\x85\u2028\u2029")
    if one_line and (plain[:1] in ("'", '"') or resolves_as_string(plain)):
        return plain
    quoted = yaml.safe_dump(text, width=2**30, allow_unicode=True, default_style='"')
    return quoted.removesuffix("\n")


def _block(text: str, indent: int) -> list[str] | None:
    """Multi-line text as a literal block (`|` / `|-`), when that is exact; else None."""
    if "\n" not in text or text.endswith("\n\n") or _BAD_IN_BLOCK & set(text):
        return None
    body = text[:-1] if text.endswith("\n") else text
    lines = body.split("\n")
    if not lines[0] or lines[0][0] in " \t" or any(ln != ln.rstrip() for ln in lines):
        return None
    if any(not ch.isprintable() and ch != "\t" for ch in body.replace("\n", "")):
        return None
    pad = " " * indent
    marker = "|" if text.endswith("\n") else "|-"
    return [marker] + [pad + ln if ln else "" for ln in lines]


def _printable(text: str) -> str:
    """Text safe inside a YAML comment (one line, printable characters)."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


class _Renderer:
    def __init__(self, sources: dict[str, str]) -> None:
        self.sources = sources
        self.lines: list[str] = []
        self.noted: list[bool] = []  # whether each line already ends in a comment

    def emit(self, line: str, noted: bool) -> None:
        self.lines.append(line)
        self.noted.append(noted)

    def comment(self, path: KeyPath, inherited: str | None) -> tuple[str, str | None]:
        src = self.sources.get(format_path(path))
        if src and src != inherited:
            return "  # " + _printable(src), src
        return "", inherited

    def value(self, lead: str, value: Any, path: KeyPath, indent: int,
              inherited: str | None, item: bool = False) -> None:
        """Emit `lead` ("key:" or "-", indented) followed by the value.

        A list item that is a map or list starts on the dash's line (`- name: x`).
        """
        note, src = self.comment(path, inherited)
        if isinstance(value, dict | list) and value:
            child = _Renderer(self.sources)
            if isinstance(value, dict):
                child.mapping(value, path, indent + 2, src)
            else:
                child.sequence(value, path, indent + 2, src)
            if item and not (note and child.noted[0]):
                self.emit(f"{lead} {child.lines[0][indent + 2:]}{note}", bool(note)
                          or child.noted[0])
                start = 1
            else:
                self.emit(lead + note, bool(note))
                start = 0
            self.lines.extend(child.lines[start:])
            self.noted.extend(child.noted[start:])
        elif isinstance(value, dict | list):
            self.emit(f"{lead} {'{}' if isinstance(value, dict) else '[]'}{note}", bool(note))
        else:
            block = _block(value, indent + 2) if isinstance(value, str) else None
            if block:
                self.emit(f"{lead} {block[0]}{note}", bool(note))
                for line in block[1:]:
                    self.emit(line, False)
            else:
                self.emit(f"{lead} {scalar_text(value)}{note}", bool(note))

    def mapping(self, data: dict[str, Any], path: KeyPath, indent: int,
                inherited: str | None) -> None:
        pad = " " * indent
        for key, item in data.items():
            self.value(f"{pad}{scalar_text(key)}:", item, (*path, key), indent, inherited)

    def sequence(self, items: list[Any], path: KeyPath, indent: int,
                 inherited: str | None) -> None:
        pad = " " * indent
        for index, item in enumerate(items):
            self.value(f"{pad}-", item, (*path, index), indent, inherited, item=True)


def _long_keys(value: Any) -> bool:
    if isinstance(value, dict):
        return any(len(str(k)) > MAX_KEY or _long_keys(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_long_keys(v) for v in value)
    return False


def render_yaml(data: dict[str, Any], sources: dict[str, str] | None = None,
                files: list[str] | None = None) -> str:
    """`#cloud-config`, a `# Sources:` list, then the data with per-key source comments."""
    out = [HEADER, ""]
    if files:
        out += ["# Sources:", *[f"# - {_printable(f)}" for f in files], ""]
    if not data:
        return "\n".join([*out, "{}", ""])
    if _long_keys(data):  # YAML cannot write such keys inline: plain dump, no comments
        return "\n".join(out) + "\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    renderer = _Renderer(sources or {})
    renderer.mapping(data, (), 0, None)
    return "\n".join(out + renderer.lines) + "\n"
