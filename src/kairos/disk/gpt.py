"""Write a GPT for a DiskLayout with sgdisk (works on image files and block devices alike)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from kairos.disk.layout import DiskLayout
from kairos.run import run

# Kairos derives its disk GUID the same way: UUIDv5 in the URL namespace of "KAIROS_DISK".
KAIROS_DISK_GUID = str(uuid.uuid5(uuid.NAMESPACE_URL, "KAIROS_DISK")).upper()


def write_gpt(target: Path, layout: DiskLayout, *, disk_guid: str = KAIROS_DISK_GUID,
              zap: bool = True) -> None:
    """Replace any partition table on `target` with the layout's GPT (+ protective MBR).

    `zap` first wipes old GPT/MBR structures (a stale backup GPT from an earlier use of the
    disk would confuse firmware and partx); a new all-zero image file does not need it.
    """
    if zap:
        run(["sgdisk", "--zap-all", str(target)], check=False)
    argv = ["sgdisk", "--clear", f"--disk-guid={disk_guid}", "--set-alignment=2048"]
    for part in layout.partitions:
        n = part.number
        argv += [
            f"--new={n}:{part.start_lba}:{part.end_lba}",
            f"--typecode={n}:{part.spec.type_guid}",
            f"--change-name={n}:{part.spec.name}",
        ]
    argv.append(str(target))
    run(argv)


@dataclass(frozen=True)
class GptEntry:
    number: int
    start_lba: int
    end_lba: int
    type_code: str
    name: str


_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+\S+\s+\S+\s+([0-9A-F]{4})\s+(.*?)\s*$")


def read_gpt(target: Path) -> list[GptEntry]:
    """The partitions sgdisk sees on `target` (for checks and tests)."""
    out = run(["sgdisk", "--print", str(target)]).stdout
    entries: list[GptEntry] = []
    for line in out.splitlines():
        m = _ROW.match(line)
        if m:
            entries.append(GptEntry(int(m[1]), int(m[2]), int(m[3]), m[4], m[5]))
    return entries
