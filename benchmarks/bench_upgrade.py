"""Upgrade benchmark (issue 8): registry pull against skopeo, upgrade against dd, second pull.

    sudo .venv/bin/python -m benchmarks.bench_upgrade --image DIR [--pull] [--apply]
                                   [--build] [--oci-twice] [--rounds N] [--keep DIR] [--json FILE]

`--image` is a `kairos build` output directory (its `image.oci.tar`, `rootfs.squashfs`);
`--apply` needs one built from a tree that has `kairos upgrade`: `--build` builds it from
this tree into `--image` first. With neither `--pull` nor `--apply`, both run.

`--pull` (host): a real docker-registry on 127.0.0.1 (`tests/registry.py`) gets the image
pushed with skopeo; then, in `--rounds` rounds (default 3) taking turns, the order swapped
every round: our `RegistryClient.pull` into a fresh BlobCache (what `kairos upgrade
--source oci:…` runs; size and sha256 checked as blobs stream in, each fsynced and renamed
into place), in a fresh Python process as skopeo is a fresh process, against `skopeo copy
--src-tls-verify=false docker://… oci:DIR` of the same image (skopeo checks digests too and
writes the blobs to disk). Throughput is blob bytes (config and layers, the same for both)
over wall time, process start to exit on both sides (ours inside the call is shown too);
the ratio is ours / skopeo throughput. Then a second pull into the same cache, through a
proxy that counts what the registry served: the bytes a second upgrade that changes nothing
downloads (target: 0 layer bytes).

`--apply` (VM, QEMU TCG): a disk made by `kairos disk` from the image, booted, with a second
disk (ext4, label KBENCH) holding `image.oci.tar` and `rootfs.squashfs`. In the guest, per
round and taking turns: `kairos upgrade --source ocifile:…/image.oci.tar --json` against
`dd if=/dev/zero of=/run/initramfs/cos-state/cOS/ddtest bs=4M count=… conv=fsync` of the
same number of bytes as the slot image the upgrade wrote, to the same partition (remounted
read-write for it, the file removed and the partition read-only again after); and the same
with `--source file:…/rootfs.squashfs` (no unpacking: the slot is copied) against its own
dd. The upgrade's time is its `done` phase (from the JSON's phase timings, which are
printed); the command's wall time in the guest is shown beside it. Target (issue 8): upgrade
from a local OCI archive ≤ 1.5× dd. The guest reboots after every upgrade: the running
image's file stays allocated while it is mounted, so a second upgrade in the same boot
would find COS_STATE (sized for 3 slot images) full. Default 1 round (each upgrade takes
minutes under TCG). With `--oci-twice` the guest then upgrades twice from the host's
registry (`oci:10.0.2.2:PORT/…`, what a device does) and the second upgrade's downloaded
bytes are reported (target: 0 layer bytes).

Times are reported, never asserted; load before each measurement is sampled.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bench_foundation import commit, machine
from benchmarks.common import Load, kairos, median
from kairos.oci.blobcache import BlobCache
from kairos.oci.reference import parse_reference
from kairos.oci.registry import PullResult, RegistryClient
from kairos.vm.config import VMConfig
from kairos.vm.keys import ensure_keypair
from kairos.vm.machine import VM
from tests.registry import proxy, push, registry, skopeo_env
from tests.vm.upgrade_images import build_v2, media_disk

REPO, TAG = "kairos/bench", "v1"
STATE = "/run/initramfs/cos-state"
BENCH_LABEL = "KBENCH"
BENCH_MNT = "/run/kbench"  # / is read-only; /run is a tmpfs
DD_BS = 4 << 20
MiB = 1 << 20
# `--build`: not the shared cache, whose prune would evict steps the tests reuse.
REBOOT_TIMEOUT = 1800.0  # a TCG guest on a loaded 2-core host took 900+ s once
BUILD_CACHE = Path("/var/cache/kairos-bench-upgrade")


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def load_summary(load: Load, what: str) -> str:
    if not load.loadavg:
        return "load not sampled"
    busy = sum(1 for n in load.other_vms if n)
    return (f"1-min load average {min(load.loadavg):.2f}–{max(load.loadavg):.2f} (median "
            f"{median(load.loadavg):.2f}) on {os.cpu_count()} cores; other QEMU guests running "
            f"before {busy} of {len(load.other_vms)} {what}")


def spread(values: list[float], fmt: str = ".1f") -> str:
    if len(values) < 2:
        return "n=1"
    return f"{min(values):{fmt}}–{max(values):{fmt}}"


# ------------------------------------------------------------------------------------ pull

@dataclass
class PullSide:
    name: str
    secs: list[float] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)

    def rates(self) -> list[float]:
        return [b / MiB / s for b, s in zip(self.nbytes, self.secs, strict=True)]


# Our pull in a fresh interpreter, as skopeo runs in a fresh process: both sides pay their
# start-up. Prints the time inside the call and what it downloaded.
PULL_CHILD = """
import json, sys, time
from pathlib import Path
from kairos.oci.blobcache import BlobCache
from kairos.oci.reference import parse_reference
from kairos.oci.registry import RegistryClient
host, dest, ref = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
t0 = time.monotonic()
res = RegistryClient(insecure=[host], progress=False).pull(parse_reference(ref),
                                                           BlobCache(dest / "blobs"))
print(json.dumps({"call_s": time.monotonic() - t0, "manifest": res.manifest.digest,
                  "downloaded": res.downloaded, "layers": res.layer_bytes_downloaded}))
"""


def pull_ours(host: str, dest: Path) -> tuple[float, dict[str, Any]]:
    """What `kairos upgrade --source oci:…` runs to fetch (resolve, then the blobs into the
    cache), in a fresh process; returns its wall time and what it reported."""
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-c", PULL_CHILD, host, str(dest),
                          f"{host}/{REPO}:{TAG}"], check=True, capture_output=True, text=True)
    secs = time.monotonic() - t0
    doc: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return secs, doc


def pull_in_process(host: str, dest: Path) -> PullResult:
    client = RegistryClient(insecure=[host], progress=False)
    return client.pull(parse_reference(f"{host}/{REPO}:{TAG}"), BlobCache(dest / "blobs"))


def pull_skopeo(host: str, dest: Path, work: Path) -> float:
    argv, env = skopeo_env(work)
    cmd = [*argv, "copy", "--quiet", "--src-tls-verify=false", f"docker://{host}/{REPO}:{TAG}",
           f"oci:{dest}:{TAG}"]
    full_env = {**os.environ, **env}
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, env=full_env, capture_output=True)
    return time.monotonic() - t0


def blob_bytes(layout_blobs: Path, manifest_digest: str) -> int:
    """Config and layer bytes under a layout's blobs dir (the manifest itself left out)."""
    return sum(p.stat().st_size for p in layout_blobs.rglob("*")
               if p.is_file() and not p.name.endswith(".partial")
               and p.name != manifest_digest.removeprefix("sha256:"))


def bench_pull(image: Path, work: Path, rounds: int, load: Load, r: dict[str, Any]) -> None:
    archive = image / "image.oci.tar"
    with registry(work / "registry") as reg:
        print(f"pushing {archive} ({archive.stat().st_size / MiB:.1f} MiB) to {reg.host}…",
              flush=True)
        push(work, f"oci-archive:{archive}", f"{reg.host}/{REPO}:{TAG}")
        ours, skopeo = PullSide("ours (RegistryClient.pull)"), PullSide("skopeo copy")
        manifest_digest = ""
        ours_call: list[float] = []
        for i in range(rounds):
            order = [ours, skopeo] if i % 2 == 0 else [skopeo, ours]
            for side in order:
                dest = work / f"pull-{i}-{'ours' if side is ours else 'skopeo'}"
                shutil.rmtree(dest, ignore_errors=True)
                load.sample()
                if side is ours:
                    secs, doc = pull_ours(reg.host, dest)
                    ours_call.append(doc["call_s"])
                    manifest_digest = doc["manifest"]
                    nbytes = doc["downloaded"]
                    on_disk = blob_bytes(dest / "blobs", manifest_digest)
                    if on_disk != nbytes:
                        raise SystemExit(f"ours: {nbytes} bytes downloaded but {on_disk} "
                                         "on disk")
                else:
                    secs = pull_skopeo(reg.host, dest, work)
                    nbytes = blob_bytes(dest / "blobs", manifest_digest) if manifest_digest \
                        else tree_bytes(dest / "blobs")
                side.secs.append(secs)
                side.nbytes.append(nbytes)
                print(f"    round {i + 1}: {side.name}: {nbytes / MiB:.1f} MiB in {secs:.2f} s "
                      f"= {nbytes / MiB / secs:.1f} MiB/s", flush=True)
                shutil.rmtree(dest, ignore_errors=True)
        ratios = [o / s for o, s in zip(ours.rates(), skopeo.rates(), strict=True)]
        r["pull"] = {"rounds": rounds, "bytes": ours.nbytes[0],
                     "ours_s": ours.secs, "skopeo_s": skopeo.secs, "ours_call_s": ours_call,
                     "ours_mib_s": ours.rates(), "skopeo_mib_s": skopeo.rates(),
                     "ratio_per_round": ratios, "ratio_median": median(ratios)}

        print("second pull into the same cache, through a counting proxy…", flush=True)
        cache_dir = work / "second"
        shutil.rmtree(cache_dir, ignore_errors=True)
        first = pull_in_process(reg.host, cache_dir)
        with proxy(reg.host) as px:
            second = pull_in_process(px.host, cache_dir)
            served = px.blob_bytes()
            requests = [(s.method, s.path.rsplit("/", 2)[-2] + "/" + s.path.rsplit("/", 1)[-1][:19],
                         s.status, s.sent) for s in px.served]
        r["second_pull"] = {"first_downloaded": first.downloaded,
                            "first_layer_bytes": first.layer_bytes_downloaded,
                            "second_downloaded": second.downloaded,
                            "second_layer_bytes": second.layer_bytes_downloaded,
                            "second_blob_bytes_served": served,
                            "second_requests": requests}
        shutil.rmtree(cache_dir, ignore_errors=True)


def report_pull(r: dict[str, Any]) -> None:
    p = r["pull"]
    o, s = p["ours_mib_s"], p["skopeo_mib_s"]
    print("\n## Registry pull: ours against skopeo copy (host, docker-registry on 127.0.0.1)\n")
    print(f"{p['bytes'] / MiB:.1f} MiB of blobs (config + layers), {p['rounds']} rounds taking "
          "turns, order swapped every round.\n")
    print("| | median | spread (min–max) | per round |\n|---|---|---|---|")
    print(f"| ours, MiB/s | {median(o):.1f} | {spread(o)} | {', '.join(f'{x:.1f}' for x in o)} |")
    print(f"| skopeo, MiB/s | {median(s):.1f} | {spread(s)} | "
          f"{', '.join(f'{x:.1f}' for x in s)} |")
    print(f"| ours / skopeo throughput | {p['ratio_median']:.2f}× | {spread(p['ratio_per_round'], '.2f')} "
          f"| {', '.join(f'{x:.2f}' for x in p['ratio_per_round'])} |")
    print(f"| ours, s | {median(p['ours_s']):.2f} | | "
          f"{', '.join(f'{x:.2f}' for x in p['ours_s'])} |")
    print(f"| skopeo, s | {median(p['skopeo_s']):.2f} | | "
          f"{', '.join(f'{x:.2f}' for x in p['skopeo_s'])} |")
    call = [p["bytes"] / MiB / t for t in p["ours_call_s"]]
    print(f"| ours inside the call (no interpreter start-up), MiB/s | {median(call):.1f} | "
          f"{spread(call)} | {', '.join(f'{x:.1f}' for x in call)} |")
    sp = r["second_pull"]
    ok = sp["second_layer_bytes"] == 0 and sp["second_blob_bytes_served"] == 0
    print("\n## Second pull that changes nothing (same cache)\n")
    print(f"- first pull: {sp['first_downloaded']} bytes downloaded "
          f"({sp['first_layer_bytes']} layer bytes)")
    print(f"- second pull: {sp['second_downloaded']} bytes downloaded, "
          f"{sp['second_layer_bytes']} layer bytes (target 0 layer bytes {'✓' if ok else '✗'}); "
          f"blob bytes the registry served (counted by the proxy): "
          f"{sp['second_blob_bytes_served']}")
    print("- requests of the second pull: " +
          "; ".join(f"{m} {p_} → {st} ({n} B)" for m, p_, st, n in sp["second_requests"]))


# ------------------------------------------------------------------------------------ apply

def has_upgrade(image: Path) -> bool:
    listing = subprocess.run(["unsquashfs", "-l", "-no-progress", str(image / "rootfs.squashfs"),
                              "usr/lib/kairos/python/kairos/agent/upgrade.py"],
                             capture_output=True, text=True).stdout
    return "kairos/agent/upgrade.py" in listing


@dataclass
class Run:
    """One measured command in the guest."""
    wall: float  # seconds, measured in the guest around the command
    rc: int
    out: str
    err: str


def guest_timed(vm: VM, command: str, timeout: float = 7200) -> Run:
    """Run `command` (as root) in the guest, timing it there (SSH set-up not included)."""
    script = (f"t0=$(date +%s.%N); {command} >/tmp/bench.out 2>/tmp/bench.err; rc=$?; "
              "t1=$(date +%s.%N); echo \"$rc $t0 $t1\"")
    res = vm.ssh(f"sudo -n sh -c {shlex.quote(script)}", check=False, timeout=timeout)
    if res.returncode != 0 or not res.stdout.strip():
        raise SystemExit(f"ssh failed ({res.returncode}): {res.stderr[-2000:]}")
    rc, t0, t1 = res.stdout.split()[-3:]
    out = vm.ssh("sudo -n cat /tmp/bench.out", check=False).stdout
    err = vm.ssh("sudo -n cat /tmp/bench.err", check=False).stdout
    return Run(float(t1) - float(t0), int(rc), out, err)


@dataclass
class Pair:
    """An upgrade source against dd of the bytes its slot image has."""
    name: str
    source: str
    upgrade_done: list[float] = field(default_factory=list)  # `done` phase, s
    upgrade_wall: list[float] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)
    slot_size: int = 0
    dd: list[float] = field(default_factory=list)
    dd_bytes: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    flags: str = ""  # more options for `kairos upgrade`


def run_upgrade(vm: VM, pair: Pair, failures: list[str]) -> bool:
    cmd = f"kairos upgrade --source {pair.source} --json"
    run = guest_timed(vm, f"{cmd}{pair.flags}")
    doc: dict[str, Any] | None = None
    with contextlib.suppress(ValueError):
        doc = json.loads(run.out)
    if run.rc != 0 or not isinstance(doc, dict):
        # Progress lines (`… 45% 0.6 MiB/s`) left out: one per second under TCG.
        err = "\n".join(ln for ln in run.err.splitlines()
                        if not (ln.rstrip().endswith("MiB/s") and "%" in ln))
        failures.append(f"`{cmd}{pair.flags}` (as root, in the guest) exited {run.rc} after "
                        f"{run.wall:.1f} s\n--- stdout\n{run.out[-3000:]}\n--- stderr "
                        f"(progress lines left out)\n{err[-6000:]}")
        print(f"    {pair.name}: upgrade FAILED (exit {run.rc}) after {run.wall:.1f} s:\n"
              f"{err[-3000:]}", flush=True)
        return False
    phases = doc.get("phases") or {}
    pair.upgrade_done.append(float(phases.get("done", run.wall)))
    pair.upgrade_wall.append(run.wall)
    pair.phases.append(phases)
    pair.slot_size = int(doc.get("slot_size") or 0)
    pair.results.append(doc)
    print(f"    {pair.name}: upgrade done at {phases.get('done', '?')} s (wall {run.wall:.1f} s), "
          f"slot {pair.slot_size / MiB:.1f} MiB, {doc.get('bytes_downloaded')} bytes downloaded "
          f"({doc.get('layer_bytes_downloaded')} layer bytes); phases {phases}", flush=True)
    return True


def reboot(vm: VM) -> None:
    # The replaced image stays allocated while it is mounted as /: a reboot frees it.
    t = vm.reboot(timeout=REBOOT_TIMEOUT)
    mount_bench(vm)
    print(f"    rebooted into the upgraded image in {t:.1f} s", flush=True)


def mount_bench(vm: VM) -> None:
    vm.ssh(f"sudo -n mkdir -p {BENCH_MNT} && sudo -n mount -o ro -L {BENCH_LABEL} {BENCH_MNT}")


def run_dd(vm: VM, pair: Pair, nbytes: int) -> None:
    count = math.ceil(nbytes / DD_BS)
    pair.dd_bytes = count * DD_BS
    target = f"{STATE}/cOS/ddtest"
    vm.ssh(f"sudo -n mount -o remount,rw {STATE}")
    try:
        run = guest_timed(vm, f"dd if=/dev/zero of={target} bs=4M count={count} conv=fsync")
    finally:
        vm.ssh(f"sudo -n rm -f {target}; sudo -n sync; sudo -n mount -o remount,ro {STATE}",
               check=False)
    if run.rc != 0:
        raise SystemExit(f"dd failed in the guest (exit {run.rc}): {run.err[-2000:]}")
    pair.dd.append(run.wall)
    print(f"    {pair.name}: dd of {pair.dd_bytes / MiB:.0f} MiB ({count} × 4 MiB) {run.wall:.1f} s "
          f"({pair.dd_bytes / MiB / run.wall:.1f} MiB/s)", flush=True)


def make_room(vm: VM) -> None:
    """`--make-room`: remove passive.img, so COS_STATE has two slots free, not one."""
    vm.ssh(f"sudo -n mount -o remount,rw {STATE} && sudo -n rm -f {STATE}/cOS/passive.img && "
           f"sudo -n sync && sudo -n mount -o remount,ro {STATE}")
    print("    removed passive.img (--make-room)", flush=True)


def diagnose(vm: VM, src: str, nbytes: int) -> dict[str, float]:
    """What the guest's parts cost: reading the source disk, hashing (Python's hashlib, as
    the upgrade does), and a plain copy of the slot file with dd (reads what it writes, as
    a file: upgrade does); each in MiB/s, or seconds for the copy."""
    out: dict[str, float] = {}
    drop = "sudo -n sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches'"
    vm.ssh(drop)
    read = guest_timed(vm, f"dd if={src} of=/dev/null bs=4M")
    out["read_source_mib_s"] = nbytes / MiB / read.wall
    hashing = guest_timed(vm, "python3 -c " + shlex.quote(
        "import hashlib,sys\nh=hashlib.sha256()\nf=open(sys.argv[1],'rb')\n"
        "while b:=f.read(1<<20): h.update(b)") + f" {src}")  # file now in the page cache
    out["sha256_cached_mib_s"] = nbytes / MiB / hashing.wall
    target = f"{STATE}/cOS/ddtest"
    vm.ssh(f"sudo -n mount -o remount,rw {STATE}")
    try:
        vm.ssh(drop)
        copy = guest_timed(vm, f"dd if={src} of={target} bs=4M conv=fsync")
    finally:
        vm.ssh(f"sudo -n rm -f {target}; sudo -n sync; sudo -n mount -o remount,ro {STATE}",
               check=False)
    out["dd_copy_s"] = copy.wall
    print(f"    guest: read {out['read_source_mib_s']:.1f} MiB/s (second disk, cold), sha256 "
          f"{out['sha256_cached_mib_s']:.1f} MiB/s (cached), dd copy of the slot file "
          f"{copy.wall:.1f} s", flush=True)
    return out


def guest_space(vm: VM) -> str:
    return vm.ssh(f"df -m {STATE} /usr/local | tail -n +2; ls -l {STATE}/cOS", check=False).stdout


@contextlib.contextmanager
def booted(disk: Path, extra: Path, key: Path, log: Path) -> Iterator[VM]:
    cfg = VMConfig(disk=disk, extra_disks=(extra,), ssh_key=key, ssh_user="kairos",
                   serial_log=log)
    with VM(cfg) as vm:
        vm.wait_for_ssh(900)
        yield vm


def bench_apply(image: Path, work: Path, rounds: int, load: Load, r: dict[str, Any],
                oci_twice: bool, room: bool) -> None:
    if not has_upgrade(image):
        raise SystemExit(f"{image}/rootfs.squashfs has no `kairos upgrade` (built from an older "
                         "tree); rebuild it: sudo .venv/bin/kairos build -o DIR")
    key, pub = ensure_keypair(work / "keys")
    cc = work / "cloud-config.yaml"
    cc.write_text("#cloud-config\nusers:\n  - name: kairos\n    groups: [admin]\n"
                  f"    ssh_authorized_keys: ['{pub.read_text().strip()}']\n")
    disk = work / "disk.raw"
    print("disk (kairos disk, 8G: room on COS_PERSISTENT for the unpacked tree)…", flush=True)
    kairos("disk", str(image), "-o", str(disk), "--size", "8G", "--cloud-config", str(cc))
    print("second disk with image.oci.tar and rootfs.squashfs…", flush=True)
    extra = media_disk({n: image / n for n in ("image.oci.tar", "rootfs.squashfs")},
                       work / "kbench.raw", label=BENCH_LABEL)
    pairs = [Pair("ocifile", f"ocifile:{BENCH_MNT}/image.oci.tar"),
             Pair("file", f"file:{BENCH_MNT}/rootfs.squashfs")]
    squashfs_size = (image / "rootfs.squashfs").stat().st_size
    failures: list[str] = []
    r["apply_failures"] = failures
    r["made_room"] = room
    oci = Pair("oci", "", flags=" --allow-insecure-registries")
    try:
        with contextlib.ExitStack() as stack:
            vm = stack.enter_context(booted(disk, extra, key, work / "serial.log"))
            mount_bench(vm)
            r["guest"] = {"kernel": vm.ssh("uname -r").stdout.strip(),
                          "space_before": guest_space(vm)}
            print(r["guest"]["space_before"], flush=True)
            upgraded = False  # the guest reboots after an upgrade, before what comes next

            def settle() -> None:
                nonlocal upgraded
                if upgraded:
                    reboot(vm)
                    upgraded = False
                load.sample()

            for i in range(rounds):
                for pair in pairs:
                    # Taking turns: odd rounds put dd first (its size is the slot size the
                    # upgrade wrote in an earlier round).
                    for step in ["upgrade", "dd"] if i % 2 == 0 else ["dd", "upgrade"]:
                        settle()
                        if step == "dd":
                            run_dd(vm, pair, pair.slot_size or squashfs_size)
                            continue
                        if room and not pair.source.startswith("file:"):
                            make_room(vm)
                            load.sample()
                        upgraded = run_upgrade(vm, pair, failures)
            settle()
            r["guest"]["diagnostics"] = diagnose(vm, f"{BENCH_MNT}/rootfs.squashfs",
                                                 squashfs_size)
            if oci_twice:
                # The path users take for "a second upgrade that changes nothing": the device
                # pulls from a registry (the host's 127.0.0.1 is 10.0.2.2 to a user-net guest).
                reg = stack.enter_context(registry(work / "registry"))
                push(work, f"oci-archive:{image / 'image.oci.tar'}", f"{reg.host}/{REPO}:{TAG}")
                oci.source = f"oci:10.0.2.2:{reg.host.rsplit(':', 1)[1]}/{REPO}:{TAG}"
                for _ in range(2):
                    settle()
                    if room:
                        make_room(vm)
                        load.sample()
                    upgraded = run_upgrade(vm, oci, failures)
            r["guest"]["space_after"] = guest_space(vm)
            r["guest"]["state"] = vm.ssh("sudo -n kairos state --json", check=False).stdout
            vm.poweroff(timeout=300)
    finally:  # what was measured is kept (and reported) even when a later step fails
        r["apply"] = {p.name: {"source": p.source, "upgrade_done_s": p.upgrade_done,
                               "upgrade_wall_s": p.upgrade_wall, "phases": p.phases,
                               "slot_size": p.slot_size, "dd_s": p.dd, "dd_bytes": p.dd_bytes,
                               "ratio_done": (median(p.upgrade_done) / median(p.dd)
                                              if p.upgrade_done and p.dd else None),
                               "ratio_wall": (median(p.upgrade_wall) / median(p.dd)
                                              if p.upgrade_wall and p.dd else None),
                               "results": p.results} for p in pairs}
        if oci.source:
            r["oci_twice"] = {"source": oci.source, "results": oci.results,
                              "phases": oci.phases, "upgrade_done_s": oci.upgrade_done,
                              "upgrade_wall_s": oci.upgrade_wall}


# (name, where it starts: the first of these phases present, where it ends)
PHASE_SPANS = (("preflight", ("start",), "preflight"),
               ("pull", ("pulling",), "pulled"),
               ("unpack", ("pulled", "preflight"), "unpacked"),
               ("write (squash or copy)", ("unpacked", "preflight"), "slot-written"),
               ("sync + re-read + hash", ("slot-written",), "slot-synced"),
               ("records, flip, checkpoints", ("slot-synced",), "checkpointed"),
               ("scratch tree removed, cache pruned, after-upgrade stage", ("checkpointed",),
                "done"))


def spans(phases: dict[str, float]) -> list[tuple[str, float]]:
    out = []
    for name, starts, end in PHASE_SPANS:
        begin = next((p for p in starts if p in phases), None)
        if begin is not None and end in phases:
            out.append((name, phases[end] - phases[begin]))
    return out


def report_apply(r: dict[str, Any], rounds: int) -> None:
    print("\n## Applying an upgrade in the guest against dd of the same bytes\n")
    guest = r.get("guest", {})
    print(f"{rounds} round(s), taking turns; guest kernel {guest.get('kernel', '?')}; the guest "
          "reboots after each upgrade.\n")
    print("| source | upgrade (`done`) | upgrade (wall) | dd, same bytes | upgrade / dd "
          "(`done`) | (wall) | target |\n|---|---|---|---|---|---|---|")
    for name, a in r["apply"].items():
        if a["ratio_done"] is None:
            print(f"| `{a['source']}` | failed | | "
                  f"{', '.join(f'{x:.1f} s' for x in a['dd_s'])} | | | |")
            continue
        target = "≤ 1.50×" if name == "ocifile" else ""
        if target:
            target += " ✓" if a["ratio_done"] <= 1.5 else " ✗"
        print(f"| `{a['source']}` | {median(a['upgrade_done_s']):.1f} s | "
              f"{median(a['upgrade_wall_s']):.1f} s | {median(a['dd_s']):.1f} s "
              f"({a['dd_bytes'] / MiB:.0f} MiB) | {a['ratio_done']:.2f}× | "
              f"{a['ratio_wall']:.2f}× | {target} |")
    runs = [(name, a["phases"]) for name, a in r["apply"].items()]
    if "oci_twice" in r:
        runs.append(("oci", r["oci_twice"]["phases"]))
    print("\nwhere the upgrade's time goes (phase timings of the JSON, s, per round):\n")
    for name, all_phases in runs:
        for i, ph in enumerate(all_phases):
            parts = ", ".join(f"{n} {t:.1f}" for n, t in spans(ph))
            print(f"- {name}, run {i + 1}: {parts}; done {ph.get('done', 0):.1f}")
            print(f"  raw: {json.dumps(ph)}")
    d = guest.get("diagnostics")
    if d:
        print(f"\nguest parts: reading the source disk (cold) {d['read_source_mib_s']:.1f} MiB/s; "
              f"sha256 in python3 (cached file) {d['sha256_cached_mib_s']:.1f} MiB/s; a plain "
              f"`dd if=rootfs.squashfs of=…/cOS/ddtest bs=4M conv=fsync` (cold) "
              f"{d['dd_copy_s']:.1f} s\n")
    if r.get("made_room"):
        print("(--make-room: passive.img was removed before each upgrade from an OCI image)\n")
    for name, a in r["apply"].items():
        res = a["results"][-1] if a["results"] else {}
        print(f"- {name}: slot {a['slot_size']} bytes, sha256 "
              f"{str(res.get('slot_sha256'))[:16]}…, version {res.get('version')}")
    if "oci_twice" in r:
        o = r["oci_twice"]
        print(f"\n## Upgrading twice from a registry in the guest (`{o['source']}`)\n")
        for i, res in enumerate(o["results"]):
            print(f"- upgrade {i + 1}: {res.get('bytes_downloaded')} bytes downloaded, "
                  f"{res.get('layer_bytes_downloaded')} layer bytes; done at "
                  f"{o['upgrade_done_s'][i]:.1f} s (wall {o['upgrade_wall_s'][i]:.1f} s)")
        if len(o["results"]) == 2:
            second = o["results"][1].get("layer_bytes_downloaded")
            print(f"- second upgrade: {second} layer bytes (target 0 "
                  f"{'✓' if second == 0 else '✗'})")
    for text in r.get("apply_failures", []):
        print(f"\n### FAILED\n\n{text}")


# ------------------------------------------------------------------------------------ main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, required=True,
                    help="a `kairos build` output directory (image.oci.tar, rootfs.squashfs)")
    ap.add_argument("--pull", action="store_true", help="registry pull against skopeo (host)")
    ap.add_argument("--apply", action="store_true", help="upgrade against dd (VM)")
    ap.add_argument("--rounds", type=int,
                    help="rounds taking turns (default 3 for --pull, 1 for --apply)")
    ap.add_argument("--oci-twice", action="store_true",
                    help="with --apply: also upgrade twice from a registry on the host "
                         "(oci:10.0.2.2:PORT/…) and report what the second one downloads")
    ap.add_argument("--make-room", action="store_true",
                    help="with --apply: remove passive.img before each upgrade from an OCI "
                         "image (its space estimate may not fit beside two slots)")
    ap.add_argument("--build", action="store_true",
                    help="first build the image from this tree into --image, on a step cache "
                         f"of its own ({BUILD_CACHE}, seeded from the shared cache's base)")
    ap.add_argument("--keep", type=Path, help="work directory to keep (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = ap.parse_args()
    if not args.pull and not args.apply:
        args.pull = args.apply = True
    image = args.image.resolve()
    if args.build:
        print(f"building {image} from this tree (cache {BUILD_CACHE})…", flush=True)
        t0 = time.monotonic()
        build_v2(image, BUILD_CACHE, "0.1.0")
        print(f"    built in {time.monotonic() - t0:.0f} s", flush=True)
    for name in ("image.oci.tar", "rootfs.squashfs"):
        if not (image / name).is_file():
            raise SystemExit(f"{image} has no {name}: give a `kairos build` output directory")
    work = args.keep or Path(tempfile.mkdtemp(prefix="kairos-bench-upgrade-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    r: dict[str, Any] = {"image": str(image)}
    pull_load, apply_load = Load(), Load()
    error = ""
    try:
        if args.pull:
            bench_pull(image, work, args.rounds or 3, pull_load, r)
        if args.apply:
            bench_apply(image, work, args.rounds or 1, apply_load, r, args.oci_twice,
                        args.make_room)
    except Exception:  # report what was measured before it, then the error
        error = traceback.format_exc()
        r["error"] = error
    finally:
        r["load"] = {"pull": pull_load.loadavg, "pull_other_vms": pull_load.other_vms,
                     "apply": apply_load.loadavg, "apply_other_vms": apply_load.other_vms}
        if args.json:
            args.json.write_text(json.dumps(r, indent=2))
    print(f"\n# Upgrade benchmark\n\n{time.strftime('%Y-%m-%d', time.localtime(started))}, "
          f"commit {commit()}; {machine()}; image {image} "
          f"(image.oci.tar {(image / 'image.oci.tar').stat().st_size / MiB:.1f} MiB, "
          f"rootfs.squashfs {(image / 'rootfs.squashfs').stat().st_size / MiB:.1f} MiB).")
    if "pull" in r:
        print(f"Pull: {load_summary(pull_load, 'pulls')}.")
        report_pull(r)
    if "apply" in r:
        print(f"\nApply: {load_summary(apply_load, 'measurements')}.")
        report_apply(r, args.rounds or 1)
    print(f"\nwall time of the whole benchmark: {(time.time() - started) / 60:.1f} min")
    if error:
        print(f"\n### The benchmark stopped early (work directory kept: {work})\n\n{error}")
        return 1
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
