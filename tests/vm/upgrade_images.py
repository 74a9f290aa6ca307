"""Images for the upgrade tests: v1 and v2 (one file different) and a second disk holding
upgrade artifacts, each cached by its inputs.

Both are the default image trimmed (`SLIM`: no drivers a QEMU guest never loads, no docs,
man pages or translations): under TCG an upgrade's cost is the guest unpacking, squashing
and hashing the image, so a third of the bytes and half the files make every upgrade test
that much cheaper, while the image stays what `kairos build` makes. v1 is version 0.1.0 in
the shared cache (its trim makes it a lineage of its own there, so it never prunes the
default image's steps); v2 is `--version 0.2.0`: only `/etc/kairos-release` differs.

v2 is built on a step cache of its own, seeded with the shared cache's base and packages
steps as hard links: in the shared cache it would prune v1's kairosify/squash/oci steps (one
per lineage). The seeding follows the shared cache: an entry the shared cache refreshed
(another inode) is linked again, so v2 always builds on the base v1 was built on, and never
fetches a base of its own (`--base-max-age never`).
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
from tests.helpers import CACHE_DIR, GUEST_CPUS, kairos

V1_VERSION = "0.1.0"
V2_VERSION = "0.2.0"
# Drivers for hardware a QEMU q35 guest does not have (the guest keeps virtio, block, SCSI,
# ATA, netfilter, bridges, every local filesystem), and what only people read.
SLIM_MODULES = (
    r"^sound/",
    r"^drivers/(gpu|media|infiniband|iio|staging|usb|bluetooth|hid|isdn|hwmon|platform"
    r"|thunderbolt|mtd|nfc|video|leds|rtc|mfd|regulator|pinctrl|gnss|fpga|edac|comedi|atm"
    r"|firewire|spi|w1|power|misc|net/(wireless|ethernet|can|usb|wwan|ieee802154|fddi"
    r"|hamradio|arcnet|ppp|slip))/",
    r"^net/(wireless|mac80211|bluetooth|nfc|can|ieee802154|mac802154|6lowpan|rxrpc|ceph"
    r"|sunrpc|9p|rds|tipc|sctp|dccp|l2tp|batman-adv|atm|ax25|netrom|rose|x25|phonet|qrtr"
    r"|caif|smc|openvswitch)/",
    r"^fs/(btrfs|xfs|ocfs2|nfs|nfsd|smb|ceph|gfs2|jfs|nilfs2|reiserfs|f2fs|ubifs|afs|coda"
    r"|orangefs|dlm|lockd|hfs|hfsplus|ntfs3|ufs|jffs2|affs|befs|minix|omfs|qnx4|qnx6|sysv"
    r"|romfs)/",
)
SLIM_FILES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
SLIM = tuple(arg for pattern in SLIM_MODULES for arg in ("--modules-exclude", pattern)) + \
    tuple(arg for pattern in SLIM_FILES for arg in ("--remove-files", pattern))
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


def build_v1(out: Path) -> dict[str, object]:
    """The trimmed default image, version 0.1.0, in the shared cache."""
    proc = kairos("build", "--output", str(out), "--version", V1_VERSION, *SLIM, "--json")
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def build_v2(out: Path, cache: Path = V2_CACHE, version: str = V2_VERSION) -> dict[str, object]:
    """`kairos build --version VERSION` (trimmed as v1) on `cache`, seeded from the shared
    cache first. The lock keeps two sessions from re-seeding under each other's build."""
    with _flock(cache.with_name(cache.name + ".lock")):
        seed_cache(cache)
        proc = kairos("build", "--output", str(out), "--version", version, *SLIM,
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


__all__ = ["SLIM", "V1_VERSION", "V2_CACHE", "V2_VERSION", "build_v1", "build_v2",
           "file_sha256", "media_disk", "overlay_guest", "seed_cache"]


@contextlib.contextmanager
def overlay_guest(disk_image: Path, media: Path, key: Path, work: Path) -> Iterator[VM]:
    """A guest booted from a qcow2 overlay on the session's v1 disk (never written), with the
    media disk attached; closed on every path."""
    disk = work / "disk.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(disk_image),
         str(disk)])
    machine = VM(VMConfig(disk=disk, ssh_key=key, ssh_user="kairos", extra_disks=(media,),
                          cpus=GUEST_CPUS, serial_log=work / "serial.log", reboot="restart"))
    machine.start()
    try:
        yield machine
    finally:
        machine.close()
