"""Platforms (OS/architecture/variant) of OCI images, and picking the device's from an index."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kairos.errors import BadInput
from kairos.oci.media import Descriptor
from kairos.oci.reference import Reference


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def parse_platform(text: str) -> Platform:
    """'linux/amd64', 'linux/arm64/v8' or just 'arm64' (Linux implied)."""
    parts = text.strip().split("/")
    if len(parts) == 1 and parts[0]:
        return Platform("linux", parts[0])
    if 2 <= len(parts) <= 3 and all(parts):
        return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")
    raise BadInput(f"invalid platform {text!r}", "write it as OS/ARCH[/VARIANT], e.g. linux/amd64")


def platform_of(desc: Descriptor) -> Platform:
    p = desc.platform or {}
    return Platform(p.get("os", ""), p.get("architecture", ""), p.get("variant", ""))


def pick_platform(entries: list[Descriptor], want: Platform,
                  ref: Reference) -> tuple[Descriptor, list[str]]:
    # buildkit adds attestation manifests as platform unknown/unknown: not images.
    plats = [(d, platform_of(d)) for d in entries]
    present = [str(p) for _, p in plats if p.architecture not in ("", "unknown")]
    matches = [d for d, p in plats if p.os == want.os and p.architecture == want.architecture
               and (not want.variant or p.variant in ("", want.variant))]
    if matches:
        return matches[0], present
    raise BadInput(f"{ref} has no {want} image",
                   f"it has: {', '.join(sorted(set(present))) or 'no platforms'}; "
                   f"use an image built for {want}")


def check_config_platform(config: dict[str, Any], want: Platform, ref: Reference) -> None:
    arch, os_name = config.get("architecture"), config.get("os")
    if (isinstance(arch, str) and arch and arch != want.architecture) \
            or (isinstance(os_name, str) and os_name and os_name != want.os):
        have = f"{os_name or '?'}/{arch or '?'}"
        raise BadInput(f"{ref} is an image for {have} only",
                       f"use an image built for {want}")
