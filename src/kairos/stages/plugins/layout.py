"""`layout`: add partitions to a GPT disk and grow its last partition (and filesystem).

The disk is found by `device.path` (a path, or `script://command` printing one) or by
`device.label` (the disk holding the filesystem or partition with that label). The plan is
computed from the disk's table (`sfdisk --json`) and applied with sfdisk, mkfs and
resize2fs/xfs_growfs/btrfs; `plan()` is pure so it can be checked without a disk.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from kairos.errors import KairosError, MissingTool
from kairos.run import run
from kairos.stages.context import Context, PluginError
from kairos.stages.fields import PayloadError, as_bool, as_int, as_map, as_map_list, as_str
from kairos.stages.model import Step

KEYS = ("layout",)
MIB = 1024 * 1024
GPT_TYPES = {
    "linux": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    "bios": "21686148-6449-6E6F-744E-656564454649",
    "esp": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    "data": "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
    "swap": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
}
FILESYSTEMS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "fat", "fat16", "fat32", "swap",
               "none", "-", "noformat"}


@dataclass
class Device:
    path: str = ""
    label: str = ""
    init_disk: bool = False
    disk_name: str = ""


@dataclass
class Partition:
    fs_label: str = ""
    size: int = 0            # MiB; 0 = the rest of the disk
    p_label: str = ""
    filesystem: str = "ext2"
    bootable: bool = False


@dataclass
class Layout:
    device: Device | None = None
    expand: int | None = None  # MiB for the last partition; 0 = all free space
    parts: list[Partition] = field(default_factory=list)


def parse(step: Step) -> Layout:
    raw = as_map(step.payloads.get("layout"), "layout")
    layout = Layout()
    if raw.get("device") is not None:
        d = as_map(raw.get("device"), "layout.device")
        layout.device = Device(path=as_str(d.get("path"), "layout.device.path"),
                               label=as_str(d.get("label"), "layout.device.label"),
                               init_disk=as_bool(d.get("init_disk"), "layout.device.init_disk"),
                               disk_name=as_str(d.get("disk_name"), "layout.device.disk_name"))
    if raw.get("expand_partition") is not None:
        e = as_map(raw.get("expand_partition"), "layout.expand_partition")
        layout.expand = as_int(e.get("size"), "layout.expand_partition.size", 0)
    for i, p in enumerate(as_map_list(raw.get("add_partitions"), "layout.add_partitions")):
        w = f"layout.add_partitions[{i}]"
        fs = as_str(p.get("filesystem"), f"{w}.filesystem").lower() or "ext2"
        if fs not in FILESYSTEMS:
            raise PayloadError(f"{w}.filesystem: '{fs}' is not supported "
                               "(ext2, ext3, ext4, xfs, btrfs, vfat, swap, none)")
        part = Partition(fs_label=as_str(p.get("fsLabel"), f"{w}.fsLabel"),
                         size=as_int(p.get("size"), f"{w}.size", 0) or 0,
                         p_label=as_str(p.get("pLabel"), f"{w}.pLabel"), filesystem=fs,
                         bootable=as_bool(p.get("bootable"), f"{w}.bootable"))
        if fs == "xfs" and len(part.fs_label) > 12:
            raise PayloadError(f"{w}: an xfs label has at most 12 characters")
        layout.parts.append(part)
    return layout


@dataclass
class PartInfo:
    number: int
    start: int   # sectors
    size: int    # sectors
    name: str = ""
    type: str = ""


@dataclass
class DiskState:
    device: str
    sector_size: int
    total_sectors: int
    label: str = ""   # "gpt", "dos" or "" (no table)
    partitions: list[PartInfo] = field(default_factory=list)

    @property
    def is_file(self) -> bool:
        return not self.device.startswith("/dev/")

    @property
    def last_usable(self) -> int:
        return self.total_sectors - 34  # the backup GPT takes the last 33 sectors


@dataclass
class Action:
    what: str                 # "init", "add", "format", "expand", "growfs"
    description: str
    argv: list[str] = field(default_factory=list)
    input: str | None = None
    partition: int = 0


def part_node(device: str, number: int) -> str:
    return f"{device}{'p' if device[-1:].isdigit() else ''}{number}"


def mkfs_argv(fs: str, label: str, node: str) -> list[str] | None:
    if fs in ("none", "-", "noformat"):
        return None
    if fs.startswith("ext"):
        return [f"mkfs.{fs}", "-F", *(["-L", label] if label else []), node]
    if fs in ("xfs", "btrfs"):
        return [f"mkfs.{fs}", "-f", *(["-L", label] if label else []), node]
    if fs == "swap":
        return ["mkswap", *(["-L", label] if label else []), node]
    bits = "16" if fs == "fat16" else "32"
    return ["mkfs.vfat", "-F", bits, *(["-n", label.upper()] if label else []), node]


def gpt_type(p: Partition) -> tuple[str, str]:
    """(type GUID, sfdisk attrs) as yip picks them."""
    if p.filesystem == "swap":
        return GPT_TYPES["swap"], ""
    if p.filesystem.startswith(("fat", "vfat")):
        return (GPT_TYPES["esp"], "RequiredPartition") if p.bootable else (GPT_TYPES["data"], "")
    return (GPT_TYPES["bios"], "LegacyBIOSBootable") if p.bootable else (GPT_TYPES["linux"], "")


def plan(layout: Layout, state: DiskState) -> list[Action]:
    """The actions that bring `state` to `layout` (raises PluginError when impossible)."""
    actions: list[Action] = []
    dev, sector = state.device, state.sector_size
    align = max(1, MIB // sector)
    parts = [] if (layout.device and layout.device.init_disk) else list(state.partitions)
    if layout.device and layout.device.init_disk:
        guid = str(uuid.uuid5(uuid.NAMESPACE_URL, layout.device.disk_name or "YIP_DISK"))
        actions.append(Action("init", f"new GPT table on {dev}", ["sfdisk", "--no-reread",
                       "--no-tell-kernel", "--wipe", "always", dev], f"label: gpt\nlabel-id: {guid}\n"))
    elif layout.parts and state.label != "gpt":
        raise PluginError(f"{dev} has no GPT partition table (set device.init_disk to create one)")
    end = max((p.start + p.size for p in parts), default=align)
    for p in layout.parts:
        if p.p_label and any(q.name == p.p_label for q in parts):
            continue  # already there: re-applying the layout every boot is a no-op
        start = -(-end // align) * align
        free = state.last_usable - start + 1
        size = free if p.size == 0 else p.size * MIB // sector
        if free < 32 * MIB // sector or size > free:
            raise PluginError(f"not enough free space on {dev} for partition "
                              f"{p.p_label or p.fs_label or len(parts) + 1}: need {p.size or 32} "
                              f"MiB, {max(0, free) * sector // MIB} MiB free")
        number = max((q.number for q in parts), default=0) + 1
        type_guid, attrs = gpt_type(p)
        line = f"start={start}, size={size}, type={type_guid}"
        line += f', name="{p.p_label}"' if p.p_label else ""
        line += f', attrs="{attrs}"' if attrs else ""
        actions.append(Action("add", f"add partition {number} ({p.size or 'rest'} MiB, "
                              f"{p.filesystem})", ["sfdisk", "--append", "--no-reread",
                              "--no-tell-kernel", dev], line + "\n", number))
        parts.append(PartInfo(number, start, size, p.p_label, type_guid))
        end = start + size
        argv = mkfs_argv(p.filesystem, p.fs_label, part_node(dev, number))
        if argv:
            actions.append(Action("format", f"format partition {number} as {p.filesystem}",
                                  argv, None, number))
    if layout.expand is not None:
        actions += plan_expand(layout.expand, state, parts)
    return actions


def plan_expand(size_mib: int, state: DiskState, parts: list[PartInfo]) -> list[Action]:
    if not parts:
        raise PluginError(f"{state.device} has no partition to expand")
    last = max(parts, key=lambda p: p.start)
    if last.type.upper() in (GPT_TYPES["swap"], GPT_TYPES["esp"], GPT_TYPES["data"]):
        raise PluginError(f"partition {last.number} is swap or FAT: it cannot be grown")
    limit = state.last_usable - last.start + 1
    wanted = limit if size_mib == 0 else size_mib * MIB // state.sector_size
    if wanted > limit:
        raise PluginError(f"cannot grow partition {last.number} to {size_mib} MiB: only "
                          f"{limit * state.sector_size // MIB} MiB up to the end of the disk")
    if wanted - last.size < MIB // state.sector_size:
        return []  # already as large as asked (the step runs every boot)
    return [Action("expand", f"grow partition {last.number} to "
                   f"{wanted * state.sector_size // MIB} MiB",
                   ["sfdisk", "--no-reread", "--no-tell-kernel", "-N", str(last.number),
                    state.device], f"{last.start}, {wanted}\n", last.number),
            Action("growfs", f"grow the filesystem on partition {last.number}",
                   partition=last.number)]


def resolve_device(ctx: Context, device: Device) -> str:
    """The whole-disk device (or image file) the layout is for."""
    if device.path:
        if device.path.startswith("script://"):
            result = ctx.sh(device.path.removeprefix("script://"))
            path = result.stdout.strip()
            if result.returncode != 0 or not path:
                raise PluginError(f"{device.path} printed no device "
                                  f"(exit {result.returncode}: {result.stderr.strip()[-200:]})")
            return path
        return device.path
    if not device.label:
        raise PluginError("layout.device needs a path or a label")
    found = run(["blkid", "-L", device.label], check=False).stdout.strip()
    if not found:
        by_partlabel = Path("/dev/disk/by-partlabel", device.label)
        found = os.path.realpath(by_partlabel) if by_partlabel.exists() else ""
    if not found:
        raise PluginError(f"no filesystem or partition labelled {device.label}")
    return parent_disk(os.path.realpath(found))


def parent_disk(node: str) -> str:
    """/dev/sda3 -> /dev/sda, /dev/nvme0n1p2 -> /dev/nvme0n1 (via sysfs); files unchanged."""
    if not node.startswith("/dev/"):
        return node
    sys_entry = Path("/sys/class/block", Path(node).name)
    if not (sys_entry / "partition").exists():
        return node
    return f"/dev/{Path(os.path.realpath(sys_entry)).parent.name}"


def read_state(device: str) -> DiskState:
    fd = os.open(device, os.O_RDONLY)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
    result = run(["sfdisk", "--json", device], check=False)
    table = json.loads(result.stdout).get("partitiontable", {}) if result.returncode == 0 else {}
    sector = int(table.get("sectorsize", 512))
    parts = []
    for i, p in enumerate(table.get("partitions", [])):
        number = re.search(r"(\d+)$", str(p.get("node", "")))
        parts.append(PartInfo(number=int(number.group(1)) if number else i + 1,
                              start=int(p["start"]), size=int(p["size"]),
                              name=str(p.get("name", "")), type=str(p.get("type", ""))))
    return DiskState(device=device, sector_size=sector, total_sectors=size // sector,
                     label=str(table.get("label", "")), partitions=parts)


def grow_filesystem(ctx: Context, node: str) -> None:
    fstype = run(["blkid", "-o", "value", "-s", "TYPE", node], check=False).stdout.strip()
    mounted = run(["findmnt", "-no", "TARGET", "--source", node], check=False).stdout
    target = mounted.splitlines()[0].strip() if mounted.strip() else ""
    if fstype.startswith("ext"):
        if not target:  # offline resize wants a freshly checked filesystem
            check = run(["e2fsck", "-fy", node], check=False)
            if check.returncode > 1:
                raise PluginError(f"e2fsck {node} exited {check.returncode}")
        run(["resize2fs", node])
    elif fstype in ("xfs", "btrfs"):
        from kairos.disk.mounts import mount, tempdir

        def grow(mountpoint: str) -> None:
            run(["xfs_growfs", mountpoint] if fstype == "xfs"
                else ["btrfs", "filesystem", "resize", "max", mountpoint])

        if target:
            grow(target)
        else:
            with tempdir(prefix="kairos-growfs-") as tmp, mount(node, tmp):
                grow(str(tmp))
    else:
        raise PluginError(f"cannot grow a '{fstype or 'unknown'}' filesystem on {node}")
    ctx.logger.info("layout: grew the %s filesystem on %s", fstype, node)


def apply(step: Step, ctx: Context) -> None:
    layout = parse(step)
    if layout.device is None:
        return
    if layout.device.init_disk and layout.device.label:
        raise PluginError("layout: init_disk needs device.path, not a label")
    device = resolve_device(ctx, layout.device)
    state = read_state(device)
    actions = plan(layout, state)
    if not actions:
        ctx.logger.info("layout: %s already matches; nothing to do", device)
        return
    changed_table = False
    for action in actions:
        ctx.logger.info("layout: %s", action.description)
        if action.what in ("format", "growfs") and state.is_file:
            ctx.logger.warning("layout: %s is an image file; skipped: %s", device,
                               action.description)
            continue
        if action.what in ("format", "growfs") and changed_table:
            rescan(device)  # the kernel must see the new table before partitions are used
            changed_table = False
        try:
            if action.what == "growfs":
                grow_filesystem(ctx, part_node(device, action.partition))
            else:
                run(action.argv, input=action.input)
                changed_table = changed_table or action.what in ("init", "add", "expand")
        except KairosError as exc:
            raise PluginError(f"{action.description}: {exc.message}") from None
    if changed_table and not state.is_file:
        rescan(device)


def rescan(device: str) -> None:
    """Tell the kernel about added and resized partitions (works while others are mounted)."""
    for argv in (["partx", "-a", device], ["partx", "-u", device], ["udevadm", "settle"]):
        try:
            run(argv, check=False)
        except MissingTool:  # no udev in a minimal initramfs: nothing to wait for
            continue
