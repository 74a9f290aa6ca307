"""`systemctl`: enable, disable, mask, start units and write drop-in overrides.

On a running systemd (root "/" and /run/systemd/system present) `systemctl` does the work.
Otherwise (early boot before systemd, a chroot, a scratch root) the links systemctl would make
are made directly: <target>.wants/<unit> from [Install] WantedBy/RequiredBy, Alias links,
mask links to /dev/null. `start` needs a running system and is skipped with a note otherwise.
On a system with OpenRC and no systemd the step is skipped with a warning saying so.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

from kairos.run import Result, run
from kairos.stages.context import Context, Failures, PluginError
from kairos.stages.fields import PayloadError, as_map, as_map_list, as_str, as_str_list
from kairos.stages.fsutil import make_dirs, write_file
from kairos.stages.model import Step

KEYS = ("systemctl",)
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/usr/lib/systemd/system", "/lib/systemd/system")
UNIT_SUFFIXES = (".service", ".socket", ".target", ".timer", ".path", ".mount", ".automount",
                 ".swap", ".slice", ".scope", ".device")
ETC = "/etc/systemd/system"
INSTALL_LINKS = {"WantedBy": ".wants", "RequiredBy": ".requires", "UpheldBy": ".upholds"}


@dataclass
class Override:
    service: str
    content: str
    name: str = "override-yip.conf"


@dataclass
class Systemctl:
    enable: list[str] = field(default_factory=list)
    disable: list[str] = field(default_factory=list)
    mask: list[str] = field(default_factory=list)
    start: list[str] = field(default_factory=list)
    overrides: list[Override] = field(default_factory=list)


def parse(step: Step) -> Systemctl:
    raw = as_map(step.payloads.get("systemctl"), "systemctl")
    out = Systemctl(enable=as_str_list(raw.get("enable"), "systemctl.enable"),
                    disable=as_str_list(raw.get("disable"), "systemctl.disable"),
                    mask=as_str_list(raw.get("mask"), "systemctl.mask"),
                    start=as_str_list(raw.get("start"), "systemctl.start"))
    for i, item in enumerate(as_map_list(raw.get("overrides"), "systemctl.overrides")):
        w = f"systemctl.overrides[{i}]"
        service = as_str(item.get("service"), f"{w}.service")
        if not service:
            raise PayloadError(f"{w}: an override needs a service")
        out.overrides.append(Override(service=service,
                                      content=as_str(item.get("content"), f"{w}.content"),
                                      name=as_str(item.get("name"), f"{w}.name")
                                      or "override-yip.conf"))
    return out


def unit_name(name: str) -> str:
    name = name.strip()
    return name if name.endswith(UNIT_SUFFIXES) else f"{name}.service"


def systemd_running(ctx: Context) -> bool:
    return ctx.live and Path("/run/systemd/system").is_dir()


def find_unit(ctx: Context, unit: str) -> tuple[str, Path] | None:
    """(path inside root, host path) of a unit file, or of its template for an instance."""
    names = [unit]
    prefix, at, rest = unit.partition("@")
    if at and not rest.startswith("."):
        names.append(f"{prefix}@{rest[rest.rfind('.'):]}")
    for name in names:
        for directory in UNIT_DIRS:
            inside = f"{directory}/{name}"
            host = ctx.path(inside, follow_last=False)
            if host.is_symlink() and os.readlink(host) == "/dev/null":
                raise PluginError(f"unit {unit} is masked")
            if host.exists():
                return inside, host
    return None


def install_section(path: Path) -> dict[str, list[str]]:
    """The [Install] keys of a unit file (multi-valued, space separated)."""
    values: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Install" and "=" in line:
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).extend(value.split())
    return values


def link(ctx: Context, inside: str, target: str) -> None:
    make_dirs(ctx.root, str(PurePosixPath(inside).parent))
    host = ctx.path(inside, follow_last=False)
    if host.is_symlink() or host.exists():
        if host.is_symlink() and os.readlink(host) == target:
            return
        if not host.is_symlink():
            raise PluginError(f"{inside} exists and is not a symlink")
        host.unlink()
    host.symlink_to(target)


def enable_offline(ctx: Context, unit: str, seen: set[str] | None = None) -> None:
    seen = seen if seen is not None else set()
    if unit in seen:
        return
    seen.add(unit)
    found = find_unit(ctx, unit)
    if found is None:
        raise PluginError(f"unit file {unit} does not exist")
    inside, host = found
    install = install_section(host)
    if "@" in unit and unit.split("@", 1)[1].startswith(".") and install.get("DefaultInstance"):
        unit = unit.replace("@.", f"@{install['DefaultInstance'][0]}.", 1)
    made = False
    for key, suffix in INSTALL_LINKS.items():
        for target in install.get(key, []):
            link(ctx, f"{ETC}/{target}{suffix}/{unit}", inside)
            made = True
    for alias in install.get("Alias", []):
        link(ctx, f"{ETC}/{alias}", inside)
        made = True
    for also in install.get("Also", []):
        enable_offline(ctx, unit_name(also), seen)
        made = True
    if not made:
        ctx.logger.info("systemctl: %s has no [Install] section; nothing to enable", unit)


def disable_offline(ctx: Context, unit: str) -> None:
    etc = ctx.path(ETC)
    if not etc.is_dir():
        return
    for dirpath, _dirs, files in os.walk(etc):
        if Path(dirpath) == etc:
            continue
        for name in files:
            entry = Path(dirpath, name)
            if name == unit and entry.is_symlink():
                entry.unlink()
    found = find_unit(ctx, unit)
    if found is not None:
        install = install_section(found[1])
        for alias in install.get("Alias", []):
            alias_link = ctx.path(f"{ETC}/{alias}", follow_last=False)
            if alias_link.is_symlink() and os.readlink(alias_link) == found[0]:
                alias_link.unlink()


def mask_offline(ctx: Context, unit: str) -> None:
    link(ctx, f"{ETC}/{unit}", "/dev/null")


def write_override(ctx: Context, o: Override) -> None:
    if not o.content:
        ctx.logger.warning("systemctl: empty override for %s skipped", o.service)
        return
    name = o.name if o.name.endswith(".conf") else f"{o.name}.conf"
    write_file(ctx.root, f"{ETC}/{unit_name(o.service)}.d/{name}", o.content.encode(), 0o644)


def openrc_only(ctx: Context) -> bool:
    """OpenRC installed and no systemctl: systemd units and links would do nothing here."""
    from kairos.stages.conditionals import service_manager
    return service_manager(ctx) == "openrc"


def _requested(spec: Systemctl) -> str:
    parts = [f"{verb} {', '.join(getattr(spec, verb))}"
             for verb in ("enable", "disable", "mask", "start") if getattr(spec, verb)]
    if spec.overrides:
        parts.append(f"overrides for {', '.join(o.service for o in spec.overrides)}")
    return "; ".join(parts) or "nothing"


def apply(step: Step, ctx: Context) -> None:
    spec = parse(step)
    if openrc_only(ctx):
        ctx.logger.warning(
            "systemctl: skipped (%s): this system runs OpenRC, not systemd; use `rc-update "
            "add NAME default` and `rc-service NAME start` in commands, or only_service_manager "
            "to keep such steps apart", _requested(spec))
        return
    failures = Failures("systemctl", ctx.logger)
    for override in spec.overrides:  # first, so a reload and a start below see them
        failures.attempt(f"override {override.service}", partial(write_override, ctx, override))
    if systemd_running(ctx):
        apply_live(spec, failures)
    else:
        apply_offline(spec, ctx, failures)
    failures.raise_if_any()


def apply_offline(spec: Systemctl, ctx: Context, failures: Failures) -> None:
    offline = {"enable": enable_offline, "disable": disable_offline, "mask": mask_offline}
    for verb in ("enable", "disable", "mask"):
        for name in getattr(spec, verb):
            unit = unit_name(name)
            failures.attempt(f"{verb} {unit}", partial(offline[verb], ctx, unit))
    for name in spec.start:
        ctx.logger.info("systemctl: %s not started: systemd is not running here", unit_name(name))


Call = Callable[[list[str]], Result]


def _systemctl(argv: list[str]) -> Result:
    return run(["systemctl", *argv], check=False)


def apply_live(spec: Systemctl, failures: Failures, call: Call = _systemctl) -> None:
    """Links without the implicit reload, one process per verb, and a daemon-reload only
    when systemd holds something stale.

    `systemctl enable` reloads systemd by default: over a second under emulation, with every
    other boot job waiting. Enabling only makes links for the next boot, and systemd loads a
    unit it has never seen when it is started. A reload is needed only for what it already
    loaded: overrides, masks and disables, and units to start whose files changed on disk.
    """
    for verb in ("enable", "disable", "mask"):
        units = [unit_name(name) for name in getattr(spec, verb)]
        if units:
            _each(call, failures, ["--no-reload", verb], units)
    starts = [unit_name(name) for name in spec.start]
    stale = bool(spec.overrides or spec.disable or spec.mask)
    if not stale and starts:
        shown = call(["show", "--property=NeedDaemonReload", "--value", *starts])
        stale = shown.returncode != 0 or "yes" in shown.stdout.split()
    if stale:
        _each(call, failures, ["daemon-reload"], [])
    if starts:
        _each(call, failures, ["start"], starts)


def _each(call: Call, failures: Failures, verb: list[str], units: list[str]) -> None:
    """One call for all units; when it fails, one per unit, so each failure is named and the
    other units are still done."""
    result = call([*verb, *units])
    if result.returncode == 0:
        return
    if len(units) < 2:
        failures.add(f"systemctl {' '.join(verb)} {' '.join(units)}: {result.stderr.strip()}")
        return
    for unit in units:
        one = call([*verb, unit])
        if one.returncode != 0:
            failures.add(f"systemctl {' '.join(verb)} {unit}: {one.stderr.strip()}")
