"""Create filesystems with their content, without mounting and without loop devices.

A filesystem is made where a FsTarget says: an image file at a byte offset (e2fsprogs take
`-E offset=` and `FILE?offset=`), or a partition node at offset 0. Content is staged in a
directory and written by `mkfs.ext4 -d`; large files (slot images) are written afterwards by
`debugfs -w` straight from their source, so they are never copied through a temp directory
(on a live system /tmp is RAM). Nothing here is journalled: mke2fs and debugfs write blocks in
place, so GRUB, which does not replay journals, sees everything once the data is synced.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kairos.disk.mounts import tempdir
from kairos.errors import KairosError
from kairos.run import run


@dataclass(frozen=True)
class FsTarget:
    """Where one filesystem goes: `path` at byte `offset`, `size` bytes long."""

    path: Path
    offset: int
    size: int
    fresh: bool = False  # the bytes are known zero (a new sparse file): skip zeroing work

    @property
    def e2fs_spec(self) -> str:
        """The name debugfs/dumpe2fs open (unix_io reads `?offset=` options)."""
        return f"{self.path}?offset={self.offset}" if self.offset else str(self.path)

    @property
    def mtools_spec(self) -> str:
        return f"{self.path}@@{self.offset}" if self.offset else str(self.path)


@dataclass(frozen=True)
class LargeFile:
    """A file written into an ext4 filesystem from its source, e.g. a slot image."""

    source: Path
    dest: str  # absolute path inside the filesystem; its directory must be staged


def mkfs_ext4(target: FsTarget, label: str, staging: Path | None = None) -> None:
    """ext4 labelled `label`, filled from `staging` (owners and modes are kept)."""
    ext_opts = ["root_owner=0:0"]
    if target.offset:
        ext_opts.append(f"offset={target.offset}")
    if not target.path.is_block_device():
        ext_opts.append("nodiscard")  # punching holes in an image file gains nothing
    if target.fresh:
        # A new sparse file reads as zeros already: do not write zeroed tables and journal.
        ext_opts += ["lazy_itable_init=1", "lazy_journal_init=1"]
    argv = ["mkfs.ext4", "-F", "-q", "-L", label, "-E", ",".join(ext_opts)]
    if staging is not None:
        argv += ["-d", str(staging)]
    argv += [str(target.path), f"{target.size // 1024}k"]
    run(argv)


def _debugfs(target: FsTarget, commands: Sequence[str], *, write: bool) -> str:
    with tempdir(prefix="kairos-debugfs-") as tmp:
        cmdfile = tmp / "commands"
        cmdfile.write_text("".join(c + "\n" for c in commands))
        argv = ["debugfs", *(["-w"] if write else []), "-f", str(cmdfile), target.e2fs_spec]
        res = run(argv)
    # debugfs reports a failed command on stderr and still exits 0.
    errors = [ln for ln in res.stderr.splitlines()
              if ln.strip() and not ln.startswith("debugfs ")]
    if errors:
        raise KairosError(f"writing into the {target.path} filesystem failed: {errors[-1]}",
                          "check free space and the source files")
    return res.stdout


def _quote_free(path: str) -> str:
    if any(c.isspace() or c == '"' for c in path):
        raise KairosError(f"path {path!r} cannot be given to debugfs", "avoid spaces and quotes")
    return path


def add_large_files(target: FsTarget, files: Sequence[LargeFile]) -> None:
    """Write each file from its source into the filesystem, then check every size."""
    if not files:
        return
    with tempdir(prefix="kairos-src-") as links:
        commands: list[str] = []
        for i, item in enumerate(files):
            # A symlink with a plain name: debugfs splits its arguments on blanks.
            link = links / f"src{i}"
            link.symlink_to(item.source.resolve())
            dest = PurePosixPath(item.dest)
            commands += [f"cd {_quote_free(str(dest.parent))}",
                         f"write {_quote_free(str(link))} {_quote_free(dest.name)}",
                         f"sif {dest.name} uid 0", f"sif {dest.name} gid 0"]
        _debugfs(target, commands, write=True)
    for item in files:
        want = item.source.stat().st_size
        got = file_size(target, item.dest)
        if got != want:
            raise KairosError(f"{item.dest} has {got} bytes in the new filesystem, "
                              f"not {want}", "the filesystem may be too small")


def file_size(target: FsTarget, path: str) -> int | None:
    """Size of a file inside an ext4 filesystem, None if it is missing."""
    dest = PurePosixPath(path)
    out = _debugfs(target, [f"ls -p {_quote_free(str(dest.parent))}"], write=False)
    for line in out.splitlines():
        # /inode/mode/uid/gid/name/size/
        parts = line.split("/")
        if len(parts) >= 7 and parts[5] == dest.name:
            return int(parts[6]) if parts[6] else 0
    return None


def chown_root(target: FsTarget, staging: Path) -> None:
    """Make every staged file root-owned inside the filesystem (mke2fs -d keeps the owners
    of the staging files, which are the caller's when not run as root)."""
    if os.geteuid() == 0:
        return
    commands: list[str] = []
    for dirpath, dirnames, filenames in os.walk(staging):
        for name in [*dirnames, *filenames]:
            rel = "/" + str(Path(dirpath, name).relative_to(staging))
            commands += [f"sif {_quote_free(rel)} uid 0", f"sif {_quote_free(rel)} gid 0"]
    if commands:
        _debugfs(target, commands, write=True)


def mkfs_vfat(target: FsTarget, label: str, *, fat_bits: int = 32) -> None:
    """FAT32 with 512-byte clusters, so a 64 MiB ESP has enough clusters to really be FAT32
    (firmware decides the FAT type by cluster count). `fat_bits` 12 or 16 for a small image
    (the live ISO's EFI boot image: a few MiB, far below FAT32's minimum)."""
    argv = ["mkfs.vfat", "-F", str(fat_bits), "-s", "1", "-n", label]
    if target.offset:
        if target.offset % 512:
            raise ValueError("vfat offset must be whole sectors")
        argv.append(f"--offset={target.offset // 512}")
    argv += [str(target.path), str(target.size // 1024)]
    run(argv)
