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


@dataclass
class Load:
    """What else the machine was doing, sampled before each boot."""
    loadavg: list[float] = field(default_factory=list)  # 1-minute load average
    other_vms: list[int] = field(default_factory=list)  # QEMU processes not started by us

    def sample(self) -> None:
        self.loadavg.append(loadavg())
        self.other_vms.append(qemu_processes())

    def summary(self) -> str:
        if not self.loadavg:
            return "not sampled"
        busy = sum(1 for n in self.other_vms if n)
        return (f"1-min load average {min(self.loadavg):.2f}–{max(self.loadavg):.2f} "
                f"(median {median(self.loadavg):.2f}) on 2 cores; other QEMU guests running "
                f"before {busy} of {len(self.other_vms)} boots")


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def qemu_processes() -> int:
    """How many qemu-system processes run now (called between our boots: all are others')."""
    count = 0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv0 = (proc / "cmdline").read_bytes().split(b"\0", 1)[0]
            except OSError:
                continue
            count += Path(argv0.decode(errors="replace")).name.startswith("qemu-system")
    return count


def boot_interleaved(variants: list[Variant], boots: int, load: Load | None = None) -> None:
    """One first boot of each variant, then `boots` rounds taking each variant in turn.

    Taking turns makes load from anything else on the machine fall on every variant alike,
    so their ratio stays meaningful on a shared, noisy host. `load`, if given, gets a sample
    before every boot.
    """
    for v in variants:
        if load is not None:
            load.sample()
        v.first = boot_once(v, "serial-first")
        print(f"    {v.name}: first boot {v.first:.1f}s", flush=True)
    for i in range(boots):
        for v in variants:
            if load is not None:
                load.sample()
            t = boot_once(v, f"serial-{i}")
            v.later.append(t)
            print(f"    {v.name}: boot {i + 1} {t:.1f}s", flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values)
