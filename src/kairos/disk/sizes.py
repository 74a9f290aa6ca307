"""Sizes as people write them (`8G`, `8GiB`, `4096M`) and back; binary units throughout."""

from __future__ import annotations

import re

from kairos.errors import BadInput

MiB = 1024 * 1024
GiB = 1024 * MiB

_UNITS = {"": 1, "b": 1, "k": 1024, "m": MiB, "g": GiB, "t": 1024 * GiB}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes for `8G`, `8GiB`, `8gb`, `4096M`, `512K` or a plain byte count.

    K/M/G/T are binary (as qemu-img and truncate read them), with or without `iB`/`B`.
    """
    match = _SIZE_RE.match(text)
    if not match:
        raise BadInput(f"cannot read the size {text!r}", "write it like 8G, 8GiB or 4096M")
    number, unit = match.groups()
    value = float(number) * _UNITS[unit.lower()]
    if value != int(value):
        raise BadInput(f"the size {text!r} is not a whole number of bytes",
                       "write it like 8G or 4096M")
    if value <= 0:
        raise BadInput(f"the size {text!r} must be larger than zero", "write it like 8G")
    return int(value)


def mib_ceil(size: int | float) -> int:
    """Whole MiB needed to hold `size` bytes."""
    return int(-(-size // MiB))


def format_size(size: int) -> str:
    """The shortest exact form parse_size reads back: `8G`, `4100M`, `1536K` or bytes."""
    for suffix, unit in (("T", 1024 * GiB), ("G", GiB), ("M", MiB), ("K", 1024)):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)
