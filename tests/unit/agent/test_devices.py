"""Which disk an install goes to: reading /sys and /proc, `auto`, paths, by-* links,
script://, and the sizes the layout needs. No root: a fake /sys, /proc and /dev."""

from __future__ import annotations

from pathlib import Path

import pytest

from kairos.agent import devices
from kairos.agent.devices import Disk, Inventory, choose_auto, resolve_device
from kairos.agent.install import ExtraPartition, LayoutOptions, install_specs, minimum_size
from kairos.disk.layout import ext4_size_mib, minimum_disk_size
from kairos.disk.sizes import GiB, MiB
from kairos.errors import BadInput

SLOT = 600 * MiB


# ------------------------------------------------------------------------------ helpers

def disk(name: str, gib: float = 20, **kw: object) -> Disk:
    return Disk(name=name, size=int(gib * GiB), **kw)  # type: ignore[arg-type]


def inventory(*disks: Disk) -> Inventory:
    return Inventory(disks, {p: d.name for d in disks for p in d.partitions})


@pytest.fixture
def dev(tmp_path: Path) -> Path:
    """A fake /dev: nodes are plain files, by-* links point at them."""
    root = tmp_path / "dev"
    for name in ("vda", "vda1", "vdb", "vdc", "vdc1", "sr0", "loop0", "zram0"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    links = {"by-id/virtio-data": "../../vdb", "by-path/pci-0000:00:05.0": "../../vdb",
             "by-label/DATA": "../../vdc1", "by-uuid/1234-abcd": "../../vdc1",
             "by-diskseq/3": "../../vdc", "by-partlabel/persistent": "../../vdc1",
             "by-partuuid/abcd-01": "../../vdc1", "by-id/escape": "../../../etc/passwd",
             "by-id/cd": "../../sr0", "by-id/gone": "../../vdz"}
    for rel, target in links.items():
        link = root / "disk" / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    return root


def machine() -> Inventory:
    """vda: the running system; vdb: empty 40G; vdc: 100G with a partition; more to skip."""
    return inventory(
        disk("vda", 30, partitions=("vda1",), mounts=("/",), boot=True, transport="virtio"),
        disk("vdb", 40, transport="virtio"),
        disk("vdc", 100, partitions=("vdc1",), transport="virtio"),
        disk("sr0", 1, read_only=True, removable=True),
        disk("loop0", 2), disk("zram0", 4))


def resolve(spec: str, inv: Inventory, dev: Path, **kw: object) -> devices.Target:
    return resolve_device(spec, inv, dev_root=dev, is_node=lambda p: p.is_file(),
                          **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ reading

def fake_sys(tmp: Path) -> tuple[Path, Path, Path]:
    """/sys/block with vda (root, two partitions), vdb (usb, removable, held by dm-0),
    vdc (empty), sdd (read-only), loop0 (the live root, backed by a file on vde), vde
    (the live medium, mounted at /run/initramfs/live), vdf (swap), sr0."""
    devices_dir = tmp / "sys" / "devices"
    block = tmp / "sys" / "block"
    block.mkdir(parents=True)
    specs = {
        "vda": ("pci0000:00/0000:00:04.0/virtio2/block/vda", "254:0", 41943040, {
            "vda1": "254:1", "vda2": "254:2"}),
        "vdb": ("pci0000:00/0000:00:1d.0/usb2/2-1/host6/target6:0:0/block/vdb", "8:16",
                20971520, {}),
        "vdc": ("pci0000:00/0000:00:05.0/virtio3/block/vdc", "254:32", 83886080, {}),
        "sdd": ("pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/block/sdd", "8:48",
                10485760, {}),
        "loop0": ("virtual/block/loop0", "7:0", 2097152, {}),
        "vde": ("pci0000:00/0000:00:06.0/virtio4/block/vde", "254:64", 4194304, {
            "vde1": "254:65"}),
        "vdf": ("pci0000:00/0000:00:07.0/virtio5/block/vdf", "254:80", 4194304, {}),
        "sr0": ("pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/block/sr0", "11:0", 0, {}),
    }
    for name, (rel, number, sectors, parts) in specs.items():
        d = devices_dir / rel
        d.mkdir(parents=True)
        (d / "dev").write_text(number + "\n")
        (d / "size").write_text(f"{sectors}\n")
        (d / "removable").write_text("1\n" if name in ("vdb", "sr0") else "0\n")
        (d / "ro").write_text("1\n" if name in ("sdd", "sr0") else "0\n")
        (d / "holders").mkdir()
        for part, pnum in parts.items():
            (d / part).mkdir()
            (d / part / "partition").write_text(part[-1] + "\n")
            (d / part / "dev").write_text(pnum + "\n")
            (d / part / "holders").mkdir()
        (block / name).symlink_to(d)
    (devices_dir / specs["vdb"][0] / "holders" / "dm-0").mkdir()
    (devices_dir / specs["vdb"][0] / "device").mkdir()
    (devices_dir / specs["vdb"][0] / "device" / "model").write_text("  Flash   Disk  \n")
    loop = devices_dir / specs["loop0"][0] / "loop"
    loop.mkdir()
    (loop / "backing_file").write_text("/run/initramfs/live/rootfs.squashfs\n")
    mountinfo = tmp / "mountinfo"
    mountinfo.write_text(
        "21 1 254:1 / / ro,relatime - ext4 /dev/vda1 ro\n"
        "22 21 254:2 / /mnt/my\\040data rw - ext4 /dev/vda2 rw\n"
        "23 21 254:65 / /run/initramfs/live ro - iso9660 /dev/vde1 ro\n"
        "24 21 7:0 / /run/rootfsbase ro - squashfs /dev/loop0 ro\n"
        "25 21 0:23 / /run rw - tmpfs tmpfs rw\n")
    swaps = tmp / "swaps"
    swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n/dev/vdf\tpartition\t1\t0\t-2\n")
    return block, mountinfo, swaps


def test_read_inventory(tmp_path: Path) -> None:
    block, mountinfo, swaps = fake_sys(tmp_path)
    inv = devices.read_inventory(block, mountinfo, swaps)
    by = {d.name: d for d in inv.disks}
    assert sorted(by) == ["loop0", "sdd", "sr0", "vda", "vdb", "vdc", "vde", "vdf"]
    vda = by["vda"]
    assert vda.size == 20 * GiB and vda.partitions == ("vda1", "vda2")
    assert vda.mounts == ("/", "/mnt/my data") and vda.boot and vda.transport == "virtio"
    assert by["vdb"].removable and by["vdb"].transport == "usb"
    assert by["vdb"].model == "Flash Disk" and by["vdb"].users == ("dm-0 holds it",)
    assert by["sdd"].read_only and by["sdd"].transport == "sata"
    assert by["vdc"] == Disk("vdc", 40 * GiB, "254:32", transport="virtio")
    assert by["vde"].boot and by["vde"].users == ("backs loop0",)
    assert by["loop0"].boot and by["loop0"].kind == "loop"
    assert by["vdf"].users == ("swap on vdf",) and not by["vdf"].boot
    assert by["sr0"].kind == "sr" and by["sr0"].size == 0
    assert inv.parents == {"vda1": "vda", "vda2": "vda", "vde1": "vde"}
    # On this machine auto takes vdc: everything else is skipped for a reason.
    assert choose_auto(inv).disk.name == "vdc"


def test_read_inventory_without_sys(tmp_path: Path) -> None:
    inv = devices.read_inventory(tmp_path / "nope", tmp_path / "nope", tmp_path / "nope")
    assert inv.disks == ()


@pytest.mark.parametrize(("name", "sysfs", "transport"), [
    ("nvme0n1", "/sys/devices/pci0000:00/0000:00:03.0/nvme/nvme0/nvme0n1", "nvme"),
    ("mmcblk0", "/sys/devices/platform/mmc0/mmc_host/mmc0/block/mmcblk0", "mmc"),
    ("sda", "/sys/devices/pci0000:00/usb1/1-1/host2/target2:0:0/block/sda", "usb"),
    ("sda", "/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/block/sda", "sata"),
    ("sda", "/sys/devices/platform/host3/target3:0:0/block/sda", "scsi"),
    ("xvda", "/sys/devices/vbd-51712/block/xvda", ""),
])
def test_transport(name: str, sysfs: str, transport: str) -> None:
    assert devices.transport_of(name, sysfs) == transport


# ------------------------------------------------------------------------------ auto

def test_auto_takes_the_largest_empty_disk() -> None:
    inv = inventory(disk("sda", 100, partitions=("sda1",)), disk("sdb", 40), disk("sdc", 60),
                    disk("sdd", 10))
    target = choose_auto(inv)
    assert target.path == Path("/dev/sdc")
    assert target.how == "auto: the largest free disk of 3"


def test_auto_takes_the_first_of_equal_disks() -> None:
    assert choose_auto(inventory(disk("sdb", 40), disk("sdc", 40))).disk.name == "sdb"


@pytest.mark.parametrize(("skipped", "reason"), [
    (disk("sdz", 500, boot=True, mounts=("/run/initramfs/live",)),
     "the boot medium (the running system is on it)"),
    (disk("sdz", 500, read_only=True), "read-only"),
    (disk("sdz", 500, partitions=("sdz1",)), "has partitions (sdz1)"),
    (disk("sdz", 500, mounts=("/mnt",)), "mounted on /mnt"),
    (disk("sdz", 500, users=("dm-0 holds it",)), "in use (dm-0 holds it)"),
    (disk("sdz", 0), "no medium"),
    (disk("loop7", 500), "a loop device"),
    (disk("ram0", 500), "a ram device"),
    (disk("zram0", 500), "a zram device"),
    (disk("sr0", 500), "a sr device"),
    (disk("dm-3", 500), "a dm device"),
    (disk("md127", 500), "a md device"),
    (disk("nbd0", 500), "a nbd device"),
])
def test_auto_skips(skipped: Disk, reason: str) -> None:
    assert devices.why_not_auto(skipped) == reason
    assert choose_auto(inventory(skipped, disk("sdb", 8))).disk.name == "sdb"


def test_auto_skips_a_disk_too_small_for_the_layout() -> None:
    small = disk("sdb", 2)
    assert devices.why_not_auto(small, 3 * GiB) == "too small (2G, the layout needs 3072M)"
    with pytest.raises(BadInput, match=r"sdb: too small \(2G, the layout needs 3072M\)"):
        choose_auto(inventory(small), 3 * GiB)


def test_auto_refuses_with_what_it_saw() -> None:
    inv = inventory(*(d for d in machine().disks if d.name != "vdb"))
    with pytest.raises(BadInput) as err:
        choose_auto(inv)
    msg = err.value.message
    assert msg == ("device: auto found no disk to install to: "
                   "vda: the boot medium (the running system is on it); "
                   "vdc: has partitions (vdc1); "
                   "3 loop/RAM/optical/virtual device(s) skipped")
    assert "--device" in err.value.hint


def test_auto_on_a_machine_without_disks() -> None:
    with pytest.raises(BadInput, match="no disks at all"):
        choose_auto(inventory())


def test_auto_through_resolve_device(dev: Path) -> None:
    assert resolve("auto", machine(), dev).disk.name == "vdb"
    assert resolve("  auto\n", machine(), dev).disk.name == "vdb"


# ------------------------------------------------------------------------------ paths

def test_a_whole_disk_by_path(dev: Path) -> None:
    target = resolve(str(dev / "vdb"), machine(), dev)
    assert target.disk.name == "vdb" and target.how == str(dev / "vdb")


def test_a_disk_with_partitions_may_be_named(dev: Path) -> None:
    assert resolve(str(dev / "vdc"), machine(), dev).disk.name == "vdc"


def test_a_loop_device_may_be_named(dev: Path) -> None:
    assert resolve(str(dev / "loop0"), machine(), dev).disk.name == "loop0"


@pytest.mark.parametrize(("spec", "message"), [
    ("vdb", "is not an absolute /dev path"),
    ("", "no device given"),
    ("{dev}/vda1", "is a partition of {dev}/vda, not a whole disk"),
    ("{dev}/vdc1", "is a partition of {dev}/vdc"),
    ("{dev}/vdz", "does not exist"),
    ("{dev}/vda", "holds the running system"),
    ("{dev}/sr0", "is an optical drive"),
    ("{dev}/zram0", "is a compressed RAM disk"),
    ("/etc/passwd", "is /etc/passwd, not a disk in"),
    ("{dev}/../etc", "does not exist"),
    ("{dev}/disk/../vdb", "unknown /dev/disk/.."),
    ("{dev}/vdb\n/dev/vda", "is not an absolute /dev path"),
])
def test_bad_paths(spec: str, message: str, dev: Path) -> None:
    with pytest.raises(BadInput, match=None) as err:
        resolve(spec.format(dev=dev), machine(), dev)
    assert message.format(dev=dev) in err.value.message


def test_a_path_the_kernel_does_not_know(dev: Path) -> None:
    (dev / "weird").write_text("")
    with pytest.raises(BadInput, match="is not a disk this machine has"):
        resolve(str(dev / "weird"), machine(), dev)


def test_a_node_that_is_not_a_block_device(dev: Path) -> None:
    with pytest.raises(BadInput, match="is not a block device"):
        resolve_device(str(dev / "vdb"), machine(), dev_root=dev, is_node=lambda p: False)


@pytest.mark.parametrize(("what", "message"), [
    (disk("vdb", 40, mounts=("/mnt/a", "/mnt/b")), "is in use (mounted on /mnt/a, /mnt/b)"),
    (disk("vdb", 40, users=("swap on vdb1",)), "is in use (swap on vdb1)"),
    (disk("vdb", 40, read_only=True), "is read-only"),
    (disk("vdb", 0), "has no medium"),
    (disk("vdb", 40, boot=True), "holds the running system"),
])
def test_named_disks_that_are_refused(what: Disk, message: str, dev: Path) -> None:
    with pytest.raises(BadInput) as err:
        resolve(str(dev / "vdb"), inventory(what), dev)
    assert message in err.value.message


# ------------------------------------------------------------------------------ by-* links

@pytest.mark.parametrize("link", ["by-id/virtio-data", "by-path/pci-0000:00:05.0"])
def test_by_links_to_a_whole_disk(link: str, dev: Path) -> None:
    target = resolve(str(dev / "disk" / link), machine(), dev)
    assert target.disk.name == "vdb"
    assert target.how == f"{dev}/disk/{link} → {dev}/vdb"


def test_by_diskseq_to_a_disk_with_partitions(dev: Path) -> None:
    assert resolve(str(dev / "disk/by-diskseq/3"), machine(), dev).disk.name == "vdc"


@pytest.mark.parametrize(("link", "message"), [
    ("by-label/DATA", "is a partition of {dev}/vdc"),
    ("by-uuid/1234-abcd", "is a partition of {dev}/vdc"),
    ("by-partlabel/persistent", "names a partition (by-partlabel)"),
    ("by-partuuid/abcd-01", "names a partition (by-partuuid)"),
    ("by-id/escape", "/etc/passwd, not a disk in {dev}"),
    ("by-id/cd", "is an optical drive"),
    ("by-id/gone", "is not a disk this machine has"),
    ("by-id/missing", "does not exist"),
    ("by-foo/x", "unknown /dev/disk/by-foo"),
    ("by-id", "is not a /dev/disk/by-*/NAME link"),
])
def test_bad_by_links(link: str, message: str, dev: Path) -> None:
    with pytest.raises(BadInput) as err:
        resolve(str(dev / "disk" / link), machine(), dev)
    assert message.format(dev=dev) in err.value.message


# ------------------------------------------------------------------------------ script://

def script(tmp: Path, body: str, *, mode: int = 0o755, name: str = "pick") -> Path:
    path = tmp / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(mode)
    return path


def test_script_names_the_disk(tmp_path: Path, dev: Path) -> None:
    s = script(tmp_path, f"echo '  {dev}/vdb  '; echo")
    target = resolve(f"script://{s}", machine(), dev)
    assert target.disk.name == "vdb"
    assert target.how == f"{s} printed {dev}/vdb"


def test_script_may_print_a_by_link(tmp_path: Path, dev: Path) -> None:
    s = script(tmp_path, f"echo {dev}/disk/by-id/virtio-data")
    assert resolve(f"script://{s}", machine(), dev).disk.name == "vdb"


def test_script_choice_is_checked_like_any_other(tmp_path: Path, dev: Path) -> None:
    s = script(tmp_path, f"echo {dev}/vda")
    with pytest.raises(BadInput, match="holds the running system"):
        resolve(f"script://{s}", machine(), dev)
    big = script(tmp_path, f"echo {dev}/vdb", name="big")
    with pytest.raises(BadInput, match="is too small: 40G, the layout needs at least"):
        resolve(f"script://{big}", machine(), dev, need=50 * GiB)


@pytest.mark.parametrize(("body", "message"), [
    ("true", "printed 0 lines, not one device path"),
    ("echo /dev/vdb; echo /dev/vdc", "printed 2 lines"),
    ("echo vdb", "printed 'vdb', not a device path"),
    ("printf '/dev/vdb\\033[2J\\n'", "not a device path"),
    ("echo '/dev/vdb; rm -rf /'", "not a device path"),
    ("head -c 10000 /dev/zero | tr '\\0' a", "printed 10000 characters"),
    ("echo /etc/passwd", "is /etc/passwd, not a disk in"),
    ("echo {dev}/../../etc/passwd", "does not exist"),
    ("echo {dev}/disk/by-id/escape", "/etc/passwd, not a disk in"),
    ("echo {dev}/vdc1", "is a partition of"),
    ("echo {dev}/nope", "does not exist"),
    ("echo oops >&2; exit 3", "failed with exit code 3: oops"),
])
def test_script_output_that_is_refused(body: str, message: str, tmp_path: Path,
                                       dev: Path) -> None:
    s = script(tmp_path, body.format(dev=dev))
    with pytest.raises(BadInput) as err:
        resolve(f"script://{s}", machine(), dev)
    assert message in err.value.message


def test_script_that_does_not_finish(tmp_path: Path) -> None:
    s = script(tmp_path, "sleep 30")
    with pytest.raises(BadInput, match=r"did not finish within 0.5 s"):
        devices.run_script(s, timeout=0.5)


@pytest.mark.parametrize(("spec", "message"), [
    ("script://pick", "does not name an absolute script path"),
    ("script://{tmp}/missing", "does not exist"),
    ("script://{tmp}/plain", "is not executable"),
    ("script://{tmp}/noshebang", "cannot be run"),
])
def test_bad_scripts(spec: str, message: str, tmp_path: Path, dev: Path) -> None:
    script(tmp_path, "echo /dev/vdb", mode=0o644, name="plain")
    (tmp_path / "noshebang").write_bytes(b"\x7fELF garbage")
    (tmp_path / "noshebang").chmod(0o755)
    with pytest.raises(BadInput) as err:
        resolve(spec.format(tmp=tmp_path), machine(), dev)
    assert message in err.value.message


def test_script_runs_without_a_shell(tmp_path: Path, dev: Path) -> None:
    """The path is exec'd as is: shell words in it are no command."""
    marker = tmp_path / "ran"
    with pytest.raises(BadInput):
        resolve(f"script://{tmp_path}/x;touch {marker}", machine(), dev)
    assert not marker.exists()


def test_the_script_gets_the_timeout(tmp_path: Path, dev: Path) -> None:
    seen: list[Path] = []

    def runner(path: Path) -> str:
        seen.append(path)
        return f"{dev}/vdb\n"

    s = script(tmp_path, "exit 1")
    assert resolve(f"script://{s}", machine(), dev, script_runner=runner).disk.name == "vdb"
    assert seen == [s]
    assert devices.SCRIPT_TIMEOUT == 60.0


# ------------------------------------------------------------------------------ sizes

def test_minimum_size_is_the_layouts() -> None:
    assert minimum_size(SLOT, SLOT) == minimum_disk_size(install_specs(SLOT, SLOT))
    need = minimum_size(SLOT, SLOT)
    # bios, efi, oem, recovery (2 images), state (3 images), persistent's floor, 2 MiB of GPT
    mib = 1 + 64 + 64 + ext4_size_mib(2 * SLOT) + ext4_size_mib(3 * SLOT + MiB) + 64 + 2
    assert need == mib * MiB


def test_a_disk_just_large_enough_is_taken(dev: Path) -> None:
    need = minimum_size(SLOT, SLOT)
    exact = inventory(Disk("vdb", need), Disk("vdc", need - MiB))
    assert choose_auto(exact, need).disk.name == "vdb"
    with pytest.raises(BadInput, match="is too small"):
        resolve(str(dev / "vdc"), exact, dev, need=need)


def test_reservations_grow_the_layout() -> None:
    plain = {s.name: s.size_mib for s in install_specs(SLOT, SLOT)}
    grown = {s.name: s.size_mib for s in install_specs(SLOT, SLOT, LayoutOptions(
        system_mib=1000, passive_mib=800, recovery_mib=900))}
    assert grown["state"] > plain["state"] and grown["recovery"] > plain["recovery"]
    assert grown["state"] == int((2 * 1000 + 800 + 1) * 1.08) + 1 + 96
    # a reservation smaller than the image changes nothing
    small = install_specs(SLOT, SLOT, LayoutOptions(system_mib=10, recovery_mib=10))
    assert {s.name: s.size_mib for s in small} == plain


def test_partition_sizes_and_extra_partitions() -> None:
    opts = LayoutOptions(sizes={"oem": 128, "persistent": 2048, "efi": 100},
                         extra=(ExtraPartition("data", 0, "ext4", "DATA"),
                                ExtraPartition("scratch", 256, "vfat", "SCRATCH")))
    specs = install_specs(SLOT, SLOT, opts)
    assert [s.name for s in specs] == ["bios", "efi", "oem", "recovery", "state",
                                       "persistent", "scratch", "data"]
    sizes = {s.name: s.size_mib for s in specs}
    assert (sizes["efi"], sizes["oem"], sizes["persistent"], sizes["scratch"],
            sizes["data"]) == (100, 128, 2048, 256, 0)
    assert specs[-2].type_guid.startswith("EBD0A0A2") and specs[-2].label == "SCRATCH"
    none = install_specs(SLOT, SLOT, LayoutOptions(
        sizes={"persistent": 100}, extra=(ExtraPartition("raw", 10, "none", "X"),)))
    # no partition of size 0: the extra one stays last and the rest of the disk is unused
    assert none[-1].name == "raw" and none[-1].fs == "none" and none[-1].label == ""


@pytest.mark.parametrize(("opts", "message"), [
    (LayoutOptions(sizes={"state": 100}), "install.partitions.state.size is 100 MiB, "
     "COS_STATE needs at least"),
    (LayoutOptions(sizes={"recovery": 10}), "COS_RECOVERY needs at least"),
    (LayoutOptions(sizes={"efi": 20}), "COS_GRUB needs at least 34 MiB"),
    (LayoutOptions(sizes={"oem": 8}), "COS_OEM needs at least 16 MiB"),
    (LayoutOptions(sizes={"persistent": 10}), "COS_PERSISTENT needs at least 64 MiB"),
    (LayoutOptions(extra=(ExtraPartition("data", 0),)), "partitions persistent, data all "
     "have size 0"),
])
def test_layout_refusals(opts: LayoutOptions, message: str) -> None:
    with pytest.raises(BadInput) as err:
        install_specs(SLOT, SLOT, opts)
    assert message in err.value.message


def test_explicit_state_size_may_drop_a_reservation() -> None:
    floor = {s.name: s.size_mib for s in install_specs(SLOT, SLOT)}["state"]
    specs = install_specs(SLOT, SLOT, LayoutOptions(sizes={"state": floor}, system_mib=5000))
    assert {s.name: s.size_mib for s in specs}["state"] == floor

