"""Images for the upgrade tests: v2 (the default image with one file different) and a
second disk holding upgrade artifacts, each cached by its inputs.

v2 is `kairos build --version 0.2.0`: only `/etc/kairos-release` differs from the default
image (v0.1.0). It is built on a step cache of its own, seeded with the shared cache's base
and packages steps as hard links: a build in the shared cache would prune the default
image's kairosify/squash/oci steps (one per lineage), which other tests reuse. The seeding
follows the shared cache: an entry the shared cache refreshed (another inode) is linked
again, so v2 always builds on the base the default image was built on, and never fetches a
base of its own (`--base-max-age never`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from kairos.run import run
from kairos.vm.config import VMConfig
from kairos.vm.machine import VM
from tests.helpers import CACHE_DIR, kairos

V2_VERSION = "0.2.0"
V2_CACHE = Path(f"{CACHE_DIR}-upgrade-v2")
SEEDED = ("base-", "packages-")
COMPLETE = ".kairos-step-complete"  # kairos.factory.cache.COMPLETE


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _same_entry(a: Path, b: Path) -> bool:
    try:
        return (a / COMPLETE).stat().st_ino == (b / COMPLETE).stat().st_ino
    except OSError:
        return False


def seed_cache(cache: Path, shared: Path = Path(CACHE_DIR)) -> list[str]:
    """Make `cache`'s base and packages steps hard links of `shared`'s (copies across
    filesystems); drop the ones `shared` no longer has or has made again. Returns the names
    (re)linked."""
    steps = cache / "steps"
    steps.mkdir(parents=True, exist_ok=True)
    theirs = {p.name: p for p in (shared / "steps").glob("*")
              if p.name.startswith(SEEDED) and (p / COMPLETE).exists()}
    linked = []
    for mine in steps.glob("*"):
        if mine.name.startswith(SEEDED) and not (
                mine.name in theirs and _same_entry(mine, theirs[mine.name])):
            shutil.rmtree(mine)
    for name, src in sorted(theirs.items()):
        if (steps / name).exists():
            continue
        tmp = steps / f".tmp-seed-{name}-{os.getpid()}"
        res = subprocess.run(["cp", "-al", str(src), str(tmp)], capture_output=True)
        if res.returncode != 0:  # another filesystem: copy
            shutil.rmtree(tmp, ignore_errors=True)
            subprocess.run(["cp", "-a", str(src), str(tmp)], check=True)
        tmp.rename(steps / name)
        linked.append(name)
    return linked


def build_v2(out: Path, cache: Path = V2_CACHE, version: str = V2_VERSION) -> dict[str, object]:
    """`kairos build --version VERSION` on `cache`, seeded from the shared cache first.
    The lock keeps two sessions from re-seeding under each other's build."""
    with _flock(cache.with_name(cache.name + ".lock")):
        seed_cache(cache)
        proc = kairos("build", "--output", str(out), "--version", version,
                      "--base-max-age", "never", "--json",
                      env={"KAIROS_CACHE_DIR": str(cache)})
    result: dict[str, object] = json.loads(proc.stdout)
    steps = result["steps"]
    assert isinstance(steps, dict) and steps.get("base") == "cached", (
        f"v2 fetched a base of its own instead of the default image's: {steps}")
    return result


# ------------------------------------------------------------------------------ media disk

def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def media_disk(files: dict[str, Path], dest: Path, *, label: str = "KAIROS_MEDIA") -> Path:
    """An ext4 disk image (no partition table) holding `files` (name → host path) at its
    root, made with `mkfs.ext4 -d` (no mount). Sized for the files plus 10 % and 64 MiB."""
    tree = dest.with_name(dest.name + ".d")
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    for name, src in files.items():
        # A hard link where the filesystem allows, so the 1 GB of images is not copied twice.
        try:
            os.link(src, tree / name)
        except OSError:
            shutil.copyfile(src, tree / name)
    content = sum((tree / n).stat().st_size for n in files)
    size_mib = int(content * 1.1) // (1 << 20) + 64
    dest.unlink(missing_ok=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, "-E", "root_owner=0:0",
                    "-d", str(tree), str(dest), f"{size_mib}M"], check=True,
                   capture_output=True)
    shutil.rmtree(tree)
    return dest


__all__ = ["V2_CACHE", "V2_VERSION", "build_v2", "file_sha256", "media_disk", "seed_cache"]


@contextlib.contextmanager
def overlay_guest(disk_image: Path, media: Path, key: Path, work: Path) -> Iterator[VM]:
    """A guest booted from a qcow2 overlay on the session's v1 disk (never written), with the
    media disk attached; closed on every path."""
    disk = work / "disk.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(disk_image),
         str(disk)])
    machine = VM(VMConfig(disk=disk, ssh_key=key, ssh_user="kairos", extra_disks=(media,),
                          serial_log=work / "serial.log"))
    machine.start()
    try:
        yield machine
    finally:
        machine.close()
