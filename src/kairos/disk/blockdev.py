"""Block devices: size, partition nodes, and whether anything on them is in use.

There is no udev on some hosts (containers, build machines): partition nodes appear only after
the kernel is told with `partx`, and devtmpfs creates them a moment later, so we wait for them.
Partitions are found through /sys, which names them whatever the device naming scheme
(sda1, loop0p1, nvme0n1p1, mmcblk0p1).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from kairos.errors import KairosError
from kairos.run import run

SYS_BLOCK = Path("/sys/class/block")


def is_block_device(path: Path) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def _sys_dir(dev: Path) -> Path:
    rdev = os.stat(dev).st_rdev
    path = Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}")
    if not path.exists():
        raise KairosError(f"{dev} is not known to the kernel's /sys", "is it a block device?")
    return path.resolve()


def device_size(dev: Path) -> int:
    """Size in bytes (the sysfs size is always in 512-byte units)."""
    return int((_sys_dir(dev) / "size").read_text()) * 512


def logical_sector_size(dev: Path) -> int:
    return int((_sys_dir(dev) / "queue" / "logical_block_size").read_text())


def partitions_of(dev: Path) -> dict[int, Path]:
    """Partition number → /dev node for the partitions the kernel knows on `dev`."""
    sysdir = _sys_dir(dev)
    found: dict[int, Path] = {}
    for child in sysdir.iterdir():
        pfile = child / "partition"
        if pfile.is_file():
            found[int(pfile.read_text())] = Path("/dev") / child.name
    return found


def reread_partitions(dev: Path, expected: int, *, timeout: float = 15.0) -> dict[int, Path]:
    """Make the kernel drop old partitions and add the new ones; wait for the /dev nodes."""
    run(["partx", "--delete", str(dev)], check=False)  # fails harmlessly when there are none
    run(["partx", "--add", str(dev)], check=False)
    deadline = time.monotonic() + timeout
    while True:
        nodes = partitions_of(dev)
        if all(n in nodes and nodes[n].exists() for n in range(1, expected + 1)):
            return nodes
        if time.monotonic() > deadline:
            raise KairosError(
                f"the kernel did not show partitions 1-{expected} of {dev} "
                f"(found {sorted(nodes)})",
                f"check 'partx --show {dev}' and dmesg; is the device in use?",
            )
        run(["partx", "--update", str(dev)], check=False)
        time.sleep(0.2)


def _dev_numbers(dev: Path) -> set[str]:
    """'major:minor' of the device and of all its partitions."""
    sysdir = _sys_dir(dev)
    numbers = {(sysdir / "dev").read_text().strip()}
    for child in sysdir.iterdir():
        if (child / "partition").is_file():
            numbers.add((child / "dev").read_text().strip())
    return numbers


def users_of(dev: Path) -> list[str]:
    """Why `dev` must not be overwritten: mounts, swap and holders (LVM, dm) on it or its
    partitions. Empty when nothing uses it."""
    numbers = _dev_numbers(dev)
    users: list[str] = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            if fields[2] in numbers:
                users.append(f"mounted on {fields[4]}")
    with open("/proc/swaps", encoding="utf-8") as fh:
        for line in list(fh)[1:]:
            name = line.split()[0]
            if is_block_device(Path(name)):
                rdev = os.stat(name).st_rdev
                if f"{os.major(rdev)}:{os.minor(rdev)}" in numbers:
                    users.append(f"swap {name}")
    sysdir = _sys_dir(dev)
    for holder_dir in [sysdir / "holders", *sysdir.glob("*/holders")]:
        if holder_dir.is_dir():
            users += [f"held by {h.name}" for h in holder_dir.iterdir()]
    return users
