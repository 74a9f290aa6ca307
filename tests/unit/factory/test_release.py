from __future__ import annotations

import pytest

from kairos.envfile import parse_env
from kairos.errors import BadInput
from kairos.factory.release import Release, normalize_version


@pytest.mark.parametrize("given,want", [("1.2.3", "v1.2.3"), ("v0.1.0", "v0.1.0"),
                                        ("1.0.0-rc.1+build5", "v1.0.0-rc.1+build5")])
def test_versions(given: str, want: str) -> None:
    assert normalize_version(given) == want


@pytest.mark.parametrize("bad", ["1.2", "latest", "01.2.3", "v1.2.3.4", ""])
def test_bad_versions(bad: str) -> None:
    with pytest.raises(BadInput):
        normalize_version(bad)


def test_release_file_has_the_kairos_keys() -> None:
    rel = Release(version="v1.2.3", flavor="debian", flavor_release="12")
    parsed = parse_env(rel.render())
    for key in ("KAIROS_ID", "KAIROS_NAME", "KAIROS_VERSION", "KAIROS_FLAVOR",
                "KAIROS_FLAVOR_RELEASE", "KAIROS_VARIANT", "KAIROS_ARCH", "KAIROS_MODEL",
                "KAIROS_FAMILY", "KAIROS_RELEASE", "KAIROS_TARGETARCH", "KAIROS_ID_LIKE"):
        assert key in parsed, key
    assert parsed["KAIROS_ID"] == "kairos"
    assert parsed["KAIROS_VERSION"] == "v1.2.3"
    assert parsed["KAIROS_NAME"] == "kairos-core-debian-12"
    assert parsed["KAIROS_VARIANT"] == "core"
    assert parsed["KAIROS_MODEL"] == "generic"
    # every line is shell-readable KEY="value"
    for line in rel.render().splitlines():
        key, _, value = line.partition("=")
        assert key.isupper() and value.startswith('"') and value.endswith('"')
