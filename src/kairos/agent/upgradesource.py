"""Where an upgrade's image comes from: `oci:REF`, `ocifile:PATH`, `dir:PATH`, `file:PATH`.

`oci:` and `ocifile:` and `dir:` give a root tree (unpacked into scratch space on
COS_PERSISTENT); `file:` gives a finished slot image. Kairos's spellings are accepted too:
`docker:` for `oci:`, and `oci://`, `dir://`… with the extra slashes.

With the source, what an upgrade is asked to do (`UpgradeOptions`) and where (`Targets`): the
fetchers (agent/fetch.py) and the sequence (agent/upgrade.py) both take them, so they live
here, below both.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kairos.artifacts.rootfs import COMPRESSIONS
from kairos.errors import BadInput
from kairos.oci.reference import Reference, parse_reference

log = logging.getLogger("kairos.upgrade")

KINDS = ("oci", "ocifile", "dir", "file")
ALIASES = {"docker": "oci", "container": "oci"}
HINT = ("use --source oci:REGISTRY/REPO:TAG, ocifile:PATH (OCI archive), "
        "dir:PATH (root tree) or file:PATH (slot image)")
# uname -m → OCI architecture names
MACHINE_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "riscv64": "riscv64"}
DEFAULT_CACHE_MAX = 2 << 30


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


# ------------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class Targets:
    """Where this device keeps what an upgrade touches."""

    state_dir: Path  # COS_STATE, mounted
    persistent_dir: Path  # COS_PERSISTENT: scratch and blob cache
    booted: str  # "active" or "passive" (which slot this system runs from)
    recovery_dir: Path | None = None  # COS_RECOVERY, mounted (for --recovery)
    oem_dir: Path | None = None  # COS_OEM: grubenv
    stage_root: Path | None = None  # where before/after-upgrade stages run (None: not run)
    remount: bool = False  # remount the slot's partition rw for the write, ro after
    root: Path = Path("/")  # the running system's root (its /boot/kairos-boot.cfg)


@dataclass(frozen=True)
class UpgradeOptions:
    source: UpgradeSource
    recovery: bool = False
    auth_file: Path | None = None
    insecure: bool = False
    verify: bool = False
    public_key: str = ""
    compression: str = "none"
    size_mib: int = 0  # upgrade.system.size: reserve at least this much for the slot
    cache_max: int = DEFAULT_CACHE_MAX
    arch: str = field(default_factory=device_arch)
    tries: int = 1  # boot_assessment.tries: boots the new image gets to be assessed good
    force: bool = False  # apply an image that failed its boot assessment before

    def __post_init__(self) -> None:
        from kairos.boot.assessment import MAX_TRIES
        if isinstance(self.tries, bool) or not 1 <= self.tries <= MAX_TRIES:
            raise BadInput(f"boot_assessment.tries is {self.tries!r}",
                           f"set it to a whole number from 1 to {MAX_TRIES}")
        if self.compression not in COMPRESSIONS:
            raise BadInput(f"compression '{self.compression}' is not supported",
                           f"use one of {', '.join(COMPRESSIONS)}")
        if self.verify and not self.public_key:
            raise BadInput("signature verification is on but no public key is configured",
                           "set upgrade.public-key (PEM text or a file path) or drop --verify")
