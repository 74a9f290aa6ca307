"""Fill a FAT filesystem with mtools: vfat cannot be mounted on every host; mtools needs none."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from kairos.disk.filesystems import FsTarget
from kairos.run import run

# mtools otherwise refuses images whose size is not a multiple of its idea of a track.
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}


def copy_into_fat(target: FsTarget, files: Mapping[str, Path]) -> None:
    """Copy files into the FAT filesystem: {"/EFI/BOOT/BOOTX64.EFI": source_path}."""
    spec = target.mtools_spec
    made: set[str] = set()
    for dest in sorted(files):
        parents = list(PurePosixPath(dest).parents)[::-1][1:]  # without "/"
        for parent in parents:
            if str(parent) not in made:
                run(["mmd", "-D", "s", "-i", spec, f"::{parent}"], env=MTOOLS_ENV)
                made.add(str(parent))
        run(["mcopy", "-o", "-i", spec, str(files[dest]), f"::{dest}"], env=MTOOLS_ENV)


def list_fat(target: FsTarget, directory: str) -> str:
    """`mdir` output of a directory (for checks and tests)."""
    return run(["mdir", "-i", target.mtools_spec, f"::{directory}"], env=MTOOLS_ENV).stdout
