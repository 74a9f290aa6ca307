"""Layout math: order, sizes from the images, alignment, the rest of the disk, too small."""

from __future__ import annotations

import pytest

from kairos.disk.layout import (
    ALIGN,
    GUID_BIOS_BOOT,
    GUID_ESP,
    GUID_LINUX_FS,
    DiskLayout,
    ext4_size_mib,
    kairos_specs,
    minimum_disk_size,
)
from kairos.disk.sizes import GiB, MiB
from kairos.errors import BadInput

SLOT = 700 * MiB
RECOVERY = 500 * MiB


def layout(disk: int | None) -> DiskLayout:
    return DiskLayout.compute(kairos_specs(SLOT, RECOVERY), disk)


def test_order_names_labels_and_types() -> None:
    parts = layout(16 * GiB).partitions
    assert [(p.number, p.name, p.spec.label, p.spec.fs) for p in parts] == [
        (1, "bios", "", "none"), (2, "efi", "COS_GRUB", "vfat"), (3, "oem", "COS_OEM", "ext4"),
        (4, "recovery", "COS_RECOVERY", "ext4"), (5, "state", "COS_STATE", "ext4"),
        (6, "persistent", "COS_PERSISTENT", "ext4")]
    assert [p.spec.type_guid for p in parts] == [GUID_BIOS_BOOT, GUID_ESP] + [GUID_LINUX_FS] * 4


def test_sizes_follow_the_images() -> None:
    lay = layout(16 * GiB)
    assert lay.get("bios").size == MiB
    assert lay.get("efi").size == 64 * MiB
    assert lay.get("oem").size == 64 * MiB
    # recovery: current + next recovery image; state: active + passive + transition.
    assert lay.get("recovery").size == ext4_size_mib(2 * RECOVERY) * MiB
    assert lay.get("state").size == ext4_size_mib(3 * SLOT + MiB) * MiB
    assert lay.get("state").size > 3 * SLOT * 1.08
    assert ext4_size_mib(1000 * MiB) == 1080 + 96


def test_partitions_are_aligned_contiguous_and_fill_the_disk() -> None:
    disk = 16 * GiB + 12345 * 512
    lay = layout(disk)
    assert lay.partitions[0].start_lba == 2048
    for a, b in zip(lay.partitions, lay.partitions[1:], strict=False):
        assert b.start_lba == a.end_lba + 1
    for p in lay.partitions:
        assert p.start_lba % ALIGN == 0 and (p.end_lba + 1) % ALIGN == 0
    last = lay.partitions[-1]
    total = disk // 512
    assert last.end_lba <= total - 34  # the backup GPT stays clear
    assert total - 34 - last.end_lba < ALIGN + 34


def test_too_small_says_what_size_to_use() -> None:
    minimum = minimum_disk_size(kairos_specs(SLOT, RECOVERY))
    with pytest.raises(BadInput) as err:
        layout(1 * GiB)
    need = f"{minimum // MiB}M"
    assert err.value.message == (f"disk size 1G is too small: the slots need at least {need}; "
                                 f"use --size {need} or larger")
    lay = layout(minimum)  # exactly the minimum works
    assert lay.get("persistent").size >= 64 * MiB


def test_default_size_is_whole_gib_with_a_persistent_gib() -> None:
    lay = layout(None)
    assert lay.disk_size % GiB == 0
    assert lay.get("persistent").size >= 1023 * MiB
    assert lay.disk_size - GiB < minimum_disk_size(kairos_specs(SLOT, RECOVERY)) + GiB


def test_unknown_partition_name() -> None:
    with pytest.raises(KeyError):
        layout(16 * GiB).get("nope")
