"""The block devices of this machine as data, and which one an install goes to.

Reading (`read_inventory`: /sys/block, /proc/self/mountinfo, /proc/swaps) is kept apart from
choosing (`resolve_device`, `choose_auto`, `check_target`), so the choices are tested on a
fake inventory. A device spec is what Kairos's `install.device` takes:

- a path (`/dev/vdb`) or a `/dev/disk/by-{id,path,uuid,label,diskseq}/…` link, which must
  land on a whole disk directly in /dev (by-partlabel and by-partuuid name partitions: refused);
- `script:///PATH`: an executable whose stdout names the disk (one line, a path as above);
- `auto`: the largest disk that is not the boot or live medium, not read-only, not a
  loop/RAM/optical/virtual device, holds nothing in use and has no partitions.

Every choice is then checked: never the disk the running system (or the live medium) is on,
never one with a mounted filesystem, swap or a holder (LVM, RAID, dm), never one smaller
than the layout needs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kairos.disk import blockdev
from kairos.disk.sizes import format_size
from kairos.errors import BadInput, CommandFailed
from kairos.run import run

SYS_BLOCK = Path("/sys/block")
MOUNTINFO = Path("/proc/self/mountinfo")
SWAPS = Path("/proc/swaps")
DEV = Path("/dev")
# Mount points that mean "this disk carries the running system or the medium it booted from".
BOOT_MOUNTS = frozenset({"/", "/run/initramfs/live", "/run/initramfs/cos-state",
                         "/run/rootfsbase", "/sysroot", "/oem", "/usr/local", "/boot",
                         "/boot/efi", "/efi"})
# Never chosen by `auto` (and, for the first four, never accepted at all).
_VIRTUAL = re.compile(r"^(?:(ram|zram|sr|fd)\d+|(loop|dm-|md|nbd)\d+)$")
_REFUSED_KINDS = {"ram": "a RAM disk", "zram": "a compressed RAM disk",
                  "sr": "an optical drive", "fd": "a floppy drive"}
BY_KINDS = ("by-id", "by-path", "by-uuid", "by-label", "by-diskseq")
BY_PARTITION_KINDS = ("by-partlabel", "by-partuuid")
SCRIPT_PREFIX = "script://"
SCRIPT_TIMEOUT = 60.0  # seconds a device script may take
MAX_SCRIPT_OUTPUT = 4096
HINT = ("give a whole disk: /dev/sdX, a /dev/disk/by-id|by-path|by-uuid|by-label|by-diskseq "
        "link, script:///PATH or auto")


@dataclass(frozen=True)
class Disk:
    """One whole disk as the kernel shows it."""

    name: str  # kernel name: vda, sdb, nvme0n1, loop3
    size: int  # bytes
    dev: str = ""  # major:minor
    removable: bool = False
    read_only: bool = False
    partitions: tuple[str, ...] = ()  # kernel names of its partitions
    transport: str = ""  # usb, nvme, virtio, sata, scsi, mmc, loop, "" when unknown
    model: str = ""
    mounts: tuple[str, ...] = ()  # mount points of it and of its partitions
    users: tuple[str, ...] = ()  # swap, holders (dm, md), loop devices it backs
    boot: bool = False  # carries the running system or the live medium

    @property
    def path(self) -> Path:
        return DEV / self.name

    @property
    def kind(self) -> str:
        """The kind of a virtual device ("loop", "ram", …), "" for a real disk."""
        m = _VIRTUAL.match(self.name)
        return "" if m is None else (m.group(1) or m.group(2)).rstrip("-")

    def describe(self) -> str:
        bits = [format_size(self.size) if self.size else "no medium"]
        bits += [b for b in (self.transport, self.model) if b]
        if self.removable:
            bits.append("removable")
        return f"{self.path} ({', '.join(bits)})"

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "path": str(self.path), "size": self.size,
                "transport": self.transport, "model": self.model,
                "removable": self.removable, "read_only": self.read_only,
                "partitions": list(self.partitions), "mounts": list(self.mounts),
                "users": list(self.users), "boot": self.boot}


@dataclass(frozen=True)
class Inventory:
    """Every whole disk, and which disk each partition belongs to."""

    disks: tuple[Disk, ...]
    parents: Mapping[str, str] = field(default_factory=dict)  # partition name → disk name

    def get(self, name: str) -> Disk | None:
        return next((d for d in self.disks if d.name == name), None)


@dataclass(frozen=True)
class Target:
    """The disk an install goes to, and how it was found (for the plan and the logs)."""

    disk: Disk
    how: str

    @property
    def path(self) -> Path:
        return self.disk.path


# ------------------------------------------------------------------------------ reading

def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return default


def _unescape(text: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def read_mounts(mountinfo: Path = MOUNTINFO) -> dict[str, list[str]]:
    """major:minor → mount points."""
    found: dict[str, list[str]] = {}
    for line in _read(mountinfo).splitlines():
        fields = line.split()
        if len(fields) >= 5:
            found.setdefault(fields[2], []).append(_unescape(fields[4]))
    return found


def read_swaps(swaps: Path = SWAPS) -> set[str]:
    """Kernel names of block devices in use as swap."""
    names = set()
    for line in _read(swaps).splitlines()[1:]:
        name = _unescape(line.split()[0]) if line.split() else ""
        if name.startswith("/dev/"):
            names.add(os.path.basename(os.path.realpath(name)))
    return names


def transport_of(name: str, sysfs_path: str) -> str:
    """How the disk is attached, from its name and where it sits in /sys/devices."""
    if name.startswith("nvme"):
        return "nvme"
    if name.startswith("mmcblk"):
        return "mmc"
    if name.startswith("loop"):
        return "loop"
    for marker, transport in (("/usb", "usb"), ("/virtio", "virtio"), ("/ata", "sata"),
                              ("/host", "scsi")):
        if marker in sysfs_path:
            return transport
    return ""


@dataclass
class _Raw:
    """What /sys says about one disk, before mounts are matched to it."""

    disk: Disk
    numbers: set[str]  # major:minor of the disk and its partitions
    backing_file: str = ""  # a loop device's backing file


def _read_disk(entry: Path, swaps: set[str]) -> _Raw:
    name = entry.name
    parts: list[tuple[str, str]] = []
    users: list[str] = []
    for child in sorted(entry.iterdir()) if entry.is_dir() else []:
        if (child / "partition").is_file():
            parts.append((child.name, _read(child / "dev")))
            users += [f"{h.name} holds {child.name}" for h in _holders(child)]
    users += [f"{h.name} holds it" for h in _holders(entry)]
    users += [f"swap on {n}" for n in [name, *(p for p, _ in parts)] if n in swaps]
    dev = _read(entry / "dev")
    disk = Disk(
        name=name, size=int(_read(entry / "size", "0") or 0) * 512, dev=dev,
        removable=_read(entry / "removable") == "1", read_only=_read(entry / "ro") == "1",
        partitions=tuple(p for p, _ in parts),
        transport=transport_of(name, str(entry.resolve())),
        model=" ".join(_read(entry / "device" / "model").split()), users=tuple(users))
    return _Raw(disk, {dev, *(d for _, d in parts)} - {""},
                _read(entry / "loop" / "backing_file"))


def _holders(sysdir: Path) -> list[Path]:
    holders = sysdir / "holders"
    return sorted(holders.iterdir()) if holders.is_dir() else []


def _mount_of_file(path: str, mounts: Mapping[str, list[str]]) -> str:
    """major:minor of the filesystem holding `path` (the longest mount point above it)."""
    best, best_len = "", -1
    for number, points in mounts.items():
        for point in points:
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and len(point) > best_len:
                best, best_len = number, len(point)
    return best


def read_inventory(sys_block: Path = SYS_BLOCK, mountinfo: Path = MOUNTINFO,
                   swaps: Path = SWAPS) -> Inventory:
    """The machine's disks, with what is mounted on each and which carry the system."""
    mounts = read_mounts(mountinfo)
    swap_names = read_swaps(swaps)
    raws = [_read_disk(e, swap_names) for e in sorted(sys_block.iterdir())] \
        if sys_block.is_dir() else []
    owner = {n: r for r in raws for n in r.numbers}
    boot: set[str] = set()
    mounted: dict[str, list[str]] = {}
    backs: dict[str, list[str]] = {}
    for number, points in mounts.items():
        raw = owner.get(number)
        if raw is not None:
            mounted.setdefault(raw.disk.name, []).extend(points)
    for raw in raws:  # a loop device's file sits on a disk: that disk is in use too
        if raw.backing_file and raw.disk.name in mounted:
            host = owner.get(_mount_of_file(raw.backing_file, mounts))
            if host is not None:
                backs.setdefault(host.disk.name, []).append(raw.disk.name)
    for name, points in mounted.items():
        if BOOT_MOUNTS.intersection(points):
            boot.add(name)
    for name, loops in backs.items():  # the medium of a root (or live) image on a loop
        if any(loop in boot for loop in loops):
            boot.add(name)
    disks = tuple(
        _with_use(r.disk, mounted.get(r.disk.name, []), backs.get(r.disk.name, []),
                  r.disk.name in boot) for r in raws)
    parents = {p: d.name for d in disks for p in d.partitions}
    return Inventory(disks, parents)


def _with_use(disk: Disk, mounts: list[str], loops: list[str], boot: bool) -> Disk:
    users = (*disk.users, *(f"backs {loop}" for loop in loops))
    return dataclasses.replace(disk, mounts=tuple(dict.fromkeys(mounts)), users=users,
                               boot=boot)


# ------------------------------------------------------------------------------ choosing

def why_not_auto(disk: Disk, need: int = 0) -> str | None:
    """Why `auto` skips this disk, or None when it may be chosen."""
    kind = disk.kind
    if kind:
        return f"a {kind} device"
    if disk.boot:
        return "the boot medium (the running system is on it)"
    if disk.read_only:
        return "read-only"
    if disk.size == 0:
        return "no medium"
    if disk.mounts:
        return f"mounted on {', '.join(disk.mounts)}"
    if disk.users:
        return "in use (" + "; ".join(disk.users) + ")"
    if disk.partitions:
        return f"has partitions ({', '.join(disk.partitions)})"
    if need and disk.size < need:
        return f"too small ({format_size(disk.size)}, the layout needs {_mib(need)})"
    return None


def _mib(size: int) -> str:
    return f"{-(-size // 2**20)}M"


def choose_auto(inventory: Inventory, need: int = 0) -> Target:
    """The largest disk `auto` may take (the first by name among equals); BadInput listing
    every disk seen and why it was skipped when none fits."""
    fits = [d for d in inventory.disks if why_not_auto(d, need) is None]
    if fits:
        best = max(fits, key=lambda d: d.size)  # max keeps the first of equal sizes
        others = len(fits) - 1
        return Target(best, f"auto: the largest free disk{f' of {others + 1}' if others else ''}")
    raise BadInput("device: auto found no disk to install to: " + _seen(inventory, need),
                   "attach an empty disk (no partitions), or name one with --device "
                   "(its partitions are erased)")


def _seen(inventory: Inventory, need: int) -> str:
    real = [d for d in inventory.disks if not d.kind]
    virtual = len(inventory.disks) - len(real)
    parts = [f"{d.name}: {why_not_auto(d, need)}" for d in real]
    if virtual:
        parts.append(f"{virtual} loop/RAM/optical/virtual device(s) skipped")
    return "; ".join(parts) if parts else "no disks at all"


def check_target(disk: Disk, need: int = 0) -> None:
    """Refuse a named disk that must not be erased; partitions on it are fine (erased)."""
    path = disk.path
    if disk.kind in _REFUSED_KINDS:
        raise BadInput(f"{path} is {_REFUSED_KINDS[disk.kind]}", "install to a disk")
    if disk.boot:
        raise BadInput(f"{path} holds the running system (or the medium it booted from)",
                       "install to another disk")
    if disk.mounts:
        raise BadInput(f"{path} is in use (mounted on {', '.join(disk.mounts)})",
                       "unmount it (and stop swap/LVM on it) first")
    if disk.users:
        raise BadInput(f"{path} is in use ({'; '.join(disk.users)})",
                       "unmount it (and stop swap/LVM on it) first")
    if disk.read_only:
        raise BadInput(f"{path} is read-only", "check the write-protect switch, or pick "
                       "another disk")
    if disk.size == 0:
        raise BadInput(f"{path} has no medium (size 0)", "insert the medium or pick another disk")
    if need and disk.size < need:
        raise BadInput(f"{path} is too small: {format_size(disk.size)}, the layout needs "
                       f"at least {_mib(need)}",
                       "use a larger disk, or smaller install.partitions / system sizes")


def _disk_named(path: Path, inventory: Inventory, dev_root: Path, spec: str) -> Disk:
    """The whole disk at `path` (already resolved): directly in /dev and known to /sys."""
    if path.parent != dev_root:
        raise BadInput(f"device {spec!r} is {path}, not a disk in {dev_root}", HINT)
    disk = inventory.get(path.name)
    if disk is not None:
        return disk
    parent = inventory.parents.get(path.name)
    if parent is not None:
        raise BadInput(f"{spec} is a partition of {dev_root / parent}, not a whole disk",
                       f"give {dev_root / parent} (all of it is erased)")
    raise BadInput(f"{spec} is not a disk this machine has", HINT)


def _by_link(spec: str, dev_root: Path) -> None:
    """Refuse /dev/disk/by-* links of the wrong kind before following them."""
    rel = Path(spec).relative_to(dev_root / "disk")
    if len(rel.parts) != 2:
        raise BadInput(f"device {spec!r} is not a /dev/disk/by-*/NAME link", HINT)
    if rel.parts[0] in BY_PARTITION_KINDS:
        raise BadInput(f"device {spec} names a partition ({rel.parts[0]})",
                       "name the whole disk: by-id, by-path, by-uuid, by-label or by-diskseq")
    if rel.parts[0] not in BY_KINDS:
        raise BadInput(f"device {spec} is under an unknown /dev/disk/{rel.parts[0]}", HINT)


def resolve_path(spec: str, inventory: Inventory, *, dev_root: Path = DEV,
                 is_node: Callable[[Path], bool] = blockdev.is_block_device) -> Target:
    """A path or /dev/disk/by-* link → its whole disk (links followed, then checked)."""
    if not spec.startswith("/") or "\x00" in spec or any(c in spec for c in "\n\r\t"):
        raise BadInput(f"device {spec!r} is not an absolute /dev path", HINT)
    path = Path(spec)
    if (dev_root / "disk") in path.parents:
        _by_link(spec, dev_root)
    if not os.path.lexists(path):
        raise BadInput(f"device {spec} does not exist", "list the disks with lsblk")
    real = Path(os.path.realpath(path))
    disk = _disk_named(real, inventory, dev_root, spec)
    if not is_node(real):
        raise BadInput(f"{real} is not a block device", HINT)
    how = spec if real == path else f"{spec} → {real}"
    return Target(disk, how)


def run_script(script: Path, timeout: float = SCRIPT_TIMEOUT) -> str:
    """The stdout of a device script (run as is, no shell, no arguments)."""
    try:
        return run([str(script)], timeout=timeout).stdout
    except subprocess.TimeoutExpired:
        raise BadInput(f"device script {script} did not finish within {timeout:g} s",
                       "make it print the disk and exit") from None
    except CommandFailed as exc:
        tail = exc.stderr_tail.strip().splitlines()[-1:] or [""]
        raise BadInput(f"device script {script} failed with exit code {exc.returncode}"
                       + (f": {tail[0][:200]}" if tail[0] else ""),
                       "run it by hand to see why") from None
    except OSError as exc:
        raise BadInput(f"device script {script} cannot be run: {exc.strerror or exc}",
                       "make it executable, with a #! line") from None


def script_path(spec: str) -> Path:
    """The script of `script:///PATH`; it must be an absolute path to an executable file."""
    rest = spec[len(SCRIPT_PREFIX):]
    path = Path(rest)
    if not rest.startswith("/") or "\x00" in rest:
        raise BadInput(f"device {spec!r} does not name an absolute script path",
                       "write it as script:///usr/local/bin/pick-disk")
    if not path.is_file():
        raise BadInput(f"device script {path} does not exist", "check the path")
    if not os.access(path, os.X_OK):
        raise BadInput(f"device script {path} is not executable", f"chmod +x {path}")
    return path


def parse_script_output(output: str, script: Path) -> str:
    """The one device path a script printed; BadInput for anything else (several lines,
    nothing, control characters, a relative path, more than a path could be)."""
    if len(output) > MAX_SCRIPT_OUTPUT:
        raise BadInput(f"device script {script} printed {len(output)} characters, not a "
                       "device path", "print only the disk, e.g. /dev/sdb")
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    if len(lines) != 1:
        raise BadInput(f"device script {script} printed {len(lines)} lines, not one device "
                       "path", "print only the disk, e.g. /dev/sdb")
    line = lines[0]
    if not line.isprintable() or not line.startswith("/") or any(c.isspace() for c in line):
        raise BadInput(f"device script {script} printed {line[:80]!r}, not a device path",
                       "print only the disk, e.g. /dev/sdb")
    return line


def resolve_device(spec: str, inventory: Inventory, *, need: int = 0, dev_root: Path = DEV,
                   is_node: Callable[[Path], bool] = blockdev.is_block_device,
                   script_runner: Callable[[Path], str] = run_script) -> Target:
    """The disk `spec` names (see the module doc), checked as an install target."""
    spec = spec.strip()
    if spec == "auto":
        return choose_auto(inventory, need)
    if spec.startswith(SCRIPT_PREFIX):
        script = script_path(spec)
        printed = parse_script_output(script_runner(script), script)
        target = resolve_path(printed, inventory, dev_root=dev_root, is_node=is_node)
        target = Target(target.disk, f"{script} printed {target.how}")
    elif spec:
        target = resolve_path(spec, inventory, dev_root=dev_root, is_node=is_node)
    else:
        raise BadInput("no device given", HINT)
    check_target(target.disk, need)
    return target


def describe_inventory(disks: Iterable[Disk], need: int = 0) -> list[str]:
    """One line per real disk, for the interactive plan and `--debug` logs."""
    lines = []
    for disk in disks:
        if disk.kind:
            continue
        why = why_not_auto(disk, need)
        lines.append(f"{disk.describe()}: {why or 'free'}")
    return lines
