"""Step filters, evaluated before any plugin of the step runs.

Each returns None when the step may run, or the reason it is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from kairos.stages import sysinfo
from kairos.stages.context import Context
from kairos.stages.model import IF_FILES_CHECKS, Conditions

SYSTEMCTL_PATHS = ("/sbin/systemctl", "/bin/systemctl", "/usr/sbin/systemctl",
                   "/usr/bin/systemctl")
OPENRC_PATHS = ("/sbin/openrc", "/bin/openrc", "/usr/sbin/openrc", "/usr/bin/openrc")


def _search(pattern: str, text: str, what: str) -> str | None:
    try:
        matched = re.search(pattern, text) is not None
    except re.error as exc:
        return f"invalid {what} pattern '{pattern}': {exc}"
    return None if matched else f"{what} '{text}' does not match '{pattern}'"


def check_node(cond: Conditions, ctx: Context) -> str | None:
    if not cond.node:
        return None
    return _search(cond.node, sysinfo.node_hostname(ctx.root), "hostname")


def check_if(cond: Conditions, ctx: Context) -> str | None:
    if not cond.if_:
        return None
    result = ctx.sh(ctx.render(cond.if_))
    if result.returncode == 0:
        return None
    return f"'if' exited {result.returncode}: {cond.if_.strip()}"


def check_os(cond: Conditions, ctx: Context) -> str | None:
    if not cond.only_os:
        return None
    name = sysinfo.os_name(ctx.root)
    if not name:
        return f"only_os '{cond.only_os}': the system's OS name is unknown (no os-release)"
    return _search(cond.only_os, name, "OS name")


def check_os_version(cond: Conditions, ctx: Context) -> str | None:
    if not cond.only_os_version:
        return None
    version = sysinfo.os_version(ctx.root)
    if not version:
        return (f"only_os_version '{cond.only_os_version}': the system's OS version is "
                "unknown (no VERSION_ID in os-release)")
    return _search(cond.only_os_version, version, "OS version")


def check_arch(cond: Conditions, ctx: Context) -> str | None:
    if not cond.only_arch:
        return None
    return _search(cond.only_arch, ctx.arch, "architecture")


def service_manager(ctx: Context) -> str:
    """"systemd", "openrc", "both" or "" from the binaries present in the root."""
    systemd = any(ctx.path(p).exists() for p in SYSTEMCTL_PATHS)
    openrc = any(ctx.path(p).exists() for p in OPENRC_PATHS)
    if systemd and openrc:
        return "both"
    return "systemd" if systemd else "openrc" if openrc else ""


def check_service_manager(cond: Conditions, ctx: Context) -> str | None:
    wanted = cond.only_service_manager.strip().lower()
    if not wanted:
        return None
    if wanted not in ("systemd", "openrc"):
        return f"service manager '{cond.only_service_manager}' is not supported"
    found = service_manager(ctx)
    if found == "both":
        return "both systemd and openrc are installed; cannot filter on the service manager"
    if found != wanted:
        return f"service manager is {found or 'unknown'}, not {wanted}"
    return None


def check_if_files(cond: Conditions, ctx: Context) -> str | None:
    for check, paths in cond.if_files.items():
        if check not in IF_FILES_CHECKS:
            return f"unknown if_files check '{check}' (use any, all or none)"
        if not paths:
            continue
        present = [p for p in paths if ctx.path(p).exists()]
        if check == "all" and len(present) != len(paths):
            missing = next(p for p in paths if p not in present)
            return f"if_files.all: {missing} is missing"
        if check == "any" and not present:
            return "if_files.any: none of the files exist"
        if check == "none" and present:
            return f"if_files.none: {present[0]} exists"
    return None


# yip evaluates `if` second; it runs last here so that a shell is only spawned for steps the
# cheap filters let through (the outcome is the same: a step runs only if all pass).
CHECKS: tuple[Callable[[Conditions, Context], str | None], ...] = (
    check_node, check_os, check_os_version, check_arch, check_service_manager, check_if_files,
    check_if,
)


def skip_reason(cond: Conditions, ctx: Context) -> str | None:
    """The first failing filter's reason, or None when the step should run."""
    for check in CHECKS:
        reason = check(cond, ctx)
        if reason:
            return reason
    return None
