"""parse_reference: hosts, ports, tags, digests, and no registry host ever assumed."""

from __future__ import annotations

import pytest

from kairos.errors import EXIT_BAD_INPUT, BadInput
from kairos.oci.platform import Platform, parse_platform
from kairos.oci.reference import Reference, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, want", [
    ("registry.example.org/kairos/debian:v3.1.0",
     Reference("registry.example.org", "kairos/debian", "v3.1.0", None)),
    ("127.0.0.1:5000/os:v1", Reference("127.0.0.1:5000", "os", "v1", None)),
    ("localhost/a/b/c", Reference("localhost", "a/b/c", "latest", None)),
    ("localhost:5000/os", Reference("localhost:5000", "os", "latest", None)),
    ("[::1]:5000/os:v2", Reference("[::1]:5000", "os", "v2", None)),
    (f"reg.local/os@{DIGEST}", Reference("reg.local", "os", None, DIGEST)),
    (f"reg.local/os:v1@{DIGEST}", Reference("reg.local", "os", "v1", DIGEST)),
    ("reg.local/my-org/my_os.x:1.2.3-rc1+b", None),  # '+' is not allowed in a tag
])
def test_parse(text: str, want: Reference | None) -> None:
    if want is None:
        with pytest.raises(BadInput):
            parse_reference(text)
        return
    got = parse_reference(text)
    assert got == want
    assert got.reference == (want.digest or want.tag)
    assert parse_reference(str(got)) == got


def test_no_registry_host_is_refused_with_a_hint() -> None:
    with pytest.raises(BadInput) as exc:
        parse_reference("kairos/debian:v1")
    assert exc.value.exit_code == EXIT_BAD_INPUT
    assert "names no registry" in exc.value.message
    assert "HOST" in exc.value.hint and "default registry" in exc.value.hint


def test_default_registry_from_the_caller() -> None:
    assert parse_reference("kairos/debian:v1", default_registry="reg.corp:443") == \
        Reference("reg.corp:443", "kairos/debian", "v1", None)
    assert parse_reference("debian", default_registry="reg.corp") == \
        Reference("reg.corp", "debian", "latest", None)
    # A host in the reference wins over the default.
    assert parse_reference("other.org/os:v1", default_registry="reg.corp").registry == "other.org"


@pytest.mark.parametrize("text, what", [
    ("", "empty"),
    ("reg.local/Upper/case:v1", "invalid repository"),
    ("reg.local/os:bad tag", "invalid tag"),
    ("reg.local/os@sha256:1234", "invalid digest"),
    ("reg.local/os@md5:" + "ab" * 16, "invalid digest"),
    ("reg_local.x/os:v1", "invalid registry host"),
    ("reg.local/os/:v1", "invalid repository"),
])
def test_malformed(text: str, what: str) -> None:
    with pytest.raises(BadInput, match=what):
        parse_reference(text)


def test_with_reference() -> None:
    ref = parse_reference("reg.local/os:v1")
    assert str(ref.with_reference("v2")) == "reg.local/os:v2"
    assert ref.with_reference(DIGEST).reference == DIGEST


def test_platform() -> None:
    assert parse_platform("linux/amd64") == Platform("linux", "amd64")
    assert parse_platform("arm64") == Platform("linux", "arm64")
    assert str(parse_platform("linux/arm64/v8")) == "linux/arm64/v8"
    with pytest.raises(BadInput, match="invalid platform"):
        parse_platform("linux//")
