"""`kairos state`: what a running device booted, from where, which partitions it has, and
what each slot image file holds.

Field names follow `kairos-agent state` so scripts written for Kairos keep working; `images`
(ours: kairos-agent has no such key) shows the records of state.yaml (slotstate) for the
active, passive and recovery files, and `assessment` (ours too) the boot assessment: GRUB's
flags on COS_STATE, the images that failed it, whether this device runs the previous image
after a failed upgrade (Kairos's /run/cos/upgrade_failure sentinel) and this boot's verdict.
Every reader takes a `root` (and optionally the raw text it would read) so tests run on
fixtures.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kairos.agent import slotstate
from kairos.envfile import parse_env
from kairos.errors import BadInput, KairosError
from kairos.run import run

log = logging.getLogger("kairos.state")

ACTIVE, PASSIVE, RECOVERY = "active_boot", "passive_boot", "recovery_boot"
LIVECD, AUTORESET, UNKNOWN = "livecd_boot", "autoreset_boot", "unknown"
BOOT_STATES = (ACTIVE, PASSIVE, RECOVERY, LIVECD, AUTORESET, UNKNOWN)

# Which filesystem label marks each partition the state reports (Kairos's names).
PARTITION_LABELS = {"oem": "COS_OEM", "persistent": "COS_PERSISTENT",
                    "recovery": "COS_RECOVERY", "state": "COS_STATE"}
# Where the running system normally mounts them; preferred when a partition is mounted in
# several places (persistent is also bind-mounted piecewise onto /etc, /var/lib, …).
USUAL_MOUNTS = {"oem": "/oem", "persistent": "/usr/local",
                "state": "/run/initramfs/cos-state", "recovery": "/run/initramfs/cos-state"}
# Boot-mode sentinels the early-init writes (immucore's names), most specific first.
SENTINELS = (("autoreset_mode", AUTORESET), ("recovery_mode", RECOVERY),
             ("passive_mode", PASSIVE), ("active_mode", ACTIVE), ("live_mode", LIVECD))
SLOTS = {ACTIVE: "active", PASSIVE: "passive", RECOVERY: "recovery", AUTORESET: "recovery"}
LSBLK_COLUMNS = "NAME,PATH,LABEL,PARTLABEL,FSTYPE,SIZE,MOUNTPOINTS,UUID,PARTUUID,RO,MAJ:MIN"
# Keys of /etc/kairos-release every report shows, even when the file lacks them.
KAIROS_KEYS = ("version", "flavor", "flavor_release", "variant", "model", "arch")
# The slot image files of each partition, by role (paths inside the partition).
SLOT_FILES = {"state": {"active": "cOS/active.img", "passive": "cOS/passive.img"},
              "recovery": {"recovery": "cOS/recovery.squashfs"}}


@dataclass
class PartitionState:
    found: bool = False
    mounted: bool = False
    name: str = ""  # device path, e.g. /dev/vda3
    label: str = ""  # partition (GPT) label
    filesystemlabel: str = ""
    mount_point: str = ""
    size_bytes: int = 0
    type: str = ""  # filesystem type
    read_only: bool = False  # of the mount when mounted, else of the device
    uuid: str = ""  # partition UUID, as Kairos reports on Linux
    fs_uuid: str = ""


@dataclass
class SlotImage:
    """One slot image file and what its record (state.yaml on its partition) says it holds."""

    found: bool = False  # the file is there
    recorded: bool = False  # a record matches the file (inode and size)
    running: bool = False  # this boot's root filesystem is this file
    partition: str = ""  # filesystem label of the partition holding it
    file: str = ""  # its path inside that partition
    label: str = ""  # COS_ACTIVE, COS_PASSIVE, COS_SYSTEM (Kairos's image labels)
    fs: str = ""
    source: str = ""  # oci:REF, file:PATH, dir:PATH, ocifile:PATH
    digest: str = ""  # OCI manifest digest, "" when the source had none
    sha256: str = ""  # of the file, when it was written
    size: int = 0  # of the file as it is now
    version: str = ""
    arch: str = ""
    date: str = ""  # when the file was written
    image_id: str = ""  # the image's id (its /boot/kairos-boot.cfg), when recorded
    assessment: str = ""  # good or failed: the last boot assessment of this image


@dataclass
class Assessment:
    """The boot assessment (docs/lifecycle.md)."""

    tentative: str = ""  # kairos_tentative: the image id on trial after an upgrade
    tries: int = 0  # kairos_tries: boots it still has
    failed: str = ""  # kairos_failed: the image id GRUB refuses to boot from a slot
    upgrade_failure: bool = False  # /run/cos/upgrade_failure: runs the previous image
    failed_images: list[dict[str, str]] = field(default_factory=list)  # state.yaml's failed
    booted_image_id: str = ""  # this boot's image id
    verdict: str = ""  # this boot's assessment: good, failed, or "" (not run yet)
    checks: list[dict[str, Any]] = field(default_factory=list)  # this boot's check results


@dataclass
class StageSummary:
    """One stage's last run this boot: steps by outcome, and one line per failed step."""

    ok: bool = True
    run: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    finished: float | None = None  # when its report was written (seconds since the epoch)


@dataclass
class SystemState:
    boot: str = UNKNOWN
    booted_slot: str | None = None
    uuid: str = ""
    oem: PartitionState = field(default_factory=PartitionState)
    persistent: PartitionState = field(default_factory=PartitionState)
    recovery: PartitionState = field(default_factory=PartitionState)
    state: PartitionState = field(default_factory=PartitionState)
    kairos: dict[str, Any] = field(default_factory=dict)
    system: dict[str, Any] = field(default_factory=dict)
    in_ram: bool = False
    # What each boot-time stage run of this boot did (from /run/kairos/stages/*.json).
    stages: dict[str, StageSummary] = field(default_factory=dict)
    # The slot images (active, passive, recovery): what each file holds, from its record.
    images: dict[str, SlotImage] = field(default_factory=dict)
    assessment: Assessment = field(default_factory=Assessment)
    # The Kubernetes node (provider/status.py): role, node name, version, Ready.
    kubernetes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- boot mode ---------------------------------------------------------------------------


def boot_from_cmdline(cmdline: str) -> str:
    """The boot state the kernel command line names (Kairos's substring rules).

    `kairos.ram` (in-RAM boot of the active image) and `kairos.reset` come first: the
    statereset entry boots the recovery image (COS_SYSTEM) with `kairos.reset`, and that boot
    is an auto-reset, not a plain recovery boot.
    """
    if "kairos.ram" in cmdline:
        return ACTIVE
    if "kairos.reset" in cmdline:
        return AUTORESET
    if "COS_ACTIVE" in cmdline:
        return ACTIVE
    if "COS_PASSIVE" in cmdline:
        return PASSIVE
    if any(m in cmdline for m in ("COS_RECOVERY", "COS_SYSTEM", "recovery-mode")):
        return RECOVERY
    if any(m in cmdline for m in ("live:LABEL", "live:CDLABEL", "netboot")):
        return LIVECD
    return UNKNOWN


def boot_from_sentinels(root: Path) -> str:
    """The boot state the early-init recorded under /run/cos, or unknown."""
    run_cos = root / "run/cos"
    for name, state in SENTINELS:
        if (run_cos / name).exists():
            return state
    return UNKNOWN


def detect_boot(root: Path, cmdline: str | None = None) -> str:
    """Command line first (what `kairos-agent state` does); the sentinels when it says nothing
    or when the initrd booted another slot file than the command line named (a boot id
    mismatch after a power cut, /run/cos/booted-image): then early-init's sentinel is the truth."""
    if (root / "run/cos/booted-image").exists():
        sentinel = boot_from_sentinels(root)
        if sentinel != UNKNOWN:
            return sentinel
    if cmdline is None:
        cmdline = _read(root / "proc/cmdline")
    found = boot_from_cmdline(cmdline)
    return found if found != UNKNOWN else boot_from_sentinels(root)


# -- partitions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    majmin: str
    fsroot: str  # the directory of the filesystem mounted here ("/" unless a bind of a subdir)
    target: str
    options: tuple[str, ...]
    source: str


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(value: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), value)


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 10 or "-" not in parts[6:]:
            continue
        sep = parts.index("-", 6)
        mounts.append(Mount(majmin=parts[2], fsroot=_unescape(parts[3]),
                            target=_unescape(parts[4]), options=tuple(parts[5].split(",")),
                            source=_unescape(parts[sep + 2]) if len(parts) > sep + 2 else ""))
    return mounts


def _flatten(devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat = []
    for dev in devices:
        flat.append(dev)
        flat.extend(_flatten(dev.get("children") or []))
    return flat


def parse_lsblk(text: str) -> list[dict[str, Any]]:
    """Every block device of `lsblk --json` output, children included, in one list."""
    if not text.strip():
        return []
    data = json.loads(text)
    return _flatten(list(data.get("blockdevices") or []))


def _pick_mount(mounts: list[Mount], usual: str) -> Mount | None:
    if not mounts:
        return None
    for m in mounts:
        if m.target == usual:
            return m
    whole = [m for m in mounts if m.fsroot == "/"]
    return min(whole or mounts, key=lambda m: (len(m.target), m.target))


def partition_state(dev: dict[str, Any], mounts: list[Mount], usual: str) -> PartitionState:
    """One partition's report: lsblk's facts plus the mount (and its ro/rw) from mountinfo."""
    own = [m for m in mounts if dev.get("maj:min") and m.majmin == dev.get("maj:min")]
    if not own and dev.get("path"):
        own = [m for m in mounts if m.source == dev["path"]]
    mnt = _pick_mount(own, usual)
    points = [p for p in (dev.get("mountpoints") or [dev.get("mountpoint")]) if p]
    mount_point = mnt.target if mnt else (points[0] if points else "")
    read_only = ("ro" in mnt.options) if mnt else bool(dev.get("ro"))
    return PartitionState(
        found=True, mounted=bool(mount_point), name=str(dev.get("path") or f"/dev/{dev['name']}"),
        label=dev.get("partlabel") or "", filesystemlabel=dev.get("label") or "",
        mount_point=mount_point, size_bytes=int(dev.get("size") or 0),
        type=dev.get("fstype") or "", read_only=read_only,
        uuid=dev.get("partuuid") or "", fs_uuid=dev.get("uuid") or "")


def detect_partitions(devices: list[dict[str, Any]], mounts: list[Mount]
                      ) -> dict[str, PartitionState]:
    found: dict[str, PartitionState] = {}
    for key, label in PARTITION_LABELS.items():
        dev = next((d for d in devices if d.get("label") == label), None)
        found[key] = (partition_state(dev, mounts, USUAL_MOUNTS[key]) if dev
                      else PartitionState())
    return found


def read_lsblk() -> str:
    """lsblk's JSON for this machine; empty when lsblk is missing or fails (no devices)."""
    if shutil.which("lsblk") is None:
        return ""
    res = run(["lsblk", "--json", "-b", "-o", LSBLK_COLUMNS], check=False)
    if res.returncode != 0:  # an older lsblk without MOUNTPOINTS
        res = run(["lsblk", "--json", "-b", "-o", LSBLK_COLUMNS.replace("MOUNTPOINTS",
                                                                        "MOUNTPOINT")],
                  check=False)
    return res.stdout if res.returncode == 0 else ""


# -- release, identity, system -----------------------------------------------------------


def detect_kairos(root: Path) -> dict[str, Any]:
    """KAIROS_* keys of /etc/kairos-release (older images: /etc/os-release), lower-cased."""
    release = parse_env(_read(root / "etc/kairos-release"))
    if not any(k.startswith("KAIROS_") for k in release):
        release = parse_env(_read(root / "etc/os-release"))
    info: dict[str, Any] = dict.fromkeys(KAIROS_KEYS, "")
    for key, value in release.items():
        if key.startswith("KAIROS_"):
            info[key.removeprefix("KAIROS_").lower()] = value
    info["init"] = detect_init(root)
    info["secureboot"] = detect_secureboot(root)
    return info


def detect_init(root: Path) -> str:
    if (root / "run/systemd/system").is_dir():
        return "systemd"
    if (root / "run/openrc").is_dir() or (root / "sbin/openrc").exists():
        return "openrc"
    return "unknown"


def detect_secureboot(root: Path) -> bool:
    # The EFI variable's payload is 4 attribute bytes then one byte: 1 = enabled.
    var = root / "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
    try:
        data = var.read_bytes()
    except OSError:
        return False
    return len(data) >= 5 and data[4] == 1


def detect_uuid(root: Path) -> str:
    """The machine's UUID: the firmware's (DMI) when readable, else the systemd machine-id."""
    for path in (root / "sys/class/dmi/id/product_uuid", root / "etc/machine-id"):
        value = _read(path).strip().lower()
        if value.strip("0-"):  # an all-zero DMI UUID means the firmware set none
            return value
    return ""


def detect_system(root: Path) -> dict[str, Any]:
    os_release = parse_env(_read(root / "etc/os-release"))
    # The kernel's hostname is the live one; /etc/hostname only what the next boot would set.
    hostname = (_read(root / "proc/sys/kernel/hostname").strip()
                or _read(root / "etc/hostname").strip())
    return {"hostname": hostname,
            "kernel": _read(root / "proc/sys/kernel/osrelease").strip(),
            "os": {"name": os_release.get("NAME", ""), "id": os_release.get("ID", ""),
                   "version": os_release.get("VERSION_ID", ""),
                   "pretty_name": os_release.get("PRETTY_NAME", "")}}


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


# -- stage reports -----------------------------------------------------------------------

STAGE_REPORTS = "run/kairos/stages"  # below the root; where boot-time stage runs leave theirs
BOOT_STAGES = ("rootfs", "initramfs", "fs", "boot", "network", "reconcile")


def _failure_line(result: dict[str, Any]) -> str:
    """As the runner logs it: `<file>: step '<name>' (<stage>) failed: <reason>`."""
    source, name = str(result.get("source") or ""), str(result.get("name") or "?")
    name = name.removeprefix(f"{source}.") if source else name
    return (f"{source or '?'}: step '{name}' ({result.get('stage') or '?'}) failed: "
            f"{result.get('detail') or ''}")


def summarize_report(data: Any) -> StageSummary:
    """A stage report (the runner's `StageReport.to_json()`) as counts and failure lines."""
    if not isinstance(data, dict):
        return StageSummary(ok=False, warnings=["the report is not a JSON object"])
    results = [r for r in data.get("results") or [] if isinstance(r, dict)]
    count = {status: sum(1 for r in results if r.get("status") == status)
             for status in ("ok", "skipped", "failed")}
    finished = data.get("finished")
    return StageSummary(
        ok=count["failed"] == 0, run=count["ok"], skipped=count["skipped"],
        failed=count["failed"],
        failures=[_failure_line(r) for r in results if r.get("status") == "failed"],
        warnings=[str(w) for w in data.get("warnings") or []],
        finished=float(finished) if isinstance(finished, int | float) else None)


def detect_stages(root: Path) -> dict[str, StageSummary]:
    """Every stage report this boot left, boot stages in boot order first, then the rest."""
    found: dict[str, StageSummary] = {}
    for path in sorted((root / STAGE_REPORTS).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            found[path.stem] = StageSummary(ok=False, warnings=[f"unreadable report: {exc}"])
            continue
        found[path.stem] = summarize_report(data)
    rank = {name: i for i, name in enumerate(BOOT_STAGES)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


# -- slot images -------------------------------------------------------------------------


def _under(root: Path, mount_point: str) -> Path:
    return root / mount_point.lstrip("/")


def _read_mounted(part_dir: Path, files: dict[str, str]
                  ) -> tuple[dict[str, Any], dict[str, slotstate.Stat | None]]:
    stats = {role: slotstate.file_stat(part_dir / rel) for role, rel in files.items()}
    return slotstate.read_doc(part_dir), stats


def _read_unmounted(device: str, files: dict[str, str]
                    ) -> tuple[dict[str, Any], dict[str, slotstate.Stat | None]]:
    """The state file and the slot files' (inode, size) of an ext4 filesystem that is not
    mounted, read with debugfs: nothing is mounted and nothing written (a mount, even
    read-only, could replay the journal, and would make a concurrent read-write mount of the
    partition fail)."""
    stats: dict[str, slotstate.Stat | None] = dict.fromkeys(files)
    if shutil.which("debugfs") is None:
        log.debug("debugfs is missing: the records on %s are not read", device)
        return {}, stats
    listed: dict[str, dict[str, slotstate.Stat]] = {}
    for parent in sorted({str(Path("/", rel).parent) for rel in files.values()}):
        res = run(["debugfs", "-R", f"ls -p {parent}", device], check=False)
        if res.returncode != 0:
            log.debug("cannot read %s with debugfs: %s", device, res.stderr.strip())
            return {}, stats
        listed[parent] = slotstate.parse_debugfs_ls(res.stdout)
    for role, rel in files.items():
        path = Path("/", rel)
        stats[role] = listed.get(str(path.parent), {}).get(path.name)
    res = run(["debugfs", "-R", f"cat /{slotstate.STATE_FILE}", device], check=False)
    text = res.stdout if res.returncode == 0 else ""
    return slotstate.parse(text, f"{device}:/{slotstate.STATE_FILE}"), stats


def running_image(root: Path, mounts: list[Mount]) -> str:
    """The file the root filesystem is a loop mount of (its current name: a rename shows),
    "" when the root is not a loop device."""
    top = [m for m in mounts if m.target == "/"]
    if not top or not top[-1].source.startswith("/dev/loop"):
        return ""
    name = top[-1].source.removeprefix("/dev/")
    backing = _read(root / "sys/block" / name / "loop/backing_file").strip()
    return backing.removesuffix(" (deleted)")


def detect_images(root: Path, parts: dict[str, PartitionState], mounts: list[Mount], *,
                  read_devices: bool) -> dict[str, SlotImage]:
    """active and passive from COS_STATE, recovery from COS_RECOVERY: each file's record
    (slotstate: by inode and size, whatever role it was saved under). A partition that is
    not mounted is read with debugfs when `read_devices` (the running device)."""
    running = running_image(root, mounts)
    images: dict[str, SlotImage] = {}
    for key, files in SLOT_FILES.items():
        part = parts[key]
        doc: dict[str, Any] = {}
        stats: dict[str, slotstate.Stat | None] = dict.fromkeys(files)
        if part.mounted:
            doc, stats = _read_mounted(_under(root, part.mount_point), files)
        elif part.found and read_devices:
            doc, stats = _read_unmounted(part.name, files)
        records = slotstate.match(doc, stats)
        for role, rel in files.items():
            img = SlotImage(partition=PARTITION_LABELS[key], file=f"/{rel}",
                            label=slotstate.ROLE_LABELS[role])
            st, rec = stats.get(role), records.get(role)
            if st is not None:
                img.found, img.size = True, st[1]
                img.running = bool(running) and part.mounted and running == os.path.join(
                    part.mount_point, rel)
            if rec is not None:
                img.recorded = True
                img.fs, img.source, img.digest, img.sha256 = rec.fs, rec.source, rec.digest, rec.sha256
                img.version, img.arch, img.date = rec.version, rec.arch, rec.date
                img.image_id, img.assessment = rec.image_id, rec.assessment
            images[role] = img
    return images


# -- boot assessment ---------------------------------------------------------------------


def _read_flags(state: PartitionState, root: Path, read_devices: bool) -> Any:
    """The flags of COS_STATE's assessment block: read in place when it is mounted, dumped
    with debugfs when it is not (nothing mounted, nothing written); None when unreadable."""
    import tempfile

    from kairos.boot import assessment
    try:
        if state.mounted:
            return assessment.read(_under(root, state.mount_point))
        if not (state.found and read_devices and shutil.which("debugfs")):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            dest = Path(tmp, assessment.ENV_FILE)
            res = run(["debugfs", "-R", f"dump /{assessment.ENV_FILE} {dest}", state.name],
                      check=False)
            if res.returncode != 0 or not dest.exists():
                return None
            return assessment.read(Path(tmp))
    except (OSError, KairosError) as exc:
        log.debug("cannot read the boot assessment flags: %s", exc)
        return None


def _state_doc(state: PartitionState, root: Path, read_devices: bool) -> dict[str, Any]:
    if state.mounted:
        return slotstate.read_doc(_under(root, state.mount_point))
    if state.found and read_devices:
        return _read_unmounted(state.name, {})[0]
    return {}


def _booted_image_id(root: Path) -> str:
    from kairos.artifacts.bootid import read_boot_ids
    try:
        ids = read_boot_ids(root)
    except (OSError, KairosError):
        return ""
    return (ids.image_id or "") if ids is not None else ""


def detect_assessment(root: Path, state: PartitionState, *, read_devices: bool) -> Assessment:
    """GRUB's flags, the failed list of COS_STATE's state.yaml, the upgrade_failure sentinel
    and this boot's report (/run/kairos/assessment.json, written by `kairos assess`)."""
    out = Assessment(upgrade_failure=(root / "run/cos/upgrade_failure").exists(),
                     booted_image_id=_booted_image_id(root))
    flags = _read_flags(state, root, read_devices)
    if flags is not None:
        out.tentative, out.tries, out.failed = flags.tentative, flags.tries, flags.failed
    out.failed_images = [f.to_json() for f in slotstate.failed_images(
        _state_doc(state, root, read_devices))]
    try:
        report = json.loads((root / "run/kairos/assessment.json").read_text())
    except (OSError, ValueError):
        report = None
    if isinstance(report, dict):
        out.verdict = str(report.get("verdict") or "")
        health = report.get("health")
        results = health.get("results") if isinstance(health, dict) else None
        out.checks = [r for r in results or [] if isinstance(r, dict)]
    return out


# -- the whole report --------------------------------------------------------------------


def detect_state(root: Path = Path("/"), *, cmdline: str | None = None,
                 lsblk_json: str | None = None, mountinfo: str | None = None,
                 read_devices: bool | None = None) -> SystemState:
    """Collect the report. On a device, root is "/" and lsblk runs; elsewhere the caller
    passes lsblk's JSON (no devices when omitted). `read_devices` (default: root is "/"):
    read the slot records of an unmounted COS_STATE/COS_RECOVERY from the device."""
    on_device = os.path.realpath(root) == "/"
    if cmdline is None:
        cmdline = _read(root / "proc/cmdline")
    if lsblk_json is None:
        lsblk_json = read_lsblk() if on_device else ""
    if mountinfo is None:
        mountinfo = _read(root / "proc/self/mountinfo")
    boot = detect_boot(root, cmdline)
    devices = on_device if read_devices is None else read_devices
    mounts = parse_mountinfo(mountinfo)
    parts = detect_partitions(parse_lsblk(lsblk_json), mounts)
    return SystemState(
        boot=boot, booted_slot=SLOTS.get(boot), uuid=detect_uuid(root),
        oem=parts["oem"], persistent=parts["persistent"], recovery=parts["recovery"],
        state=parts["state"], kairos=detect_kairos(root), system=detect_system(root),
        in_ram="kairos.ram" in cmdline or (root / "run/cos/in_ram_mode").exists(),
        stages=detect_stages(root),
        images=detect_images(root, parts, mounts, read_devices=devices),
        assessment=detect_assessment(root, parts["state"], read_devices=devices),
        kubernetes=detect_kubernetes(root, query=on_device))


def detect_kubernetes(root: Path, *, query: bool) -> dict[str, Any]:
    """The provider's record of this boot and the image's version; the node's Ready state
    from the apiserver only when `query` (the running device)."""
    from kairos.provider.status import kubernetes_state
    return kubernetes_state(root, query=query)


def query(data: dict[str, Any], key: str) -> Any:
    """A value by dotted path (`boot`, `oem.mount_point`; a leading dot as in jq is fine)."""
    value: Any = data
    path = key.strip().lstrip(".")
    if not path:
        return data
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise BadInput(f"unknown state key '{key}'",
                           f"top-level keys: {', '.join(data)}")
    return value


def format_value(value: Any) -> str:
    """One value as a script wants it: scalars bare (true/false lower-case), the rest JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2)
    return str(value)
