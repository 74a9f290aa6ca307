"""/etc/kairos-release: the Kairos keys describing an image."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kairos import __version__
from kairos.envfile import render_env
from kairos.errors import BadInput

SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
)


def normalize_version(text: str) -> str:
    """A semver, with Kairos's leading 'v' (1.2.3 → v1.2.3)."""
    if not SEMVER.match(text):
        raise BadInput(f"version '{text}' is not a semantic version",
                       "use MAJOR.MINOR.PATCH, e.g. --version 1.0.0 or v1.2.3-rc1")
    return text if text.startswith("v") else f"v{text}"


@dataclass(frozen=True)
class Release:
    version: str
    flavor: str  # the base distribution's ID: debian, ubuntu, ...
    flavor_release: str  # its VERSION_ID: 12, 13, ...
    family: str = "debian"
    variant: str = "core"
    model: str = "generic"
    arch: str = "amd64"
    name_prefix: str = "kairos"

    @property
    def name(self) -> str:
        return f"{self.name_prefix}-{self.variant}-{self.flavor}-{self.flavor_release}"

    def fields(self) -> dict[str, str]:
        return {
            "KAIROS_ID": "kairos",
            "KAIROS_ID_LIKE": f"kairos-{self.variant}-{self.flavor}-{self.flavor_release}",
            "KAIROS_NAME": self.name,
            "KAIROS_VERSION": self.version,
            "KAIROS_RELEASE": self.version,
            "KAIROS_ARCH": self.arch,
            "KAIROS_TARGETARCH": self.arch,
            "KAIROS_FLAVOR": self.flavor,
            "KAIROS_FLAVOR_RELEASE": self.flavor_release,
            "KAIROS_FAMILY": self.family,
            "KAIROS_VARIANT": self.variant,
            "KAIROS_MODEL": self.model,
            "KAIROS_FIPS": "false",
            "KAIROS_TRUSTED_BOOT": "false",
            "KAIROS_INIT_VERSION": __version__,
            "KAIROS_SOFTWARE_VERSION": "",
            "KAIROS_SOFTWARE_VERSION_PREFIX": "",
        }

    def render(self) -> str:
        return render_env(self.fields())


@dataclass(frozen=True)
class StandardRelease(Release):
    """A standard image's release: the core keys plus its Kubernetes, version (v1.20.2) and
    distribution name (Kairos writes k3s or k0s). A subclass, so a core release's fields,
    and the cache keys hashed from them, stay what they were."""

    software_version: str = ""
    software_version_prefix: str = ""

    def fields(self) -> dict[str, str]:
        return {**super().fields(), "KAIROS_SOFTWARE_VERSION": self.software_version,
                "KAIROS_SOFTWARE_VERSION_PREFIX": self.software_version_prefix}
