"""What a VM is made of: the disk, firmware, sizes and how its console is wired."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kairos.errors import BadInput
from kairos.run import run

# Where Debian's ovmf package puts the 4 MiB split firmware (code read-only, vars per VM).
OVMF_DIR = Path("/usr/share/OVMF")
OVMF_CODE = "OVMF_CODE_4M.fd"
OVMF_VARS = "OVMF_VARS_4M.fd"

# "log": serial only to the log file (tests); "stdio": serial also copied plainly to stdout
# (CI logs); "interactive": serial on the terminal with QEMU's mux monitor (Ctrl-A X quits).
Console = Literal["log", "stdio", "interactive"]
DiskFormat = Literal["raw", "qcow2", "iso"]
# What a reset of the guest (its reboot, a panic, a triple fault) does. "reset": QEMU resets
# in place, as for a person at `kairos vm`. "restart": QEMU exits (-no-reboot) and VM starts
# a fresh QEMU on the same disk, firmware variables, ports and serial log, like a power cycle:
# under TCG a reset QEMU keeps its translation cache and booted 2-3x slower than a fresh one
# (measured: 173 s against 82 s for a reboot of the test image). "exit": QEMU ends with the
# reboot (install flows that must stop at the installer's reboot).
RebootMode = Literal["reset", "restart", "exit"]


@dataclass(frozen=True)
class VMConfig:
    """Everything needed to start one QEMU guest; plain values so tests can build argv."""

    disk: Path | None = None  # the boot disk or ISO; None only with netboot
    uefi: bool = False
    memory: int = 2048  # MiB
    cpus: int = 2
    snapshot: bool = False  # QEMU -snapshot: writes go to a throw-away overlay
    ssh_port: int | None = None  # None: a free port on 127.0.0.1 is picked at start
    serial_log: Path | None = None  # None: a log file in the VM's temp dir
    cloud_config: Path | None = None  # delivered as a NoCloud cidata volume
    console: Console = "log"
    extra_disks: tuple[Path, ...] = ()  # more virtio disks, e.g. an install target
    extra_args: tuple[str, ...] = ()
    ssh_user: str = "kairos"
    ssh_key: Path | None = None  # default identity for VM.ssh()
    hostname: str = "kairos-vm"  # meta-data local-hostname of the cidata volume
    ovmf_dir: Path = field(default=OVMF_DIR)
    # A `kairos netboot` directory to boot through the NIC's PXE firmware (vm/netboot.py);
    # `disk` is then optional and tried first, so an installed disk boots once it has a system.
    netboot: Path | None = None
    reboot: RebootMode = "reset"

    def __post_init__(self) -> None:
        if self.disk is None and self.netboot is None:
            raise BadInput("nothing to boot", "give a disk image, an ISO or a netboot directory")
        if self.memory < 64:
            raise BadInput(f"memory {self.memory} MiB is too small", "give at least 64 MiB")
        if self.cpus < 1:
            raise BadInput(f"cpus must be at least 1, not {self.cpus}", "use --cpus 1 or more")
        if self.ssh_port is not None and not 0 < self.ssh_port < 65536:
            raise BadInput(f"ssh port {self.ssh_port} is out of range", "use 1-65535")
        if self.snapshot and self.reboot == "restart":
            # -snapshot's overlay dies with the QEMU process: a restart would lose the writes
            raise BadInput("a -snapshot VM cannot restart QEMU at the guest's reboot",
                           "use reboot='reset' with snapshot, or a qcow2 overlay instead")


def detect_format(image: Path) -> DiskFormat:
    """raw, qcow2 or iso (a raw file with an ISO9660 descriptor), as QEMU should open it."""
    if not image.is_file():
        raise BadInput(f"disk image {image} does not exist",
                       "build one first (kairos build …) or check the path")
    res = run(["qemu-img", "info", "--output=json", str(image)])
    fmt = str(json.loads(res.stdout).get("format", ""))
    if fmt == "qcow2":
        return "qcow2"
    if fmt != "raw":
        raise BadInput(f"{image} is a {fmt or 'unknown'} image",
                       "use a raw or qcow2 disk image (qemu-img convert -O qcow2 …)")
    return "iso" if is_iso9660(image) else "raw"


def is_iso9660(image: Path) -> bool:
    """An ISO9660 primary volume descriptor starts at byte 32768 with 'CD001'.

    An isohybrid ISO has a partition table too; we still attach it as a CD, as a person
    burning it would.
    """
    with open(image, "rb") as fh:
        fh.seek(32768 + 1)
        return fh.read(5) == b"CD001"


@dataclass(frozen=True)
class Firmware:
    code: Path  # read-only pflash unit 0
    vars_template: Path  # copied per VM to pflash unit 1


def find_ovmf(ovmf_dir: Path = OVMF_DIR) -> Firmware:
    """OVMF code + vars, or BadInput naming the package to install."""
    code, vars_ = ovmf_dir / OVMF_CODE, ovmf_dir / OVMF_VARS
    missing = [p for p in (code, vars_) if not p.is_file()]
    if missing:
        raise BadInput(f"UEFI firmware not found: {', '.join(map(str, missing))}",
                       "install it with: apt-get install ovmf (or boot without --uefi)")
    return Firmware(code, vars_)
