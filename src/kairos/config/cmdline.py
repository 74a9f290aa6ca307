"""Cloud-config from the kernel command line (K:sdk/machine/bootcmdline.go).

Tokens read, in order (later tokens win on the same key):
- `kairos.config=KEY=VALUE`: KEY is a path, dotted and/or indexed: `users.0.name=kairos`,
  `stages.boot[0].commands[0]=x`; a bare `kairos.config=install.auto` means true.
- `kairos.config_url=URL` and the legacy `cos.setup=URL` (or `cos.setup=KEY=VALUE`).
- any other `KEY=VALUE` (or bare `KEY`) whose first segment is a top-level key of the
  schema, e.g. `install.device=/dev/vda`, `config_url=…`, `debug`. Kernel options such as
  `console=`, `root=`, `quiet` are not Kairos keys and are ignored.
Kairos-owned tokens win over generic ones on the same key, as in Kairos.

Values are read as YAML scalars: true/false, decimal integers and floats become those
types; everything else (including `0755`, `null`, `~`) stays a string.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from kairos.config.merge import merge
from kairos.config.paths import Key, parse_path
from kairos.config.schema import top_level_keys
from kairos.errors import BadInput

_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
          "FALSE": False}
MAX_INDEX = 1000  # `users.99999999.name=x` must not allocate a huge list

_CONFIG = "kairos.config="
_CONFIG_URL = "kairos.config_url="
_COS_SETUP = "cos.setup="


def scalar(text: str) -> Any:
    """A command-line value as YAML would read it, limited to bools and numbers."""
    if text in _BOOLS:
        return _BOOLS[text]
    if _INT.fullmatch(text) and len(text) < 20:
        return int(text)
    if _FLOAT.fullmatch(text) and len(text) < 40:
        return float(text)
    return text


def _tokens(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:  # an unbalanced quote: Kairos's shlex fails too; be lenient
        return text.split()


def _set_path(node: Any, parts: list[Key], value: Any) -> Any:
    """Write value at parts below node, creating maps and lists; returns the new node."""
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    index = head if isinstance(head, int) else int(head) if head.isdigit() else None
    if index is not None:
        if index > MAX_INDEX:
            raise BadInput(f"list index {index} is too large", f"use indices below {MAX_INDEX}")
        items = node if isinstance(node, list) else []
        while len(items) <= index:
            items.append(None)
        items[index] = _set_path(items[index], rest, value)
        return items
    mapping = node if isinstance(node, dict) else {}
    mapping[str(head)] = _set_path(mapping.get(str(head)), rest, value)
    return mapping


def _apply(root: dict[str, Any], payload: str) -> None:
    key, eq, raw = payload.partition("=")
    key = key.strip('"')
    if not key:
        return
    try:
        parts = parse_path(key)
    except BadInput:
        return  # an unreadable path on the kernel command line is skipped, not fatal
    if not parts:
        return
    value = scalar(raw.strip('"')) if eq else True
    first = str(parts[0])  # the top level is always a map
    try:
        root[first] = _set_path(root.get(first), parts[1:], value)
    except BadInput:
        return


def parse_cmdline(text: str) -> dict[str, Any]:
    """The cloud-config given on a kernel command line (empty dict if none)."""
    known = top_level_keys()
    generic: dict[str, Any] = {}
    owned: dict[str, Any] = {}
    for token in _tokens(text):
        if token.startswith(_CONFIG_URL):
            url = token[len(_CONFIG_URL):].strip('"')
            if url:
                owned["config_url"] = url
        elif token.startswith(_CONFIG):
            _apply(owned, token[len(_CONFIG):])
        elif token.startswith(_COS_SETUP):
            payload = token[len(_COS_SETUP):]
            if "=" in payload:
                _apply(owned, payload)
            elif payload.strip('"'):
                owned["config_url"] = payload.strip('"')
        else:
            first = re.split(r"[.=\[]", token.strip('"'), maxsplit=1)[0]
            if first in known:
                _apply(generic, token)
    if not owned:
        return generic
    try:  # Kairos-owned stanzas are merged over the generic ones
        result = merge(generic, owned, "cmdline", "cmdline")
    except BadInput:  # e.g. `install=x` and `kairos.config=install.auto`: the owned one wins
        result = {**generic, **owned}
    return result if isinstance(result, dict) else {}
