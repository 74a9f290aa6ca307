"""Stage benchmark (issue 3): what the cloud-config stages add to boot-to-SSH. Prints a report.

    sudo .venv/bin/python -m benchmarks.bench_stages [--boots 3] [--image DIR]

Both variants boot the same disk image (made without a user config) in the same QEMU; "SSH"
here is sshd answering with its banner (sshd starts after the boot stage). The first variant
has no user config; the second gets a cloud-config with users, SSH keys, hostname, files,
sysctl, a systemd unit and commands in several stages through a NoCloud cidata volume.
Target: the user config adds under 10%. Steady-state boots (after the first) are compared;
the first boot, which also pulls the datasource and seeds persistent state, is shown beside.
The variants take turns, so load from elsewhere on the machine falls on each alike; the
median of the later boots is reported.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import Variant, boot_interleaved, kairos, median
from kairos.vm.keys import ensure_keypair
from tests.vm.test_cloud_config import user_data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boots", type=int, default=3)
    ap.add_argument("--image", type=Path, help="a built image dir (default: build one)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kairos-bench-stages-"))
    image = args.image or work / "image"
    if args.image is None:
        print("building the default image…", flush=True)
        kairos("build", "-o", str(image))
    _, pub = ensure_keypair(work / "keys")
    cc = work / "user-data.yaml"
    cc.write_text(user_data(pub.read_text().strip()))
    variants = []
    for name, config in (("no user config", None), ("full cloud-config", cc)):
        disk = work / f"{name.replace(' ', '-')}.raw"
        kairos("disk", str(image), "-o", str(disk))
        variants.append(Variant(name, disk, cloud_config=config))
    print(f"boot to SSH banner, {args.boots} rounds taking turns…", flush=True)
    boot_interleaved(variants, args.boots)
    base, full = variants
    b, f = median(base.later), median(full.later)
    base_first, full_first = base.first, full.first
    print("\n## Stage benchmark\n")
    print("| variant | first boot | later boots (median) |\n|---|---|---|")
    print(f"| no user config | {base_first:.1f} s | {b:.1f} s |")
    print(f"| full cloud-config (cidata) | {full_first:.1f} s | {f:.1f} s |")
    added = (f - b) / b
    print(f"\nstages of the user config add {100 * added:+.1f}% to boot-to-SSH "
          f"(target < 10%: {'✓' if added < 0.10 else '✗'}); first boot "
          f"{100 * (full_first - base_first) / base_first:+.1f}%")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
