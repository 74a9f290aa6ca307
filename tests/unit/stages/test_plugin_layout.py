from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kairos.stages.context import Context, PluginError
from kairos.stages.fields import PayloadError
from kairos.stages.plugins import layout
from kairos.stages.plugins.layout import GPT_TYPES, DiskState, Layout, PartInfo, Partition

from .helpers import make_step

MIB_SECTORS = 2048


def disk(parts: list[PartInfo], mib: int = 1024) -> DiskState:
    return DiskState(device="/dev/vda", sector_size=512, total_sectors=mib * MIB_SECTORS,
                     label="gpt", partitions=parts)


def test_parse_the_documented_example() -> None:
    spec = layout.parse(make_step(layout={
        "device": {"label": "COS_RECOVERY", "path": "/dev/sda"},
        "expand_partition": {"size": 4096},
        "add_partitions": [{"fsLabel": "COS_STATE", "size": 8192, "pLabel": "state"},
                           {"fsLabel": "COS_PERSISTENT", "filesystem": "ext4"}]}))
    assert spec.device is not None and spec.device.path == "/dev/sda"
    assert spec.expand == 4096
    assert spec.parts == [Partition("COS_STATE", 8192, "state", "ext2"),
                          Partition("COS_PERSISTENT", 0, "", "ext4")]


def test_bad_filesystem_and_xfs_label() -> None:
    with pytest.raises(PayloadError, match="not supported"):
        layout.parse(make_step(layout={"add_partitions": [{"filesystem": "zfs"}]}))
    with pytest.raises(PayloadError, match="12 characters"):
        layout.parse(make_step(layout={"add_partitions": [
            {"filesystem": "xfs", "fsLabel": "THIRTEEN_CHAR"}]}))


def test_plan_add_and_format() -> None:
    state = disk([PartInfo(1, 2048, 100 * MIB_SECTORS, "oem", GPT_TYPES["linux"])])
    actions = layout.plan(Layout(parts=[Partition("DATA", 200, "data", "ext4"),
                                        Partition("REST", 0, "rest", "vfat", bootable=True)]),
                          state)
    assert [a.what for a in actions] == ["add", "format", "add", "format"]
    assert actions[0].input == (f"start={101 * MIB_SECTORS}, size={200 * MIB_SECTORS}, "
                                f'type={GPT_TYPES["linux"]}, name="data"\n')
    assert actions[1].argv == ["mkfs.ext4", "-F", "-L", "DATA", "/dev/vda2"]
    assert f"type={GPT_TYPES['esp']}" in str(actions[2].input)
    assert 'attrs="RequiredPartition"' in str(actions[2].input)
    assert actions[3].argv == ["mkfs.vfat", "-F", "32", "-n", "REST", "/dev/vda3"]


def test_plan_skips_existing_partition_labels_and_checks_space() -> None:
    state = disk([PartInfo(1, 2048, 1000 * MIB_SECTORS, "state", GPT_TYPES["linux"])])
    assert layout.plan(Layout(parts=[Partition("S", 10, "state")]), state) == []
    with pytest.raises(PluginError, match="not enough free space"):
        layout.plan(Layout(parts=[Partition("BIG", 500, "big")]), state)


def test_plan_expand_last_partition() -> None:
    state = disk([PartInfo(1, 2048, 100 * MIB_SECTORS, "oem", GPT_TYPES["linux"]),
                  PartInfo(2, 101 * MIB_SECTORS, 100 * MIB_SECTORS, "persistent",
                           GPT_TYPES["linux"])])
    actions = layout.plan(Layout(expand=0), state)
    assert [a.what for a in actions] == ["expand", "growfs"]
    assert actions[0].argv[-3:] == ["-N", "2", "/dev/vda"]
    assert actions[0].input == f"{101 * MIB_SECTORS}, {state.last_usable - 101 * MIB_SECTORS + 1}\n"
    grown = disk([state.partitions[0], PartInfo(2, 101 * MIB_SECTORS,
                                                state.last_usable - 101 * MIB_SECTORS + 1)])
    assert layout.plan(Layout(expand=0), grown) == []  # every boot after the first: no-op
    with pytest.raises(PluginError, match="cannot grow"):
        layout.plan(Layout(expand=5000), state)


def test_plan_refuses_fat_or_swap_and_empty_disk() -> None:
    with pytest.raises(PluginError, match="swap or FAT"):
        layout.plan(Layout(expand=0), disk([PartInfo(1, 2048, 2048, "", GPT_TYPES["esp"])]))
    with pytest.raises(PluginError, match="no partition"):
        layout.plan(Layout(expand=0), disk([]))


def test_init_disk_plan() -> None:
    actions = layout.plan(Layout(device=layout.Device(path="/dev/vda", init_disk=True),
                                 parts=[Partition("A", 0, "a", "none")]),
                          DiskState("/dev/vda", 512, 1024 * MIB_SECTORS))
    assert [a.what for a in actions] == ["init", "add"]
    assert "label: gpt" in str(actions[0].input)


@pytest.mark.skipif(shutil.which("sfdisk") is None or shutil.which("sgdisk") is None,
                    reason="sfdisk/sgdisk not installed")
def test_apply_on_an_image_file(ctx: Context, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    with open(image, "wb") as fh:
        fh.truncate(64 * 1024 * 1024)
    subprocess.run(["sgdisk", "-n", "1:2048:+10M", "-c", "1:oem", "-n", "2:0:+10M", "-c",
                    "2:persistent", str(image)], check=True, capture_output=True)
    with open(image, "r+b") as fh:  # the disk grew, as a cloud disk does
        fh.truncate(128 * 1024 * 1024)
    step = make_step(layout={"device": {"path": str(image)}, "expand_partition": {"size": 0},
                             "add_partitions": [{"pLabel": "oem", "size": 5}]})
    layout.apply(step, ctx)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(image)], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    last = table["partitions"][-1]
    assert len(table["partitions"]) == 2
    assert last["start"] + last["size"] - 1 == table["lastlba"]
    assert table["lastlba"] > 128 * MIB_SECTORS - 100
    layout.apply(step, ctx)  # second boot: nothing to do, no error
    with pytest.raises(PluginError, match=r"not enough free space"):
        layout.apply(make_step(layout={"device": {"path": str(image)},
                                       "add_partitions": [{"pLabel": "x", "size": 50}]}), ctx)


def test_script_device(ctx: Context) -> None:
    device = layout.resolve_device(ctx, layout.Device(path="script://echo /dev/vdz"))
    assert device == "/dev/vdz"
    with pytest.raises(PluginError, match="printed no device"):
        layout.resolve_device(ctx, layout.Device(path="script://true"))
