"""Coercion of raw YAML payload values into typed fields, with errors that say where.

Stage files are written by people and by Go tools that accept loose types (a number where a
string is expected, a single string where a list is), so these helpers accept what yip accepts
and reject the rest with a PayloadError naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kairos.errors import BadInput


class PayloadError(BadInput):
    """A step's plugin payload has the wrong shape."""


def as_str(value: Any, where: str, default: str = "") -> str:
    if value is None:
        return default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise PayloadError(f"{where}: expected a string, got {type(value).__name__}")


def as_bool(value: Any, where: str, default: bool = False) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no",
                                                     "off", "0", ""):
        return value.lower() in ("true", "yes", "on", "1")
    if isinstance(value, int):
        return value != 0
    raise PayloadError(f"{where}: expected true or false, got {value!r}")


def as_int(value: Any, where: str, default: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise PayloadError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 0) if value.strip().startswith("0x") else int(value)
        except ValueError:
            pass
    raise PayloadError(f"{where}: expected a number, got {value!r}")


def as_mode(value: Any, where: str, *, string_is_octal: bool = True) -> int | None:
    """A file mode: YAML `0644` arrives as the int 420 already; a string is read as octal."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PayloadError(f"{where}: expected a file mode such as 0644, got {value!r}")
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        try:
            mode = int(text, 8) if string_is_octal else int(text)
        except ValueError:
            raise PayloadError(f"{where}: expected a file mode such as 0644, got {value!r}") from None
    else:
        raise PayloadError(f"{where}: expected a file mode such as 0644, got {value!r}")
    if not 0 <= mode <= 0o7777:
        raise PayloadError(f"{where}: file mode {value!r} is out of range (write it as 0644)")
    return mode


def as_str_list(value: Any, where: str) -> list[str]:
    """A list of strings; a single string becomes a one-item list, null an empty list."""
    if value is None:
        return []
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, list):
        out: list[str] = []
        for i, item in enumerate(value):
            if item is None:
                continue
            out.append(as_str(item, f"{where}[{i}]"))
        return out
    raise PayloadError(f"{where}: expected a list of strings, got {type(value).__name__}")


def as_map(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    raise PayloadError(f"{where}: expected a mapping, got {type(value).__name__}")


def as_str_map(value: Any, where: str) -> dict[str, str]:
    """A mapping of string to string (YAML numbers and booleans are written as text)."""
    return {k: as_str(v, f"{where}.{k}") for k, v in as_map(value, where).items()}


def as_map_list(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list):
        raise PayloadError(f"{where}: expected a list of mappings, got {type(value).__name__}")
    return [as_map(item, f"{where}[{i}]") for i, item in enumerate(value) if item is not None]


class DecimalInt(int):
    """An int the YAML text wrote in plain decimal (`644`, not `0644`).

    Cloud-init's write_files reads permissions as octal text, so `644` there means 0o644;
    our YAML loader marks such ints so that one field can read them the same way.
    """


def as_cloudinit_mode(value: Any, where: str) -> int | None:
    if isinstance(value, DecimalInt):
        return as_mode(str(int(value)), where)
    return as_mode(value, where)
