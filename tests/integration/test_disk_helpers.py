"""Helpers shared by the disk integration tests (no tests here): a fake image directory and
in-place inspection of the filesystems on a disk image."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import kairos.cli
from kairos.disk.filesystems import FsTarget
from kairos.run import run


def make_image_dir(base: Path, *, recovery: bool = True) -> Path:
    """A factory-like output dir: xz squashfs slot (and recovery) with dummy kernel/initrd.

    The dummy kernel is shorter than a Linux setup header, so GRUB's `linux` fails with
    "premature end of file (loop0)/boot/vmlinuz": proof it read the file inside the image.
    """
    image_dir = base / "image"
    image_dir.mkdir()
    for name, extra in (("rootfs.squashfs", "slot"), ("recovery.squashfs", "recovery")):
        if name == "recovery.squashfs" and not recovery:
            continue
        tree = base / f"tree-{extra}"
        (tree / "boot").mkdir(parents=True)
        (tree / "boot" / "vmlinuz").write_bytes(os.urandom(100))
        (tree / "boot" / "initrd").write_bytes(b"not an initrd\n")
        (tree / "etc").mkdir()
        (tree / "etc" / "which").write_text(extra * 1000)
        run(["mksquashfs", str(tree), str(image_dir / name), "-comp", "xz", "-noappend",
             "-quiet"])
    return image_dir


def cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """The real `kairos` entry point, in process, with only this part's verbs registered."""
    monkeypatch.setattr(kairos.cli, "VERB_MODULES", ("kairos.cli.disk_cmd",))
    return kairos.cli.main(list(args))


def debugfs(target: FsTarget, command: str) -> str:
    return run(["debugfs", "-R", command, target.e2fs_spec]).stdout


def dump(target: FsTarget, path: str, out: Path) -> bytes:
    run(["debugfs", "-R", f"dump {path} {out}", target.e2fs_spec])
    return out.read_bytes()


def stat_fields(target: FsTarget, path: str) -> dict[str, str]:
    """Mode, uid, gid and size of a file via `debugfs ls -p` of its directory."""
    parent, _, name = path.rpartition("/")
    for line in debugfs(target, f"ls -p {parent or '/'}").splitlines():
        parts = line.split("/")
        if len(parts) >= 7 and parts[5] == name:
            return {"ino": parts[1], "mode": parts[2], "uid": parts[3], "gid": parts[4],
                    "size": parts[6]}
    raise AssertionError(f"{path} not found")


def blkid(path: Path, offset: int = 0) -> dict[str, str]:
    argv = ["blkid", "-p", "-o", "export"]
    if offset:
        argv += ["-O", str(offset)]
    out = run([*argv, str(path)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
