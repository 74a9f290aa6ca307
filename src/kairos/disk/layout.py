"""The Kairos disk layout: which partitions, in which order, how large, where they start.

Order and names follow Kairos (bios, efi, oem, recovery, state, persistent). Sizes are
computed from the images so an upgrade always has room:
- recovery holds the recovery image twice (the current one plus a new one written beside it
  before the rename that flips it),
- state holds active + passive + one transition image (an upgrade writes the new image
  beside the others, then flips by renames),
- persistent takes the rest of the disk.
Every ext4 filesystem gets 8% + 96 MiB on top of its content for inode tables, bitmaps and
the journal (mke2fs takes up to 64 MiB of journal below 16 GiB; small filesystems use 1 KiB
blocks with one inode per 4 KiB, about 6%).
"""

from __future__ import annotations

from dataclasses import dataclass

from kairos.disk.sizes import GiB, MiB, format_size, mib_ceil
from kairos.errors import BadInput

SECTOR = 512
ALIGN = MiB // SECTOR  # partitions start and end on MiB boundaries
GPT_TAIL_SECTORS = 33  # backup GPT: 32 sectors of entries + its header

GUID_BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
GUID_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
GUID_LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

BIOS_MIB = 1
EFI_MIB = 64
OEM_MIB = 64
PERSISTENT_MIN_MIB = 64
DEFAULT_PERSISTENT_MIB = 1024  # when no disk size is given: 1 GiB, rounded up to whole GiB
STATE_EXTRA = MiB  # /grub2/grub.cfg and friends


@dataclass(frozen=True)
class PartitionSpec:
    """What a partition is. size_mib 0 means "the rest of the disk"."""

    name: str  # GPT partition name (PARTLABEL)
    label: str  # filesystem label, "" for none
    fs: str  # "none", "vfat" or "ext4"
    size_mib: int
    type_guid: str


@dataclass(frozen=True)
class Partition:
    """A partition placed on a disk (1-based number, inclusive LBA range)."""

    number: int
    spec: PartitionSpec
    start_lba: int
    end_lba: int

    @property
    def sectors(self) -> int:
        return self.end_lba - self.start_lba + 1

    @property
    def offset(self) -> int:
        return self.start_lba * SECTOR

    @property
    def size(self) -> int:
        return self.sectors * SECTOR

    @property
    def name(self) -> str:
        return self.spec.name


def ext4_size_mib(content: int) -> int:
    """MiB for an ext4 filesystem that must hold `content` bytes of files."""
    return mib_ceil(content * 1.08) + 96


def kairos_specs(slot_size: int, recovery_size: int) -> list[PartitionSpec]:
    """The partitions for a slot image and a recovery image of these sizes (bytes)."""
    return [
        PartitionSpec("bios", "", "none", BIOS_MIB, GUID_BIOS_BOOT),
        PartitionSpec("efi", "COS_GRUB", "vfat", EFI_MIB, GUID_ESP),
        PartitionSpec("oem", "COS_OEM", "ext4", OEM_MIB, GUID_LINUX_FS),
        PartitionSpec("recovery", "COS_RECOVERY", "ext4", ext4_size_mib(2 * recovery_size),
                      GUID_LINUX_FS),
        PartitionSpec("state", "COS_STATE", "ext4", ext4_size_mib(3 * slot_size + STATE_EXTRA),
                      GUID_LINUX_FS),
        PartitionSpec("persistent", "COS_PERSISTENT", "ext4", 0, GUID_LINUX_FS),
    ]


def minimum_disk_size(specs: list[PartitionSpec]) -> int:
    """Smallest disk (bytes) that holds the fixed partitions plus a minimal rest."""
    fixed = sum(s.size_mib for s in specs) + sum(
        PERSISTENT_MIN_MIB for s in specs if s.size_mib == 0)
    # 1 MiB in front (MBR, GPT, alignment) and 1 MiB behind (backup GPT, alignment).
    return (fixed + 2) * MiB


@dataclass(frozen=True)
class DiskLayout:
    """Partitions placed on a disk of `disk_size` bytes."""

    disk_size: int
    partitions: tuple[Partition, ...]

    def get(self, name: str) -> Partition:
        for part in self.partitions:
            if part.spec.name == name:
                return part
        raise KeyError(name)

    @classmethod
    def compute(cls, specs: list[PartitionSpec], disk_size: int | None) -> DiskLayout:
        """Place `specs` in order; `disk_size` None picks the minimum plus a 1 GiB rest,
        rounded up to whole GiB. Raises BadInput when `disk_size` is too small."""
        minimum = minimum_disk_size(specs)
        if disk_size is None:
            wanted = minimum + (DEFAULT_PERSISTENT_MIB - PERSISTENT_MIN_MIB) * MiB
            disk_size = -(-wanted // GiB) * GiB
        if disk_size < minimum:
            need = format_size(mib_ceil(minimum) * MiB)
            raise BadInput(
                f"disk size {format_size(disk_size)} is too small: the slots need at least "
                f"{need}; use --size {need} or larger",
                "the state partition holds 3 slot images and recovery holds 2 recovery images",
            )
        if disk_size % SECTOR:
            raise BadInput(f"disk size {disk_size} is not a multiple of {SECTOR} bytes",
                           "use a size in whole MiB, e.g. 8G")
        total = disk_size // SECTOR
        last_end = (total - GPT_TAIL_SECTORS) // ALIGN * ALIGN - 1
        parts: list[Partition] = []
        lba = ALIGN
        for number, spec in enumerate(specs, start=1):
            end = last_end if spec.size_mib == 0 else lba + spec.size_mib * ALIGN - 1
            parts.append(Partition(number, spec, lba, end))
            lba = end + 1
        return cls(disk_size, tuple(parts))
