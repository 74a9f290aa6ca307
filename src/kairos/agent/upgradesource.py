"""Where an upgrade's image comes from: `oci:REF`, `ocifile:PATH`, `dir:PATH`, `file:PATH`.

`oci:` and `ocifile:` and `dir:` give a root tree (unpacked into scratch space on
COS_PERSISTENT); `file:` gives a finished slot image. Kairos's spellings are accepted too:
`docker:` for `oci:`, and `oci://`, `dir://`… with the extra slashes.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kairos.errors import BadInput
from kairos.oci.reference import Reference, parse_reference

log = logging.getLogger("kairos.upgrade")

KINDS = ("oci", "ocifile", "dir", "file")
ALIASES = {"docker": "oci", "container": "oci"}
HINT = ("use --source oci:REGISTRY/REPO:TAG, ocifile:PATH (OCI archive), "
        "dir:PATH (root tree) or file:PATH (slot image)")
# uname -m → OCI architecture names
MACHINE_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "riscv64": "riscv64"}


@dataclass(frozen=True)
class UpgradeSource:
    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"

    @property
    def path(self) -> Path:
        return Path(self.value)

    @property
    def reference(self) -> Reference:
        return parse_reference(self.value)


def parse_source(text: str) -> UpgradeSource:
    """Parse and check an upgrade source; a bad one fails here, before anything is touched."""
    kind, sep, value = text.strip().partition(":")
    kind = ALIASES.get(kind, kind)
    if not sep or kind not in KINDS:
        raise BadInput(f"upgrade source '{text}' is not of the form KIND:VALUE", HINT)
    if value.startswith("//"):
        value = value[2:]
    if not value:
        raise BadInput(f"upgrade source '{text}' names nothing", HINT)
    if kind == "oci":
        parse_reference(value)  # refuses typos now, with the reference's own hint
        return UpgradeSource(kind, value)
    path = Path(value)
    if not path.is_absolute():
        raise BadInput(f"upgrade source path '{value}' is not absolute",
                       "give the full path, e.g. file:/mnt/usb/rootfs.squashfs")
    if kind == "dir":
        if not path.is_dir():
            raise BadInput(f"directory {value} does not exist", "check the path (is it mounted?)")
    elif not path.is_file():
        raise BadInput(f"file {value} does not exist", "check the path (is the stick mounted?)")
    return UpgradeSource(kind, value)


def device_arch(machine: Callable[[], str] = platform.machine) -> str:
    m = machine()
    return MACHINE_ARCH.get(m, m)


def check_arch(image_arch: str, device: str, what: str) -> None:
    if image_arch and image_arch != device:
        raise BadInput(f"{what} is for {image_arch}, this device is {device}",
                       f"use the {device} image (a multi-arch tag picks it by itself)")
