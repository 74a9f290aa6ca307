"""Pure pieces of the registry client: Link pagination, platform choice, error bodies."""

from __future__ import annotations

import pytest

from kairos.errors import BadInput
from kairos.oci.media import Descriptor
from kairos.oci.platform import parse_platform, pick_platform
from kairos.oci.reference import parse_reference
from kairos.oci.registry import _next_link
from kairos.oci.transport import error_detail

REF = parse_reference("reg.local/os:v1")


def desc(n: int, **platform: str) -> Descriptor:
    return Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + f"{n:x}" * 64,
                      1, platform=platform or None)


def test_next_link() -> None:
    base = "https://reg.local/v2/os/tags/list?n=2"
    assert _next_link('</v2/os/tags/list?n=2&last=b>; rel="next"', base) == \
        "https://reg.local/v2/os/tags/list?n=2&last=b"
    assert _next_link('<https://other/x>; rel=next', base) == "https://other/x"
    assert _next_link('</a>; rel="prev"', base) is None
    assert _next_link(None, base) is None


def testpick_platform() -> None:
    entries = [desc(1, os="linux", architecture="arm64", variant="v8"),
               desc(2, os="unknown", architecture="unknown"),  # an attestation
               desc(3, os="linux", architecture="amd64")]
    assert pick_platform(entries, parse_platform("linux/amd64"), REF)[0] == entries[2]
    assert pick_platform(entries, parse_platform("linux/arm64"), REF)[0] == entries[0]
    with pytest.raises(BadInput, match="no linux/riscv64 image") as exc:
        pick_platform(entries, parse_platform("linux/riscv64"), REF)
    assert exc.value.hint.startswith("it has: linux/amd64, linux/arm64/v8;")


def test_error_detail() -> None:
    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
    assert error_detail(body) == "MANIFEST_UNKNOWN: manifest unknown"
    assert error_detail(b"<html>") == ""
