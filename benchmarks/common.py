"""What the benchmarks share: running the CLI and timing boots in fresh QEMU processes."""

from __future__ import annotations

import subprocess
import sys
import time
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


def boot_times(disk: Path, key: Path | None, user: str, boots: int, extra: tuple[str, ...] = (),
               uefi: bool = False, cloud_config: Path | None = None) -> tuple[float, list[float]]:
    """Boot `disk` 1 + `boots` times; return (first boot, the later boots) in seconds to SSH.

    With a key, "SSH" means a command ran; without one, that sshd answered with its banner.
    """
    times = []
    for i in range(boots + 1):
        cfg = VMConfig(disk=disk, ssh_key=key, ssh_user=user, extra_args=extra, uefi=uefi,
                       cloud_config=cloud_config, serial_log=disk.with_suffix(f".serial{i}.log"))
        with VM(cfg) as vm:
            t = vm.wait_for_ssh(900)
            if key is not None:
                vm.poweroff(timeout=180)
            else:
                vm.qmp("system_powerdown")
                vm.wait_exit(180)
        times.append(t)
        print(f"    boot {i}{' (first)' if i == 0 else ''}: {t:.1f}s", flush=True)
    return times[0], times[1:]
