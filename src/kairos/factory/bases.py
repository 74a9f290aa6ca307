"""What a build starts from: `--base debian:SUITE`, `dir:`, `tar:`, `ocifile:`, `oci-layout:`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kairos.errors import BadInput

DEBIAN_SUITES = ("bookworm", "trixie")
KINDS = ("debian", "dir", "tar", "ocifile", "oci-layout")
HINT = ("use one of: debian:bookworm (default), debian:trixie, dir:PATH, tar:PATH, "
        "ocifile:PATH (OCI archive), oci-layout:PATH")


@dataclass(frozen=True)
class BaseSpec:
    kind: str
    value: str

    @property
    def path(self) -> Path:
        return Path(self.value)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


def parse_base(text: str) -> BaseSpec:
    """Parse and check a base; a bad one fails here, before any work starts."""
    kind, sep, value = text.partition(":")
    if not sep or not value:
        raise BadInput(f"base '{text}' is not of the form KIND:VALUE", HINT)
    if kind not in KINDS:
        raise BadInput(f"unknown base kind '{kind}' in '{text}'", HINT)
    if kind == "debian":
        if value not in DEBIAN_SUITES:
            raise BadInput(f"unsupported Debian suite '{value}'",
                           f"supported suites: {', '.join(DEBIAN_SUITES)}")
        return BaseSpec(kind, value)
    path = Path(value).expanduser()
    if kind in ("dir", "oci-layout"):
        if not path.is_dir():
            raise BadInput(f"base directory '{value}' does not exist", HINT)
    elif not path.is_file():
        raise BadInput(f"base file '{value}' does not exist", HINT)
    return BaseSpec(kind, str(path.resolve()))
