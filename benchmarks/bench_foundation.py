"""Foundation benchmark: boot-to-SSH against plain Debian 12, build, rebuild, disk, sizes.

    sudo .venv/bin/python -m benchmarks.bench_foundation [--boots 3] [--keep DIR] [--image DIR]
                                                         [--no-detail] [--json FILE]

Headline: what users boot. Our disk through GRUB against plain Debian 12 installed the
ordinary way (its own GRUB on an ext4 root, its own initramfs-tools initrd, the same kernel
package; `benchmarks/plain_debian.py`), each under BIOS (SeaBIOS) and UEFI (OVMF) in the same
QEMU (TCG, same CPU, memory, disk size and NIC). Target (issue 2): boot-to-SSH of our image
≤ 1.10× plain.

Detail (`--no-detail` skips it): the direct kernel boots of earlier recordings, where the
plain side is our own root filesystem on ext4 with Debian's initramfs, so firmware, boot
loader and units are alike and only the boot path differs; and build times (unless
`--image`: a cold build with an empty cache including debootstrap, then a warm rebuild;
target: warm ≤ 10% of cold).

Boot numbers are the median of `--boots` boots after one first boot (which seeds persistent
state, host keys, AppArmor's cache); the variants take turns, so load from elsewhere on the
machine falls on each alike. The load seen before each boot is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, Load, Variant, boot_interleaved, kairos, median, slug
from benchmarks.plain_debian import find_base_tree, make_plain_disk
from kairos.boot.grubcfg import COMMON_CMDLINE, GrubCfgOptions
from kairos.cli.build_cmd import DEFAULT_CACHE
from kairos.vm.keys import ensure_keypair

COS_ARGS = ("root=LABEL=COS_ACTIVE cos-img/filename=/cOS/active.img console=ttyS0,115200 "
            "panic=5 rd.cos.oemlabel=COS_OEM net.ifnames=1")


# Our disk's console settings, given to plain Debian's kernel too (GRUB_CMDLINE_LINUX).
CONSOLE = " ".join(w for w in COMMON_CMDLINE.split() if w.startswith("console="))
# What the guest kernel names the NIC of kairos.vm's QEMU command line (virtio-net at
# 00:03.0 on q35, after the boot disk); the installer writes the name it sees.
PLAIN_NIC = "enp0s3"

STAGE_UNITS = ("cos-setup-fs.service", "cos-setup-boot.service", "cos-setup-network.service")


def sh(*argv: str) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True).stdout


def plain_disk(slot: Path, work: Path, pubkey: Path) -> tuple[Path, Path]:
    """An ext4 disk of the same root filesystem plus Debian's own initramfs for its kernel."""
    tree = work / "plain-tree"
    sh("unsquashfs", "-q", "-d", str(tree), str(slot))
    kver = next((tree / "lib/modules").iterdir()).name
    for d in ("proc", "sys", "dev"):
        subprocess.run(["mount", "--bind", f"/{d}", str(tree / d)], check=True)
    try:
        subprocess.run(["chroot", str(tree), "mkinitramfs", "-o", "/boot/plain-initrd", kver],
                       check=True, capture_output=True)
    finally:
        for d in ("dev", "sys", "proc"):
            subprocess.run(["umount", str(tree / d)], check=False)
    initrd = work / "plain-initrd"
    shutil.copyfile(tree / "boot/plain-initrd", initrd)
    ssh = tree / "root/.ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    shutil.copyfile(pubkey, ssh / "authorized_keys")
    (tree / "etc/fstab").write_text("/dev/vda / ext4 rw 0 1\n")
    disk = work / "plain.raw"
    sh("truncate", "-s", "4G", str(disk))
    sh("mkfs.ext4", "-q", "-L", "plainroot", "-d", str(tree), str(disk))
    shutil.rmtree(tree)
    return disk, initrd


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), "?")
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    qemu = sh("qemu-system-x86_64", "--version").splitlines()[0]
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {qemu}, TCG"


def commit() -> str:
    try:
        head = sh("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD").strip()
        dirty = sh("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"
    return head + (" + uncommitted changes" if dirty.strip() else "")


def check(ratio: float, target: float) -> str:
    return f"≤ {target:.2f}× {'✓' if ratio <= target else '✗'}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boots", type=int, default=3, help="measured boots per variant")
    ap.add_argument("--keep", type=Path, help="work directory to keep (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write the numbers to this file")
    ap.add_argument("--image", type=Path,
                    help="boot this built image; skips the build timings (for quick re-runs)")
    ap.add_argument("--base-tree", type=Path,
                    help="debootstrap tree for plain Debian (default: the cached base step "
                         "whose kernel is the image's)")
    ap.add_argument("--no-detail", action="store_true",
                    help="only the headline (GRUB boots against plain Debian)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="kairos-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cache, out = work / "cache", args.image or work / "image"
    r: dict[str, float] = {}
    started = time.time()
    load = Load()

    if args.image is None:
        print("cold build (empty cache, includes debootstrap)…", flush=True)
        shutil.rmtree(cache, ignore_errors=True)
        r["cold_build_s"] = kairos("build", "--cache-dir", str(cache), "-o", str(out))
        print("warm rebuild (nothing changed)…", flush=True)
        r["warm_rebuild_s"] = kairos("build", "--cache-dir", str(cache), "-o", str(out))

    key, pub = ensure_keypair(work / "keys")
    cc = work / "cloud-config.yaml"
    cc.write_text("#cloud-config\nusers:\n  - name: kairos\n    groups: [admin]\n"
                  f"    ssh_authorized_keys: ['{pub.read_text().strip()}']\n")
    disk = work / "disk.raw"
    print("disk creation…", flush=True)
    r["disk_create_s"] = kairos("disk", str(out), "-o", str(disk), "--cloud-config", str(cc))

    print("plain Debian 12 disk, installed the ordinary way…", flush=True)
    base = args.base_tree or find_base_tree(out / "vmlinuz", [cache, Path(DEFAULT_CACHE)])
    t0 = time.monotonic()
    deb = make_plain_disk(base, work / "debian.raw", disk.stat().st_size, pub, nic=PLAIN_NIC,
                          console=CONSOLE, timeout=GrubCfgOptions().timeout)
    r["plain_debian_disk_s"] = time.monotonic() - t0
    # The headline: what users boot, both through GRUB, both firmwares. Our variants share
    # our disk (and its persistent state), the plain ones the plain disk, as on one machine.
    headline = [Variant("ours via GRUB (BIOS)", disk, key, "kairos"),
                Variant("plain Debian via GRUB (BIOS)", deb.path, key, "root"),
                Variant("ours via GRUB (UEFI)", disk, key, "kairos", uefi=True),
                Variant("plain Debian via GRUB (UEFI)", deb.path, key, "root", uefi=True)]
    detail: list[Variant] = []
    if not args.no_detail:
        print("plain disk: our root filesystem on ext4, Debian's own initramfs…", flush=True)
        pdisk, pinitrd = plain_disk(out / "rootfs.squashfs", work, pub)
        direct = ("-kernel", str(out / "vmlinuz"), "-initrd", str(out / "initrd"),
                  "-append", COS_ARGS)
        plain_args = ("-kernel", str(out / "vmlinuz"), "-initrd", str(pinitrd), "-append",
                      "root=/dev/vda rw console=ttyS0,115200 net.ifnames=1")
        # That root filesystem is our image's, so the cos-setup units run there too; for the
        # record, the same boot with them masked.
        masked = " ".join(f"systemd.mask={u}" for u in STAGE_UNITS)
        detail = [Variant("ours, direct kernel", disk, key, "kairos", direct),
                  Variant("our rootfs plainly, direct kernel", pdisk, key, "root", plain_args),
                  Variant("our rootfs plainly, stage units masked", pdisk, key, "root",
                          (*plain_args[:-1], f"{plain_args[-1]} {masked}"))]
    print(f"boot to SSH, first boots then {args.boots} rounds taking turns…", flush=True)
    boot_interleaved([*headline, *detail], args.boots, load)
    ours_bios, deb_bios, ours_uefi, deb_uefi = (median(v.later) for v in headline)
    r.update(boot_ours_grub_bios_s=ours_bios, boot_plain_debian_bios_s=deb_bios,
             boot_ours_grub_uefi_s=ours_uefi, boot_plain_debian_uefi_s=deb_uefi)
    for v in headline:
        r[f"first_{slug(v.name)}_s"] = v.first
    bios_ratio, uefi_ratio = ours_bios / deb_bios, ours_uefi / deb_uefi

    sizes = {name: (out / name).stat().st_size for name in
             ("rootfs.squashfs", "vmlinuz", "initrd", "image.oci.tar")}
    sizes["disk.raw (allocated)"] = disk.stat().st_blocks * 512
    sizes["plain Debian disk (allocated)"] = deb.path.stat().st_blocks * 512

    print("\n## Boot to SSH: our disk against plain Debian 12, both through GRUB\n")
    print(f"{time.strftime('%Y-%m-%d', time.localtime(started))}, commit {commit()}; "
          f"{machine()}; {len(headline) + len(detail)} variants, median of {args.boots} boots "
          f"each after a first boot, taking turns; {load.summary()}.\n")
    print("| firmware | ours | plain Debian 12 | ours / plain | target |\n|---|---|---|---|---|")
    print(f"| BIOS (SeaBIOS) | {ours_bios:.1f} s | {deb_bios:.1f} s | {bios_ratio:.2f}× | "
          f"{check(bios_ratio, 1.10)} |")
    print(f"| UEFI (OVMF) | {ours_uefi:.1f} s | {deb_uefi:.1f} s | {uefi_ratio:.2f}× | "
          f"{check(uefi_ratio, 1.10)} |")
    o_b, d_b, o_u, d_u = (v.first for v in headline)
    print(f"| first boot, BIOS / UEFI | {o_b:.1f} s / {o_u:.1f} s | {d_b:.1f} s / {d_u:.1f} s "
          "| | |")
    print("\nall boots (s):")
    for v in [*headline, *detail]:
        print(f"- {v.name}: first {v.first:.1f}; then {', '.join(f'{t:.1f}' for t in v.later)}")
    print(f"\nplain Debian: kernel {deb.kver}, `{deb.cmdline}`")

    print("\n## Detail\n")
    print("| measure | value | target |\n|---|---|---|")
    if "cold_build_s" in r:
        rebuild_ratio = r["warm_rebuild_s"] / r["cold_build_s"]
        r["rebuild_ratio"] = rebuild_ratio
        print(f"| cold build | {r['cold_build_s']:.1f} s | |")
        print(f"| warm rebuild | {r['warm_rebuild_s']:.1f} s ({100 * rebuild_ratio:.1f}% of cold) "
              f"| ≤ 10% {'✓' if rebuild_ratio <= 0.10 else '✗'} |")
    else:
        print("| cold build, warm rebuild | not measured (--image) | |")
    print(f"| disk creation | {r['disk_create_s']:.1f} s | |")
    print(f"| plain Debian disk creation (copy, apt, initramfs, GRUB) | "
          f"{r['plain_debian_disk_s']:.1f} s | |")
    if detail:
        ours, plain, bare = detail
        r.update(boot_ours_direct_s=median(ours.later), boot_plain_direct_s=median(plain.later),
                 boot_plain_masked_s=median(bare.later), boot_ours_first_s=ours.first,
                 boot_plain_first_s=plain.first)
        ratio = r["boot_ours_direct_s"] / r["boot_plain_direct_s"]
        r["boot_ratio_direct"] = ratio
        print(f"| boot to SSH, ours, direct kernel | {r['boot_ours_direct_s']:.1f} s | |")
        print(f"| boot to SSH, our rootfs plainly, direct kernel | {r['boot_plain_direct_s']:.1f} s "
              "| |")
        print(f"| ratio ours / our rootfs plainly (direct kernel) | {ratio:.2f}× | |")
        print(f"| boot to SSH, our rootfs plainly, stage units masked | "
              f"{r['boot_plain_masked_s']:.1f} s (ours is "
              f"{r['boot_ours_direct_s'] / r['boot_plain_masked_s']:.2f}×) | |")
        print(f"| first boot, ours / our rootfs plainly (direct kernel) | {ours.first:.1f} s / "
              f"{plain.first:.1f} s | |")
        sizes["plain initramfs (our rootfs)"] = pinitrd.stat().st_size
    for name, size in sizes.items():
        print(f"| size {name} | {size / 2**20:.1f} MiB | |")
    print(f"\nwall time of the whole benchmark: {(time.time() - started) / 60:.1f} min")
    if args.json:
        args.json.write_text(json.dumps({**r, "sizes": sizes, "boot_ratio_bios": bios_ratio,
                                         "boot_ratio_uefi": uefi_ratio, "load": load.loadavg,
                                         "other_vms": load.other_vms,
                                         "boots": {v.name: [v.first, *v.later]
                                                   for v in [*headline, *detail]}}, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
