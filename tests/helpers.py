"""Helpers shared by the tests (imported as `tests.helpers`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kairos.vm.config import VMConfig
from kairos.vm.machine import VM

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CACHE_DIR = os.environ.get("KAIROS_CACHE_DIR", "/var/cache/kairos")
BOOT_TIMEOUT = 600.0
# One vCPU per test guest. The suite runs guests side by side on two cores, and under TCG a
# two-vCPU guest whose vCPU threads are descheduled spins on its own locks: two such guests
# at once took 290-340 s and as many CPU-seconds to SSH, one-vCPU guests 80-190 s (alone, two
# vCPUs boot ~25% faster for the same CPU time; that is `kairos vm`'s default).
GUEST_CPUS = 1


def kairos(*args: str, check: bool = True, env: dict[str, str] | None = None,
           timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    """Run the `kairos` CLI as a user would (a separate process)."""
    full_env = dict(os.environ, KAIROS_CACHE_DIR=CACHE_DIR)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "kairos", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"kairos {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def write_cloud_config(path: Path, pubkey: Path, extra: str = "") -> Path:
    path.write_text(
        "#cloud-config\n"
        "hostname: kairos-test\n"
        "users:\n"
        "  - name: kairos\n"
        "    groups: [admin]\n"
        "    ssh_authorized_keys:\n"
        f"      - {pubkey.read_text().strip()}\n" + extra)
    return path


def copy_disk(src: Path, dest: Path) -> Path:
    subprocess.run(["cp", "--sparse=always", str(src), str(dest)], check=True)
    return dest


@contextmanager
def cidata_vm(image: Path, user_data: str, keypair: tuple[Path, Path], work: Path, *,
              wait_for: str, wait_s: int = 120) -> Iterator[VM]:
    """A disk with no user config, booted with `user_data` on a NoCloud cidata volume; waits
    for SSH as `kairos`, then up to `wait_s` seconds for the file `wait_for` (the network
    stage's marker: that stage runs after the others)."""
    disk = work / "disk.raw"
    kairos("disk", str(image), "-o", str(disk))
    cc = work / "user-data.yaml"
    cc.write_text(user_data)
    machine = VM(VMConfig(disk=disk, cloud_config=cc, ssh_key=keypair[0], ssh_user="kairos",
                          cpus=GUEST_CPUS, serial_log=work / "serial.log",
                          reboot="restart")).start()
    try:
        machine.wait_for_ssh(BOOT_TIMEOUT)
        machine.ssh(f"for i in $(seq {wait_s}); do [ -e {wait_for} ] && break; sleep 1; done")
        yield machine
    finally:
        machine.close()


def state(vm: VM) -> dict[str, object]:
    res = vm.ssh("kairos state --json")
    data: dict[str, object] = json.loads(res.stdout)
    return data


__all__ = [
    "BOOT_TIMEOUT",
    "CACHE_DIR",
    "GUEST_CPUS",
    "ROOT",
    "SHARED",
    "cidata_vm",
    "copy_disk",
    "kairos",
    "state",
    "write_cloud_config",
]
