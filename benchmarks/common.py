"""What the benchmarks share: running the CLI and timing boots in fresh QEMU processes."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kairos.vm.config import VMConfig
from kairos.vm.machine import VM

ROOT = Path(__file__).resolve().parents[1]


def kairos(*args: str) -> float:
    """Run the CLI; return its wall time in seconds."""
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "kairos", *args], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - start


@dataclass
class Variant:
    """One way of booting a disk, measured against others in the same run."""
    name: str
    disk: Path
    key: Path | None = None
    user: str = "kairos"
    extra: tuple[str, ...] = ()
    uefi: bool = False
    cloud_config: Path | None = None
    first: float = 0.0
    later: list[float] = field(default_factory=list)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def boot_once(v: Variant, log_name: str) -> float:
    """Boot `v` in a fresh QEMU; seconds until SSH.

    With a key, "SSH" means a command ran; without one, that sshd answered with its banner.
    """
    cfg = VMConfig(disk=v.disk, ssh_key=v.key, ssh_user=v.user, extra_args=v.extra, uefi=v.uefi,
                   cloud_config=v.cloud_config, serial_log=v.disk.with_name(f"{slug(v.name)}.{log_name}.log"))
    with VM(cfg) as vm:
        t = vm.wait_for_ssh(900)
        if v.key is not None:
            vm.poweroff(timeout=180)
        else:
            vm.qmp("system_powerdown")
            vm.wait_exit(180)
    return t


def boot_interleaved(variants: list[Variant], boots: int) -> None:
    """One first boot of each variant, then `boots` rounds taking each variant in turn.

    Taking turns makes load from anything else on the machine fall on every variant alike,
    so their ratio stays meaningful on a shared, noisy host.
    """
    for v in variants:
        v.first = boot_once(v, "serial-first")
        print(f"    {v.name}: first boot {v.first:.1f}s", flush=True)
    for i in range(boots):
        for v in variants:
            t = boot_once(v, f"serial-{i}")
            v.later.append(t)
            print(f"    {v.name}: boot {i + 1} {t:.1f}s", flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values)
