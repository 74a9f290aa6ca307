"""Install benchmark (issue 10): the ISO's size, and an unattended install timed end to end.

    sudo .venv/bin/python -m benchmarks.bench_install --image DIR [--rounds N] [--uefi]
                                                      [--keep DIR] [--json FILE]

`--image` is a `kairos build` output directory. The ISO is made from it with `kairos iso`
(timed); its size is reported against the slot image it carries (`rootfs.squashfs`): what
the live medium adds is GRUB for two firmwares, the kernel and the initrd.

Unattended install, the path users take (tests/vm/install_flow.py, the same code as
tests/vm/test_install.py): QEMU (TCG, one vCPU, `-no-reboot`) powers on the ISO with an
empty 8 GiB disk and a cidata volume saying `install.auto: true`, `device: auto`,
`reboot: true` and a user; the machine boots live, installs itself and reboots, which ends
QEMU; then the disk alone is powered on until the user's SSH login works. Reported: power-on
to reboot, installed disk to SSH, and the sum (power-on to an installed node logged in).

Against it, the ordinary way to get the same node without an installer: `kairos disk` of the
same image and config on the build host (timed), then the disk powered on until SSH (the same
QEMU settings). The ratio is install total / (disk write + boot). The two take turns each
round, so load from elsewhere on the machine falls on both alike; load before each
measurement is sampled and printed. Times are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bench_foundation import commit, machine
from benchmarks.common import Load, kairos, median
from kairos.vm.keys import ensure_keypair
from tests.vm.install_flow import (
    Timings,
    boot_installed,
    empty_disk,
    install_config,
    run_live_install,
)

MiB = 1 << 20


@dataclass
class Round:
    install: Timings = field(default_factory=Timings)
    disk_write: float = 0.0
    disk_to_ssh: float = 0.0

    @property
    def peer_total(self) -> float:
        return self.disk_write + self.disk_to_ssh


def measure_install(iso: Path, key: tuple[Path, Path], work: Path, uefi: bool) -> Timings:
    target = empty_disk(work / "target.raw")
    user_data = install_config(work / "user-data.yaml", key[1])
    t = Timings(live_to_reboot=run_live_install(iso, target, user_data, work, uefi=uefi))
    with boot_installed(target, key[0], work, uefi=uefi) as (_vm, to_ssh):
        t.disk_to_ssh = to_ssh
    target.unlink()
    return t


def measure_peer(image: Path, key: tuple[Path, Path], work: Path, uefi: bool) -> tuple[float, float]:
    """`kairos disk` with the same config (without the install block it does not need), then
    the disk booted to SSH."""
    config = install_config(work / "disk-config.yaml", key[1])
    disk = work / "disk.raw"
    written = kairos("disk", str(image), "-o", str(disk), "--cloud-config", str(config))
    with boot_installed(disk, key[0], work, uefi=uefi) as (_vm, to_ssh):
        pass
    disk.unlink()
    return written, to_ssh


def report(r: dict[str, Any], rounds: list[Round], load: Load) -> None:
    iso, slot = r["iso_bytes"], r["slot_bytes"]
    print(f"\n## ISO\n\n| | size |\n|---|---:|\n| ISO (`kairos iso`, {r['iso_seconds']:.1f} s) "
          f"| {iso / MiB:.1f} MiB |\n| slot image it carries (rootfs.squashfs) | "
          f"{slot / MiB:.1f} MiB |\n| ISO / slot image | {iso / slot:.3f}× "
          f"(+{(iso - slot) / MiB:.1f} MiB) |")
    if not rounds:
        return
    inst = median([x.install.total for x in rounds])
    peer = median([x.peer_total for x in rounds])
    print(f"\n## Unattended install, power-on to SSH on the installed node "
          f"(median of {len(rounds)}; {load.summary()})\n\n"
          "| | live boot + install + reboot | installed disk to SSH | total |\n"
          "|---|---:|---:|---:|")
    print(f"| ISO + empty disk + cidata (install.auto) | "
          f"{median([x.install.live_to_reboot for x in rounds]):.0f} s | "
          f"{median([x.install.disk_to_ssh for x in rounds]):.0f} s | {inst:.0f} s |")
    print(f"| `kairos disk` on the host, then boot | "
          f"{median([x.disk_write for x in rounds]):.0f} s (host write) | "
          f"{median([x.disk_to_ssh for x in rounds]):.0f} s | {peer:.0f} s |")
    print(f"\ninstall / (disk write + boot): {inst / peer:.2f}×")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, required=True, help="a `kairos build` output directory")
    ap.add_argument("--rounds", type=int, default=1, help="rounds taking turns (default 1)")
    ap.add_argument("--uefi", action="store_true", help="OVMF instead of SeaBIOS")
    ap.add_argument("--iso-only", action="store_true", help="sizes only, no VM")
    ap.add_argument("--keep", type=Path, help="work directory to keep (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = ap.parse_args()
    image = args.image.resolve()
    if not (image / "rootfs.squashfs").is_file():
        raise SystemExit(f"{image} has no rootfs.squashfs: give a `kairos build` output directory")
    work = args.keep or Path(tempfile.mkdtemp(prefix="kairos-bench-install-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    iso = work / "kairos.iso"
    r: dict[str, Any] = {"image": str(image), "iso_seconds": kairos("iso", str(image), "-o", str(iso)),
                         "iso_bytes": iso.stat().st_size,
                         "slot_bytes": (image / "rootfs.squashfs").stat().st_size}
    key = ensure_keypair(work / "keys")
    rounds: list[Round] = []
    load = Load()
    for i in range(0 if args.iso_only else args.rounds):
        x = Round()
        first_install = i % 2 == 0  # take turns
        for which in ("install", "peer") if first_install else ("peer", "install"):
            load.sample()
            if which == "install":
                x.install = measure_install(iso, key, work, args.uefi)
                print(f"    round {i + 1}: install {x.install.live_to_reboot:.0f} s + "
                      f"{x.install.disk_to_ssh:.0f} s to SSH", flush=True)
            else:
                x.disk_write, x.disk_to_ssh = measure_peer(image, key, work, args.uefi)
                print(f"    round {i + 1}: kairos disk {x.disk_write:.0f} s + "
                      f"{x.disk_to_ssh:.0f} s to SSH", flush=True)
        rounds.append(x)
    r["rounds"] = [dict(asdict(x), install_total=x.install.total) for x in rounds]
    r["load"] = {"loadavg": load.loadavg, "other_vms": load.other_vms}
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    print(f"\n# Install benchmark\n\n{time.strftime('%Y-%m-%d', time.localtime(started))}, "
          f"commit {commit()}; {machine()}; image {image}; "
          f"{'UEFI (OVMF)' if args.uefi else 'BIOS (SeaBIOS)'}, one vCPU.")
    report(r, rounds, load)
    print(f"\nwall time of the whole benchmark: {(time.time() - started) / 60:.1f} min")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
