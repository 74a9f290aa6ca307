"""Key paths into a config tree: `users[0].name` for people, tuples for code.

One spelling is printed everywhere (diagnostics, `config show` sources, `config get`):
map keys joined by dots, list indices in brackets. `parse_path` also reads the kernel
command line's spellings `users.0.name` and `stages.boot[0].commands[0]`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from kairos.errors import BadInput

Key = str | int
KeyPath = tuple[Key, ...]

_INDEX = re.compile(r"\[(\d+)\]")


def format_path(path: Sequence[Key]) -> str:
    """("users", 0, "name") -> "users[0].name"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            if not part.isprintable():  # a key with a newline must not break the message
                part = repr(part)
            out += f".{part}" if out else part
    return out


def parse_path(text: str) -> list[Key]:
    """"users[0].name" or "users.0.name" -> ["users", 0, "name"] / ["users", "0", "name"].

    Bracket indices become ints; dotted digits stay strings, because they may be either a
    list index or a map key: `resolve` decides by the node it meets.
    """
    text = text.strip()
    if text.startswith("."):  # `kairos config get .install.device`, as with yq/jq
        text = text[1:]
    if not text:
        return []
    parts: list[Key] = []
    for segment in text.split("."):
        head, _, rest = segment.partition("[")
        rest = "[" + rest if rest else ""
        if "]" in head or (rest and _INDEX.sub("", rest)):
            raise BadInput(f"cannot read key path '{text}'",
                           "write indices as [0], e.g. users[0].name or users.0.name")
        if head:
            parts.append(head)
        elif not rest:
            raise BadInput(f"empty segment in key path '{text}'", "remove the doubled dot")
        parts.extend(int(m) for m in _INDEX.findall(rest))
    return parts


def resolve(data: Any, parts: Sequence[Key]) -> tuple[bool, Any]:
    """Follow `parts` into data; returns (found, value).

    At a map, a run of dotted segments may also name one key that itself contains dots
    (sysctl keys such as `net.core.rmem_max`): the longest such key wins.
    """
    node = data
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(node, list):
            if isinstance(part, int) or part.isdigit():
                index = int(part)
                if index >= len(node):
                    return False, None
                node = node[index]
                i += 1
                continue
            return False, None
        if not isinstance(node, dict):
            return False, None
        for j in range(len(parts), i, -1):
            chunk = parts[i:j]
            if all(isinstance(p, str) for p in chunk):
                key = ".".join(str(p) for p in chunk)
                if key in node:
                    node = node[key]
                    i = j
                    break
        else:
            return False, None
    return True, node
