"""`kairos upgrade list-releases`: the versions a registry has for an image, newest first."""

from __future__ import annotations

from pathlib import Path

from kairos.errors import BadInput
from kairos.oci.reference import Reference, parse_reference
from kairos.oci.registry import RegistryClient
from kairos.oci.semver import parse_version, sort_tags

# Source prefixes an image may carry (upgrade.source is written `oci:REF`; Kairos also
# writes `docker:` and `oci://`).
PREFIXES = ("oci:", "docker:", "container:")


def repository(image: str) -> Reference:
    """The repository `image` names (`oci:` prefix allowed; a tag or digest is ignored)."""
    text = image.strip()
    for prefix in PREFIXES:
        if text.startswith(prefix):
            text = text.removeprefix(prefix).removeprefix("//")
            break
    if not text:
        raise BadInput("no image given", "give a repository, e.g. --image registry.example/kairos/os")
    return parse_reference(text)


def list_releases(image: str, *, pre: bool = False, all_tags: bool = False,
                  auth_file: Path | None = None, insecure: bool = False) -> list[str]:
    """The repository's version tags, semver-sorted newest first; pre-releases only with
    `pre`; with `all_tags`, the tags that are not versions (`latest`, `main`) follow,
    alphabetically. `image` is a repository reference: a tag or digest in it is ignored."""
    ref = repository(image)
    client = RegistryClient(auth_file=auth_file, insecure={ref.registry} if insecure else (),
                            progress=False)
    tags = client.list_tags(ref)
    found = sort_tags(tags, pre=pre)
    if all_tags:
        found += sorted({t for t in tags if parse_version(t) is None})
    return found
