"""`kairos install` / `manual-install`: install this OS onto a disk from a live system.

The order keeps every check before the first write:

1. the install config: a `--cloud-config` file or URL (copied as is to /oem), else what the
   system collects (written to /oem merged); its `install:` block gives the defaults;
2. the disk: `--device` or `install.device` (a path, a /dev/disk/by-* link, `script://`,
   `auto`; see devices.py), refused when it carries the running system or anything mounted;
3. the slot image: `--source` or `install.system.source` / `install.source` /
   `install.image`, else the live medium's (LIVE_SLOT_IMAGE); `oci:`, `ocifile:` and `dir:`
   go through the upgrade's fetchers into scratch space and are squashed as a build does;
4. the plan (agent/install.py): images, configs, GRUB env, partitions sized for the disk,
   and the disk's size against what the layout needs;
5. confirmation: the plan is shown and a person types `yes` (`--yes` and `install.auto`
   skip it; without a terminal there is nobody to ask, so it is refused);
6. `before-install`, the install itself, `after-install`, then reboot or power off.

With `--auto` (the live system's boot service) nothing happens unless the collected config
says `install.auto: true`; a `config_url` that does not answer yet is retried for up to
AUTO_WAIT seconds first, since the network may come up after the service starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kairos.agent import devices
from kairos.agent.install import (
    EXTRA_DEFAULT_FS,
    EXTRA_FS,
    KAIROS_PARTS,
    ExtraPartition,
    InstallPlan,
    LayoutOptions,
    check_slot_image,
    install,
    minimum_size,
    plan_for_device,
    validate_cloud_config,
)
from kairos.agent.upgradesource import UpgradeSource, parse_source
from kairos.boot.grubcfg import GrubCfgOptions
from kairos.boot.live import LIVE_SLOT_IMAGE
from kairos.config.collect import MergedConfig, collect
from kairos.disk.mounts import tempdir
from kairos.disk.sizes import format_size
from kairos.errors import BadInput, KairosError

log = logging.getLogger("kairos.install")

AUTO_WAIT = 300.0  # seconds --auto waits for a config_url that does not answer (Kairos: 5 min)
AUTO_RETRY = 10.0
FAIL_SENTINEL = "run/cos/fail_installation"  # a before-install step may ask to stop here
CONFIG_NAME = "install-cloud-config.yaml"
# Keys of install: that change what is written and are not done: refused rather than ignored,
# since ignoring them would erase or leave unencrypted what the user meant to keep safe.
REFUSED_KEYS = {"no-format": "installing onto existing partitions",
                "no_format": "installing onto existing partitions",
                "encrypted_partitions": "encrypted partitions",
                "iso": "installing from a downloaded ISO"}
# Keys accepted and ignored with a warning (nothing on the disk depends on them).
IGNORED_KEYS = ("force", "nousers", "ssh_hardening", "grub-entry-name", "bundles", "env",
                "extra-dirs-rootfs", "firmware", "part-table", "cloud-init", "tty",
                "skip_copy_kcrypt_plugin")
# What this install does with (the schema's keys are each in one of the three lists).
# bind_mounts / ephemeral_mounts travel in the config installed to /oem, which early-init
# reads at every boot (early/custom.py).
HONOURED_KEYS = ("auto", "device", "reboot", "poweroff", "source", "image", "partitions",
                 "extra-partitions", "system", "passive", "recovery-system", "grub_options",
                 "allow-insecure-registries", "bind_mounts", "ephemeral_mounts")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
RESERVED_LABELS = ("COS_", "KAIROS_")  # labels the boot searches: an extra one would hijack it


@dataclass(frozen=True)
class Request:
    """What the command line asked for (None: take it from the install config)."""

    device: str | None = None
    cloud_config: str | None = None  # a file or an http(s)/file URL
    source: str | None = None
    image_dir: Path | None = None  # a `kairos build` output directory (host use)
    reboot: bool | None = None
    poweroff: bool | None = None
    yes: bool = False
    auto: bool = False
    grub_options: Mapping[str, str] = field(default_factory=dict)
    grub_timeout: int | None = None
    auth_file: Path | None = None
    insecure: bool | None = None
    root: Path = Path("/")  # where config is collected and stages run (tests: a fake root)
    scratch: Path | None = None  # where oci:/ocifile:/dir: sources are unpacked


@dataclass(frozen=True)
class InstallConfig:
    """The cloud-config this install uses and installs to /oem."""

    data: dict[str, Any]
    name: str  # its file, URL, or "collected" for what the system collected
    path: Path | None = None  # the file that goes to /oem (None: nothing to install)


@dataclass(frozen=True)
class Options:
    """The install decided from the command line over the config's install: block."""

    device: str
    source: str  # "" = the live medium
    recovery_source: str
    reboot: bool
    poweroff: bool
    layout: LayoutOptions
    grub_options: dict[str, str]
    auto: bool
    insecure: bool


@dataclass
class Result:
    device: str
    how: str
    plan: InstallPlan
    source: str
    after: str  # "reboot", "poweroff" or ""

    def to_json(self) -> dict[str, object]:
        return {"device": self.device, "how": self.how, "source": self.source,
                "after": self.after, **self.plan.summary()}


# ------------------------------------------------------------------------------ config

def _read_config_file(spec: str, work: Path) -> tuple[str, Path]:
    """(name, local file) of a --cloud-config file or URL (fetched into `work`)."""
    from kairos.config.fetch import is_url
    if not is_url(spec):
        path = Path(spec)
        if not path.is_file():
            raise BadInput(f"cloud-config {spec} does not exist", "check the path or URL")
        return spec, path
    from kairos.config.fetch import fetch_text
    try:
        text = fetch_text(spec)
    except BadInput:
        raise
    except KairosError as exc:
        raise BadInput(exc.message, exc.hint) from None
    path = work / CONFIG_NAME
    path.write_text(text)
    return spec, path


def _load_yaml(path: Path, name: str) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInput(f"cloud-config {name} is not a map of keys", "start with keys such as "
                       "users:, install: or stages:")
    return data


def collect_config(root: Path, *, wait: float = 0.0, retry: float = AUTO_RETRY,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic,
                   fetch: Callable[[str], str] | None = None) -> MergedConfig:
    """What the system collects; with `wait`, a config_url that did not answer is tried
    again every `retry` seconds until it does, install.auto turns up, or `wait` is over.
    `fetch` (tests) replaces the HTTP client."""
    from kairos.config.fetch import fetch_text
    failed: list[str] = []

    def fetcher(url: str) -> str:
        try:
            return (fetch or fetch_text)(url)
        except KairosError:
            failed.append(url)
            raise

    deadline = clock() + wait
    while True:
        failed.clear()
        merged = collect(root, fetcher=fetcher)
        if not failed or merged.get("install.auto") is True or clock() + retry > deadline:
            for url in failed:
                log.warning("config_url %s did not answer: installing without it", url)
            return merged
        log.info("config_url %s does not answer yet; trying again in %.0f s", failed[0], retry)
        sleep(retry)


def _write_collected(merged: MergedConfig, work: Path) -> Path | None:
    """The collected config as one file for /oem. config_url is left out: its content is
    merged in already, and the installed system must not depend on it answering at boot."""
    data = {k: v for k, v in merged.data.items() if k != "config_url"}
    if not data:
        return None
    path = work / CONFIG_NAME
    path.write_text("#cloud-config\n# collected by `kairos install` from: "
                    + ", ".join(merged.files) + "\n"
                    + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def load_config(req: Request, work: Path, *, wait: float = 0.0) -> InstallConfig:
    """The install config, validated (BadInput naming file, line and key)."""
    if req.cloud_config:
        name, path = _read_config_file(req.cloud_config, work)
        validate_cloud_config(path)
        return InstallConfig(_load_yaml(path, name), name, path)
    merged = collect_config(req.root, wait=wait)
    written = _write_collected(merged, work)
    if written is not None:
        validate_cloud_config(written)
    return InstallConfig(dict(merged.data), "collected", written)


# ------------------------------------------------------------------------------ options

def _get(block: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = block.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadInput(f"{where}.{key} is {value!r}", "see `kairos print-schema` for its type")
    return value


def _mib(block: Mapping[str, Any], key: str, where: str) -> int:
    """A size in MiB (`size`), 0 when absent."""
    value = _get(block, key, int, where)
    if value is not None and value < 0:
        raise BadInput(f"{where}.{key} is {value}", "sizes are whole MiB, 0 or more")
    return int(value or 0)


def _block(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = _get(data, key, dict, where)
    return value if value is not None else {}


def _safe_name(value: str, what: str, limit: int) -> str:
    if not value or len(value) > limit or not set(value) <= _NAME_CHARS:
        raise BadInput(f"{what} {value!r} is not a name of 1-{limit} letters, digits, "
                       "'_', '.' or '-'", "rename it")
    return value


def _extra_partition(entry: Any, index: int) -> ExtraPartition:
    where = f"install.extra-partitions[{index}]"
    if not isinstance(entry, dict):
        raise BadInput(f"{where} is not a map", "give name, size (MiB), fs and label")
    name = _get(entry, "name", str, where)
    if not name:
        raise BadInput(f"{where} has no name", "every extra partition needs a name")
    _safe_name(name, f"{where}.name", 36)
    if name.lower() in KAIROS_PARTS:
        raise BadInput(f"{where}.name {name!r} is one of Kairos's own partitions",
                       "use install.partitions to size those")
    fs = _get(entry, "fs", str, where) or EXTRA_DEFAULT_FS
    if fs not in EXTRA_FS:
        raise BadInput(f"{where}.fs {fs!r} is not supported", f"use one of {', '.join(EXTRA_FS)}")
    label = _get(entry, "label", str, where) or ""
    if label:
        _safe_name(label, f"{where}.label", 11 if fs == "vfat" else 16)
        if label.upper().startswith(RESERVED_LABELS):
            raise BadInput(f"{where}.label {label!r} looks like one the boot searches for",
                           "choose a label that does not start with COS_ or KAIROS_")
    return ExtraPartition(name, _mib(entry, "size", where), fs, label)


def layout_options(install_cfg: Mapping[str, Any]) -> LayoutOptions:
    """install.partitions, install.extra-partitions and the slot size reservations."""
    sizes: dict[str, int] = {}
    parts = _block(install_cfg, "partitions", "install")
    for name, entry in parts.items():
        where = f"install.partitions.{name}"
        if name not in KAIROS_PARTS or name == "bios" or not isinstance(entry, dict):
            raise BadInput(f"{where} is not a partition this layout can size",
                           "size oem, recovery, state, persistent or efi")
        fs = _get(entry, "fs", str, where)
        want_fs = "vfat" if name == "efi" else "ext4"
        if fs not in (None, want_fs):
            raise BadInput(f"{where}.fs {fs!r} is not supported", f"{name} is {want_fs} here")
        if entry.get("size") is not None:
            sizes[name] = _mib(entry, "size", where)
    extra = _get(install_cfg, "extra-partitions", list, "install") or []
    return LayoutOptions(
        sizes=sizes, extra=tuple(_extra_partition(e, i) for i, e in enumerate(extra)),
        system_mib=_mib(_block(install_cfg, "system", "install"), "size", "install.system"),
        passive_mib=_mib(_block(install_cfg, "passive", "install"), "size", "install.passive"),
        recovery_mib=_mib(_block(install_cfg, "recovery-system", "install"), "size",
                          "install.recovery-system"))


def _grub_value(key: str, value: Any) -> str:
    if isinstance(value, dict | list):
        raise BadInput(f"install.grub_options.{key} is not a single value",
                       "GRUB options are text, e.g. extra_cmdline: console=ttyS0")
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _grub_options(install_cfg: Mapping[str, Any], cli: Mapping[str, str]) -> dict[str, str]:
    """install.grub_options for /oem/grubenv, then --grub-option over them."""
    block = _block(install_cfg, "grub_options", "install")
    options = {str(k): _grub_value(str(k), v) for k, v in block.items()}
    options.update(cli)
    return options


SOURCE_KINDS = ("oci:", "docker:", "container:", "ocifile:", "dir:", "file:")


def _source_of(install_cfg: Mapping[str, Any], req: Request) -> str:
    """--source, else install.system.source (or .uri), install.source, install.image."""
    if req.source:
        return req.source
    system = _block(install_cfg, "system", "install")
    for value in (_get(system, "source", str, "install.system"),
                  _get(system, "uri", str, "install.system"),
                  _get(install_cfg, "source", str, "install")):
        if value:
            return str(value)
    image = _get(install_cfg, "image", str, "install")
    if image:  # older Kairos configs name a container image here, without a kind
        return image if image.startswith(SOURCE_KINDS) else f"oci:{image}"
    return ""


def _when_done(install_cfg: Mapping[str, Any], req: Request) -> tuple[bool, bool]:
    """(reboot, poweroff): a flag on the command line overrides both config keys."""
    if req.reboot or req.poweroff:
        return bool(req.reboot), bool(req.poweroff)
    reboot = _get(install_cfg, "reboot", bool, "install") is True
    poweroff = _get(install_cfg, "poweroff", bool, "install") is True
    if reboot and poweroff:
        raise BadInput("install.reboot and install.poweroff are both true",
                       "keep one of them (or pass --reboot or --poweroff)")
    return reboot, poweroff


def _check_keys(install_cfg: Mapping[str, Any]) -> None:
    for key, what in REFUSED_KEYS.items():
        if install_cfg.get(key) not in (None, False, [], ""):
            raise BadInput(f"install.{key} is set, but {what} is not supported yet",
                           f"remove install.{key}; nothing was written")
    for key in IGNORED_KEYS:
        if install_cfg.get(key) not in (None, False, [], ""):
            log.warning("install.%s is not supported yet: ignored", key)


def options(data: Mapping[str, Any], req: Request) -> Options:
    """The install's options: the command line first, then the config's install: block."""
    install_cfg = _block(data, "install", "the config")
    _check_keys(install_cfg)
    auto = _get(install_cfg, "auto", bool, "install") is True
    device = req.device or _get(install_cfg, "device", str, "install") or ""
    if not device and req.auto:
        device = "auto"  # Kairos: an automatic install without a device takes the largest
    if not device:
        raise BadInput("no device to install to", "use --device /dev/sdX (or auto, or a "
                       "/dev/disk/by-id/… link), or set install.device in the cloud-config")
    reboot, poweroff = _when_done(install_cfg, req)
    recovery = _block(install_cfg, "recovery-system", "install")
    insecure = req.insecure if req.insecure is not None else \
        bool(_get(install_cfg, "allow-insecure-registries", bool, "install"))
    return Options(
        device=device, source=_source_of(install_cfg, req),
        recovery_source=_get(recovery, "source", str, "install.recovery-system") or "",
        reboot=reboot, poweroff=poweroff,
        layout=layout_options(install_cfg),
        grub_options=_grub_options(install_cfg, req.grub_options), auto=auto,
        insecure=insecure)


# ------------------------------------------------------------------------------ images

@dataclass(frozen=True)
class Images:
    slot: Path
    recovery: Path | None
    source: str  # what the records say it came from
    digest: str = ""


def _live_images() -> Images:
    slot = LIVE_SLOT_IMAGE
    if not slot.is_file():
        raise BadInput(f"no slot image at {slot}: this is not a live system",
                       "boot the live ISO, or give --source file:PATH (a slot image), "
                       "oci:REF, ocifile:PATH or dir:PATH")
    recovery = slot.with_name("recovery.squashfs")
    return Images(slot, recovery if recovery.is_file() else None, f"file:{slot}")


def _tree_image(source: UpgradeSource, req: Request, insecure: bool, work: Path) -> Images:
    """oci:, ocifile:, dir: through the upgrade's fetchers, squashed as a build does."""
    from kairos.agent.fetch import FETCHERS, check_tree
    from kairos.agent.upgrade import write_slot
    from kairos.agent.upgradesource import Targets, UpgradeOptions
    from kairos.artifacts.bootid import ensure_boot_cfg
    opts = UpgradeOptions(source=source, auth_file=req.auth_file, insecure=insecure)
    phases = _quiet_phases()
    # Scratch stands in for COS_STATE and COS_PERSISTENT: the fetchers check its free space.
    image = FETCHERS[source.kind](opts, Targets(work, work, "live"), work, phases)
    assert image.tree is not None
    check_tree(image.tree, opts.arch)
    ensure_boot_cfg(image.tree)
    slot = work / "rootfs.squashfs"
    write_slot(image, slot, opts, phases)
    return Images(slot, None, str(source), image.digest)


def _quiet_phases() -> Any:
    """The upgrade's phase markers, only logged: an install has no power-cut test hooks."""
    from kairos.agent.phases import Phases

    class _Quiet(Phases):
        def mark(self, name: str) -> None:
            log.debug("fetch: %s", name)

    return _Quiet("", kmsg=None)


@contextlib.contextmanager
def _one_image(text: str, req: Request, insecure: bool) -> Iterator[Images]:
    source = parse_source(text)
    if source.kind == "file":
        from kairos.agent.fetch import check_slot_file
        from kairos.agent.upgradesource import device_arch
        check_slot_file(source.path, device_arch())
        yield Images(source.path, None, str(source))
        return
    with tempdir(prefix="kairos-install-src-", parent=req.scratch) as work:
        yield _tree_image(source, req, insecure, work)


@contextlib.contextmanager
def slot_images(opts: Options, req: Request) -> Iterator[Images]:
    """The slot (and recovery) image to install, however it is given."""
    with contextlib.ExitStack() as stack:
        if req.image_dir is not None:
            from kairos.artifacts.disk import find_images
            slot, recovery = find_images(req.image_dir)
            images = Images(slot, recovery, f"file:{slot.resolve()}")
        elif opts.source:
            images = stack.enter_context(_one_image(opts.source, req, opts.insecure))
        else:
            images = _live_images()
        if opts.recovery_source:
            rec = stack.enter_context(_one_image(opts.recovery_source, req, opts.insecure))
            images = dataclasses.replace(images, recovery=rec.slot)
        yield images


# ------------------------------------------------------------------------------ plan

def plan_text(target: devices.Target, plan: InstallPlan, images: Images, cfg: InstallConfig,
              opts: Options) -> str:
    """What a person reads before typing yes."""
    lines = [f"Install onto {target.disk.describe()}, found as {target.how}.",
             f"EVERYTHING ON {target.path} IS ERASED"
             + (f" (partitions {', '.join(target.disk.partitions)})."
                if target.disk.partitions else "."),
             f"  image:    {images.source} ({format_size(plan.slot_image.stat().st_size)})",
             f"  recovery: {_recovery_text(plan)}",
             f"  config:   {cfg.name + ' -> /oem/90_custom.yaml' if cfg.path else 'none'}",
             "  partitions:"]
    for part in plan.layout.partitions:
        spec = part.spec
        lines.append(f"    {part.number} {spec.name:<12} {spec.label or '-':<16} "
                     f"{spec.fs:<5} {format_size(part.size // 2**20 * 2**20)}")
    if plan.grub_env:
        lines.append("  GRUB env: " + ", ".join(f"{k}={v}" for k, v in plan.grub_env.items()))
    after = "reboot" if opts.reboot else "power off" if opts.poweroff else "nothing"
    lines.append(f"  then:     {after}")
    return "\n".join(lines)


def _recovery_text(plan: InstallPlan) -> str:
    return "the same image" if plan.recovery_image == plan.slot_image \
        else str(plan.recovery_image)


def confirm(text: str, device: Path, *, interactive: bool,
            ask: Callable[[str], str] | None = None) -> None:
    """Show the plan and wait for `yes`; refused when nobody can answer."""
    if not interactive:
        raise BadInput(f"refusing to erase {device} without confirmation",
                       "pass --yes (or set install.auto: true) to install without asking")
    sys.stderr.write(text + "\n")
    answer = (ask or _ask)(f"Erase {device} and install? Type 'yes' to continue: ")
    if answer.strip().lower() != "yes":
        raise BadInput("installation cancelled", "answer 'yes' or pass --yes")


def _ask(prompt: str) -> str:
    sys.stderr.write(prompt)
    sys.stderr.flush()
    return sys.stdin.readline()


def _stage(stage: str, root: Path, cfg: InstallConfig) -> None:
    """The image's own stage files and the install config's steps; a failing step is
    logged, never fatal (as for the upgrade's stages)."""
    from kairos.stages.runner import run_stage
    try:
        report = run_stage(stage, root=root, dirs=("/system/oem",), cmdline="",
                           extra_docs=[(cfg.name, cfg.data)] if cfg.data else [])
    except KairosError as exc:
        log.warning("stage %s: %s", stage, exc.message)
        return
    if report.failed:
        log.warning("stage %s: %d step(s) failed", stage, len(report.failed))


def _records_from(plan: InstallPlan, images: Images) -> InstallPlan:
    """Records naming the source as given (oci:…), not the scratch file it was made into."""
    if images.source.startswith("file:"):
        return plan
    roles = ["active", "passive"]
    if plan.recovery_image == plan.slot_image:
        roles.append("recovery")
    records = dict(plan.records)
    for role in roles:
        records[role] = dataclasses.replace(records[role], source=images.source,
                                            digest=images.digest or records[role].digest)
    return dataclasses.replace(plan, records=records)


# ------------------------------------------------------------------------------ run

def run_install(req: Request, *, interactive: bool | None = None,
                inventory: Callable[[], devices.Inventory] = devices.read_inventory,
                ask_confirmation: Callable[[str, Path], None] | None = None
                ) -> Result | None:
    """The whole install (module doc); None when --auto finds install.auto unset.
    `ask_confirmation(plan text, disk)` replaces the 'yes' question (interactive-install);
    it raises to stop before anything is written."""
    with tempdir(prefix="kairos-install-cfg-") as work:
        cfg = load_config(req, work, wait=AUTO_WAIT if req.auto and not req.cloud_config
                          else 0.0)
        opts = options(cfg.data, req)
        if req.auto and not opts.auto:
            log.info("install.auto is not true in the %s config: no automatic install",
                     cfg.name)
            return None
        target = devices.resolve_device(opts.device, inventory())  # refusals before images
        with slot_images(opts, req) as images:
            plan = _plan(target, images, cfg, opts, req)
            tty = sys.stdin.isatty() if interactive is None else interactive
            # install.auto means nobody is there to ask; a person at a terminal still is.
            if ask_confirmation is not None:
                ask_confirmation(plan_text(target, plan, images, cfg, opts), target.path)
            elif not (req.yes or req.auto or (opts.auto and not tty)):
                confirm(plan_text(target, plan, images, cfg, opts), target.path,
                        interactive=tty)
            _write(target, plan, cfg, req)
    return Result(str(target.path), target.how, plan, images.source,
                  "reboot" if opts.reboot else "poweroff" if opts.poweroff else "")


def _plan(target: devices.Target, images: Images, cfg: InstallConfig, opts: Options,
          req: Request) -> InstallPlan:
    slot_size = check_slot_image(images.slot, "slot image")
    rec_size = check_slot_image(images.recovery, "recovery image") if images.recovery \
        else slot_size
    need = minimum_size(slot_size, rec_size, opts.layout)
    devices.check_target(target.disk, need)
    log.info("installing to %s (%s); the layout needs %s", target.disk.describe(), target.how,
             format_size(-(-need // 2**20) * 2**20))
    cfg_options = GrubCfgOptions() if req.grub_timeout is None \
        else GrubCfgOptions(timeout=req.grub_timeout)
    plan = plan_for_device(target.path, images.slot, recovery_image=images.recovery,
                           cloud_configs=[cfg.path] if cfg.path else [],
                           grub_options=opts.grub_options, cfg_options=cfg_options,
                           layout=opts.layout)
    return _records_from(plan, images)


def _write(target: devices.Target, plan: InstallPlan, cfg: InstallConfig, req: Request) -> None:
    # A sentinel left by an earlier, stopped run must not stop this one (re-runs converge).
    (req.root / FAIL_SENTINEL).unlink(missing_ok=True)
    _stage("before-install", req.root, cfg)
    if (req.root / FAIL_SENTINEL).exists():
        raise KairosError(f"a before-install step asked to stop ({'/' + FAIL_SENTINEL}); "
                          "nothing was written", "see the before-install steps' output")
    install(plan, target.path)
    _stage("after-install", req.root, cfg)


def after_install(result: Result, run_action: Callable[[str], None] | None = None) -> None:
    """Reboot or power off when asked."""
    from kairos.agent.upgrade import reboot_after
    (run_action or reboot_after)(result.after)

