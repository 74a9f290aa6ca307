"""Install slot images onto a disk: an image file or a block device, the same path for both.

`plan_install` checks everything it can (images, cloud-configs, GRUB env, disk size) before a
single byte is written, and describes each slot image (the records of `state.yaml`);
`install` then writes the GPT, each filesystem with its content and its records, and GRUB for
BIOS and UEFI, and makes sure it all reached the disk before returning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from kairos.agent import slotstate
from kairos.artifacts.rootfs import sha256_file
from kairos.boot import grubenv
from kairos.boot.grubcfg import GrubCfgOptions, render_grub_cfg
from kairos.boot.grubinstall import build_core_img, build_efi_image, install_efi, write_bios_boot
from kairos.disk import blockdev
from kairos.disk.filesystems import (
    FsTarget,
    LargeFile,
    add_large_files,
    chown_root,
    mkfs_ext4,
    mkfs_vfat,
)
from kairos.disk.gpt import KAIROS_DISK_GUID, write_gpt
from kairos.disk.layout import (
    GUID_LINUX_FS,
    PERSISTENT_MIN_MIB,
    SECTOR,
    STATE_EXTRA,
    DiskLayout,
    Partition,
    PartitionSpec,
    ext4_size_mib,
    kairos_specs,
    minimum_disk_size,
)
from kairos.disk.mounts import tempdir
from kairos.disk.sizes import MiB
from kairos.envfile import parse_env
from kairos.errors import BadInput, KairosError
from kairos.run import require, run
from kairos.ui import step

log = logging.getLogger("kairos.install")

TOOLS = ("sgdisk", "mkfs.ext4", "debugfs", "mkfs.vfat", "mmd", "mcopy", "grub-mkimage",
         "unsquashfs")
# Compression ids in the squashfs superblock that GRUB 2.06's squash4 can read.
GRUB_SQUASHFS_COMPRESSION = {1: "gzip", 3: "lzo", 4: "xz"}
SQUASHFS_COMPRESSION = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}
# The slot image files of each partition install writes, by role; each partition gets a
# state.yaml with their records (slotstate).
SLOT_FILES = {"state": {"active": "/cOS/active.img", "passive": "/cOS/passive.img"},
              "recovery": {"recovery": "/cOS/recovery.squashfs"}}
# Kairos's own partitions (GPT names), in install order; install.partitions may size the
# last four (and efi), never change what they hold.
KAIROS_PARTS = ("bios", "efi", "oem", "recovery", "state", "persistent")
# The smallest size (MiB) install.partitions may give: FAT32 with 512-byte clusters needs
# 65525 clusters; ext4 with its journal and a few configs fits in 16 MiB.
MIN_PART_MIB = {"efi": 34, "oem": 16, "recovery": 16, "state": 16,
                "persistent": PERSISTENT_MIN_MIB}
# What an extra partition may hold (Kairos's default is ext2; `none` leaves it unformatted).
EXTRA_FS = ("ext2", "ext3", "ext4", "vfat", "none")
EXTRA_DEFAULT_FS = "ext2"
GUID_BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"  # what other systems mount as FAT


@dataclass(frozen=True)
class ExtraPartition:
    """One entry of install.extra-partitions (size in MiB, 0 = the rest of the disk)."""

    name: str
    size_mib: int
    fs: str = EXTRA_DEFAULT_FS
    label: str = ""


@dataclass(frozen=True)
class LayoutOptions:
    """install.partitions sizes, install.extra-partitions, and the slot sizes to reserve
    (install.system.size, passive.size, recovery-system.size), all in MiB."""

    sizes: Mapping[str, int] = field(default_factory=dict)  # partition name → MiB
    extra: tuple[ExtraPartition, ...] = ()
    system_mib: int = 0
    passive_mib: int = 0
    recovery_mib: int = 0


def _sized(spec: PartitionSpec, want: int | None, default_mib: int,
           least_mib: int) -> PartitionSpec:
    """The spec at its install.partitions size (`want`, MiB), refused below `least_mib`
    (what it must hold); without one, at `default_mib`."""
    if want is None:
        return dataclasses.replace(spec, size_mib=default_mib)
    if want == 0 and spec.name == "persistent":  # Kairos's default: the rest of the disk
        return dataclasses.replace(spec, size_mib=0)
    least = max(MIN_PART_MIB.get(spec.name, 1), least_mib)
    if want < least:
        raise BadInput(f"install.partitions.{spec.name}.size is {want} MiB, {spec.label} "
                       f"needs at least {least} MiB", f"set it to {least} or more, or drop it")
    return dataclasses.replace(spec, size_mib=want)


def _extra_spec(extra: ExtraPartition) -> PartitionSpec:
    guid = GUID_BASIC_DATA if extra.fs == "vfat" else GUID_LINUX_FS
    return PartitionSpec(extra.name, extra.label if extra.fs != "none" else "", extra.fs,
                         extra.size_mib, guid)


def install_specs(slot_size: int, recovery_size: int,
                  opts: LayoutOptions | None = None) -> list[PartitionSpec]:
    """Kairos's partitions for these images (bytes), sized by `opts`, then the extra
    partitions; the one partition of size 0 goes last and takes the rest of the disk."""
    opts = opts or LayoutOptions()
    # What the images need, with the reservations of system/passive/recovery-system.size:
    # COS_STATE holds active, passive and an upgrade's transition image.
    active = max(slot_size, opts.system_mib * MiB)
    passive = max(slot_size, opts.passive_mib * MiB)
    need = {"state": ext4_size_mib(2 * active + passive + STATE_EXTRA),
            "recovery": ext4_size_mib(2 * max(recovery_size, opts.recovery_mib * MiB))}
    specs = []
    for spec in kairos_specs(slot_size, recovery_size):
        if spec.name == "bios":
            specs.append(spec)
            continue
        # An explicit size may drop a reservation, never go below what the images need
        # (kairos_specs' own size for state and recovery).
        least = spec.size_mib if spec.name in need else 0
        specs.append(_sized(spec, opts.sizes.get(spec.name),
                            need.get(spec.name, spec.size_mib), least))
    specs += [_extra_spec(e) for e in opts.extra]
    rest = [s for s in specs if s.size_mib == 0]
    if len(rest) > 1:
        raise BadInput(f"partitions {', '.join(s.name for s in rest)} all have size 0 (the "
                       "rest of the disk); only one can",
                       "give install.partitions.persistent.size (MiB) or the extra "
                       "partition a size")
    return [s for s in specs if s.size_mib != 0] + rest


def minimum_size(slot_size: int, recovery_size: int, opts: LayoutOptions | None = None) -> int:
    """The smallest disk (bytes) the layout fits on."""
    return minimum_disk_size(install_specs(slot_size, recovery_size, opts))


def validate_cloud_config(path: Path) -> None:
    """Refuse a cloud-config with errors before anything is written: the first error names
    file, line, column and key; unknown keys (warnings) are only logged."""
    from kairos.config.validate import validate_file
    if not path.is_file():
        raise BadInput(f"cloud-config {path} does not exist", "check the path")
    result = validate_file(path)
    for warning in result.warnings:
        log.warning("%s", warning)
    if result.errors:
        first = result.errors[0]
        more = f" (and {len(result.errors) - 1} more)" if len(result.errors) > 1 else ""
        text = str(first)
        if first.hint and text.endswith(f" (hint: {first.hint})"):
            text = text[: -len(f" (hint: {first.hint})")]
        raise BadInput(text + more,
                       first.hint or f"fix it; 'kairos config validate {path}' lists every problem")


def check_slot_image(path: Path, what: str) -> int:
    """Size of a squashfs slot image GRUB can boot from; BadInput when it cannot."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(96)
    except FileNotFoundError:
        raise BadInput(f"{what} {path} does not exist", "build the image first") from None
    except IsADirectoryError:
        raise BadInput(f"{what} {path} is a directory", "give the squashfs file") from None
    if len(head) < 96 or head[:4] != b"hsqs":
        raise BadInput(f"{what} {path} is not a squashfs image", "build it with mksquashfs")
    (comp,) = struct.unpack_from("<H", head, 20)
    if comp not in GRUB_SQUASHFS_COMPRESSION:
        name = SQUASHFS_COMPRESSION.get(comp, f"id {comp}")
        raise BadInput(f"{what} {path} uses {name} compression, which GRUB cannot read",
                       "rebuild it with mksquashfs -comp xz")
    listing = run(["unsquashfs", "-lc", str(path), "boot/vmlinuz", "boot/initrd"]).stdout
    names = {line.strip().removeprefix("squashfs-root") for line in listing.splitlines()}
    missing = [f for f in ("/boot/vmlinuz", "/boot/initrd") if f not in names]
    if missing:
        raise BadInput(f"{what} {path} has no {' or '.join(missing)}",
                       "GRUB boots the kernel and initrd from inside the slot image")
    return path.stat().st_size


def _build_info(image: Path, size: int) -> dict[str, Any]:
    """build.json of the `kairos build` that made `image` (beside it, naming a rootfs of the
    same name and size); {} when there is none or it describes another file."""
    try:
        info = json.loads((image.parent / "build.json").read_text())
    except (OSError, ValueError):
        return {}
    if (not isinstance(info, dict) or PurePosixPath(str(info.get("rootfs") or "")).name
            != image.name or info.get("rootfs_size") != size):
        return {}
    return info


def _release_of(image: Path, build: Mapping[str, Any]) -> dict[str, str]:
    """/etc/kairos-release of the slot image: the one inside it, else the copy `kairos
    build` leaves beside it (only when build.json says it made this image)."""
    res = run(["unsquashfs", "-cat", str(image), "etc/kairos-release"], check=False)
    if res.returncode == 0 and res.stdout.strip():
        return parse_env(res.stdout)
    if build:
        try:
            return parse_env((image.parent / "kairos-release").read_text())
        except OSError:
            pass
    log.warning("%s has no /etc/kairos-release: its record has no version", image)
    return {}


def image_record(image: Path) -> slotstate.ImageRecord:
    """The record of a slot image file as install writes it: source `file:PATH`, the OCI
    digest and sha256 from build.json when it describes this file (else sha256 computed),
    version and arch from its kairos-release. The inode is filled in once it is written."""
    size = image.stat().st_size
    build = _build_info(image, size)
    sha = str(build.get("rootfs_sha256") or "") or sha256_file(image)
    release = _release_of(image, build)
    return slotstate.ImageRecord(
        source=f"file:{image.resolve()}", digest=str(build.get("oci_digest") or ""),
        sha256=sha, size=size,
        version=release.get("KAIROS_VERSION") or release.get("VERSION", ""),
        arch=release.get("KAIROS_ARCH", ""), date=slotstate.now())


@dataclass(frozen=True)
class InstallPlan:
    """Everything `install` writes, decided and checked up front."""

    layout: DiskLayout
    slot_image: Path
    recovery_image: Path
    cloud_configs: tuple[Path, ...]
    grub_env: dict[str, str] = field(hash=False)
    grub_cfg: str
    disk_guid: str = KAIROS_DISK_GUID
    # role (active, passive, recovery) → its record (without inode: known once written)
    records: dict[str, slotstate.ImageRecord] = field(default_factory=dict, hash=False)

    def summary(self) -> dict[str, object]:
        """Plain values for --json output."""
        return {
            "disk_size": self.layout.disk_size,
            "slot_image": str(self.slot_image),
            "recovery_image": str(self.recovery_image),
            "cloud_configs": [str(p) for p in self.cloud_configs],
            "grub_env": dict(self.grub_env),
            "images": {role: dataclasses.asdict(rec) for role, rec in self.records.items()},
            "partitions": [
                {"number": p.number, "name": p.name, "label": p.spec.label, "fs": p.spec.fs,
                 "start": p.offset, "size": p.size}
                for p in self.layout.partitions
            ],
        }


def plan_install(
    slot_image: Path,
    *,
    recovery_image: Path | None,
    disk_size: int | None,
    cloud_configs: Sequence[Path],
    grub_options: Mapping[str, object],
    cfg_options: GrubCfgOptions | None = None,
    layout: LayoutOptions | None = None,
) -> InstallPlan:
    """Check the inputs and lay out the disk; raises BadInput before anything is written."""
    require(*TOOLS)
    slot_size = check_slot_image(slot_image, "slot image")
    recovery = recovery_image or slot_image
    recovery_size = slot_size if recovery == slot_image else check_slot_image(
        recovery, "recovery image")
    for cfg in cloud_configs:
        validate_cloud_config(cfg)
    if len(cloud_configs) > 10:
        raise BadInput("at most 10 cloud-configs can be installed (90_ to 99_custom.yaml)",
                       "merge some of them")
    env = {str(k): "" if v is None else str(v) for k, v in grub_options.items()}
    grubenv.encode(env)  # overflow or a bad name fails here, not halfway through
    disk = DiskLayout.compute(install_specs(slot_size, recovery_size, layout), disk_size)
    slot_record = image_record(slot_image)
    records = {"active": slot_record, "passive": slot_record,
               "recovery": slot_record if recovery == slot_image else image_record(recovery)}
    return InstallPlan(disk, slot_image, recovery, tuple(cloud_configs), env,
                       render_grub_cfg(cfg_options), records=records)


def _stage_oem(plan: InstallPlan, root: Path) -> None:
    root.mkdir()
    grubenv.write(root / "grubenv", plan.grub_env)
    for i, cfg in enumerate(plan.cloud_configs):
        dest = root / f"{90 + i}_custom.yaml"
        shutil.copyfile(cfg, dest)
        os.chmod(dest, 0o640)


def _stage_state(plan: InstallPlan, root: Path) -> None:
    (root / "cOS").mkdir(parents=True)
    (root / "grub2").mkdir()
    (root / "grub2" / "grub.cfg").write_text(plan.grub_cfg)


def _prepare_target(plan: InstallPlan, target: Path) -> tuple[bool, bool]:
    """Check or create the target; returns (is_device, created_by_us)."""
    size = plan.layout.disk_size
    if blockdev.is_block_device(target):
        refuse_if_in_use(target)
        if blockdev.logical_sector_size(target) != SECTOR:
            raise BadInput(f"{target} has {blockdev.logical_sector_size(target)}-byte "
                           "sectors", "only 512-byte logical sectors are supported")
        have = blockdev.device_size(target)
        if have < size:
            raise BadInput(f"{target} has {have} bytes, the plan needs {size}",
                           "plan the install with the device's size")
        return True, False
    if target.exists() and not target.is_file():
        raise BadInput(f"{target} is neither a block device nor a regular file",
                       "give a /dev node or an image file path")
    created = not target.exists()
    fd = os.open(target, os.O_RDWR | os.O_CREAT | (os.O_EXCL if created else 0), 0o644)
    try:
        os.ftruncate(fd, size)  # sparse: untouched areas cost nothing
    finally:
        os.close(fd)
    return False, created


def _fs_targets(plan: InstallPlan, target: Path, is_device: bool,
                fresh: bool) -> dict[str, FsTarget]:
    parts = plan.layout.partitions
    if is_device:
        with step(f"reading the new partitions of {target}"):
            nodes = blockdev.reread_partitions(target, len(parts))
        return {p.name: FsTarget(nodes[p.number], 0, p.size) for p in parts}
    return {p.name: FsTarget(target, p.offset, p.size, fresh) for p in parts}


def _write_filesystems(plan: InstallPlan, fs: dict[str, FsTarget], work: Path) -> None:
    specs = {p.name: p for p in plan.layout.partitions}
    _stage_oem(plan, work / "oem")
    _stage_state(plan, work / "state")
    (work / "recovery" / "cOS").mkdir(parents=True)
    staged = {"oem": work / "oem", "state": work / "state", "recovery": work / "recovery"}
    large = {
        "state": [LargeFile(plan.slot_image, "/cOS/active.img"),
                  LargeFile(plan.slot_image, "/cOS/passive.img")],
        "recovery": [LargeFile(plan.recovery_image, "/cOS/recovery.squashfs")],
    }
    for name, part in specs.items():
        if name not in KAIROS_PARTS:
            _mkfs_extra(fs[name], part)
            continue
        if part.spec.fs != "ext4":
            continue
        with step(f"creating {part.spec.label} ({part.size // 2**20} MiB)"):
            mkfs_ext4(fs[name], part.spec.label, staged.get(name))
            if name in staged:
                chown_root(fs[name], staged[name])
            add_large_files(fs[name], large.get(name, []))
            if name in SLOT_FILES and plan.records:
                _write_records(plan, fs[name], part.spec.label, SLOT_FILES[name], work)


def _mkfs_extra(target: FsTarget, part: Partition) -> None:
    """An install.extra-partitions filesystem: empty, labelled, or nothing for `none`."""
    spec = part.spec
    if spec.fs == "none":
        return
    with step(f"creating {spec.fs} on the extra partition {spec.name} "
              f"({part.size // MiB} MiB)"):
        if spec.fs == "vfat":
            argv = ["mkfs.vfat", *(["-n", spec.label] if spec.label else [])]
            if target.offset:
                argv.append(f"--offset={target.offset // SECTOR}")
            run([*argv, str(target.path), str(target.size // 1024)])
            return
        opts = [f"offset={target.offset}"] if target.offset else []
        argv = ["mkfs.ext4", "-F", "-q", "-t", spec.fs, *(["-L", spec.label] if spec.label
                                                           else [])]
        run([*argv, *(["-E", ",".join(opts)] if opts else []), str(target.path),
             f"{target.size // 1024}k"])


def _write_records(plan: InstallPlan, target: FsTarget, label: str, files: Mapping[str, str],
                   work: Path) -> None:
    """state.yaml at the filesystem's root: the record of each slot file just written, with
    its inode (read back with debugfs), so `kairos state` and the upgrade know the files."""
    listed: dict[str, dict[str, slotstate.Stat]] = {}
    roles: dict[str, slotstate.ImageRecord] = {}
    for role, dest in files.items():
        path = PurePosixPath(dest)
        parent = str(path.parent)
        if parent not in listed:
            out = run(["debugfs", "-R", f"ls -p {parent}", target.e2fs_spec]).stdout
            listed[parent] = slotstate.parse_debugfs_ls(out)
        rec = plan.records[role]
        found = listed[parent].get(path.name)
        if found is None or found[1] != rec.size:
            raise KairosError(f"{dest} is not in the new {label} filesystem as written",
                              "check free space and the source files")
        roles[role] = dataclasses.replace(rec, inode=found[0])
    text = work / f"{label}-{slotstate.STATE_FILE}"
    text.write_text(slotstate.render(label, roles))
    add_large_files(target, [LargeFile(text, f"/{slotstate.STATE_FILE}")])


def _write_grub(plan: InstallPlan, target: Path, fs: dict[str, FsTarget], work: Path) -> None:
    with step("installing GRUB for UEFI"):
        efi: Partition = plan.layout.get("efi")
        mkfs_vfat(fs["efi"], efi.spec.label)
        install_efi(fs["efi"], build_efi_image(work / "BOOTX64.EFI"))
    with step("installing GRUB for BIOS"):
        bios = plan.layout.get("bios")
        write_bios_boot(target, bios.start_lba, bios.sectors, build_core_img(work / "core.img"))


def _flush(target: Path, is_device: bool) -> None:
    """Everything GRUB reads must be on disk, not in a cache, before we report success."""
    if is_device:
        os.sync()  # the partition nodes have their own caches; sync flushes them all
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install(plan: InstallPlan, target: Path) -> None:
    """Write the planned disk onto `target` (image file, created if missing, or /dev node).

    On failure an image file we created is removed; nothing is ever left mounted (nothing is
    mounted at all).
    """
    require(*TOOLS)
    is_device, created = _prepare_target(plan, target)
    try:
        with step(f"writing the partition table of {target}"):
            write_gpt(target, plan.layout, disk_guid=plan.disk_guid, zap=not created)
        fs = _fs_targets(plan, target, is_device, fresh=created)
        with tempdir(prefix="kairos-install-") as work:
            _write_filesystems(plan, fs, work)
            _write_grub(plan, target, fs, work)
        with step("syncing"):
            _flush(target, is_device)
    except BaseException:
        if created:
            target.unlink(missing_ok=True)
        raise


def plan_for_device(device: Path, slot_image: Path, **kwargs: Any) -> InstallPlan:
    """plan_install sized to a block device."""
    if not blockdev.is_block_device(device):
        raise BadInput(f"{device} is not a block device", "give a disk such as /dev/sda")
    return plan_install(slot_image, disk_size=blockdev.device_size(device), **kwargs)


def refuse_if_in_use(device: Path) -> None:
    users = blockdev.users_of(device)
    if users:
        raise BadInput(f"{device} is in use ({'; '.join(users)})",
                       "unmount it (and stop swap/LVM on it) first")
