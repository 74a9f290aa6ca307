"""Sizes as people write them."""

from __future__ import annotations

import pytest

from kairos.disk.sizes import GiB, MiB, format_size, mib_ceil, parse_size
from kairos.errors import BadInput


@pytest.mark.parametrize(("text", "size"), [
    ("8G", 8 * GiB), ("8GiB", 8 * GiB), ("8gb", 8 * GiB), ("4096M", 4096 * MiB),
    ("4096MiB", 4096 * MiB), ("512K", 512 * 1024), ("1T", 1024 * GiB), ("1.5G", 1536 * MiB),
    ("1048576", MiB), (" 2 G ", 2 * GiB),
])
def test_parse(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "eight", "8X", "-1G", "0", "0.3K", "8 G B"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(BadInput):
        parse_size(text)


@pytest.mark.parametrize(("size", "text"), [
    (8 * GiB, "8G"), (4100 * MiB, "4100M"), (1536 * 1024, "1536K"), (1000, "1000"),
])
def test_format_round_trips(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size


def test_mib_ceil() -> None:
    assert mib_ceil(0) == 0
    assert mib_ceil(1) == 1
    assert mib_ceil(MiB) == 1
    assert mib_ceil(MiB + 1) == 2
