"""Version tags newest first, pre-releases only when asked, Kairos flavour suffixes."""

from __future__ import annotations

import random

from kairos.oci.semver import parse_version, sort_tags


def test_parse() -> None:
    v = parse_version("v1.2.3-rc1+build.5")
    assert v is not None and (v.major, v.minor, v.patch, v.pre, v.build) == (1, 2, 3, "rc1",
                                                                             "build.5")
    k = parse_version("v3.1.0-core-amd64-generic")
    assert k is not None and not k.prerelease and k.variant == "core-amd64-generic"
    short = parse_version("2.1")
    assert short is not None and (short.major, short.minor, short.patch) == (2, 1, 0)
    for bad in ("latest", "main", "v", "1.2.3.4", "01.2.3", "sha256-abc.sig", "bookworm"):
        assert parse_version(bad) is None, bad


def test_sort_newest_first_without_prereleases() -> None:
    tags = ["v1.2.3", "1.10.0", "v1.9.9", "latest", "v1.10.0-rc1", "v2.0.0-beta.2",
            "v0.9.0", "v1.2.10"]
    random.Random(3).shuffle(tags)
    assert sort_tags(tags) == ["1.10.0", "v1.9.9", "v1.2.10", "v1.2.3", "v0.9.0"]


def test_prereleases_on_request_and_ordering() -> None:
    tags = ["v1.0.0", "v1.0.0-rc2", "v1.0.0-rc10", "v1.0.0-rc.1", "v1.0.0-alpha",
            "v1.0.0-beta.2", "v0.9.0"]
    assert sort_tags(tags, pre=True) == [
        "v1.0.0", "v1.0.0-rc10", "v1.0.0-rc2", "v1.0.0-rc.1", "v1.0.0-beta.2",
        "v1.0.0-alpha", "v0.9.0"]


def test_kairos_flavour_tags_are_releases() -> None:
    tags = ["v3.1.0-core-amd64-generic", "v3.0.2-core-amd64-generic",
            "v3.1.1-rc1-core-amd64-generic", "v3.1.0-k3sv1.30.2-k3s1", "v3.1.0"]
    assert sort_tags(tags) == ["v3.1.0-k3sv1.30.2-k3s1", "v3.1.0-core-amd64-generic", "v3.1.0",
                               "v3.0.2-core-amd64-generic"]
    assert sort_tags(tags, pre=True)[0] == "v3.1.1-rc1-core-amd64-generic"
