"""Facts about the target system that conditionals and templates use, read below `root`."""

from __future__ import annotations

import hashlib
import hmac
import platform
import secrets
import socket
import string
from pathlib import Path
from typing import Any

from kairos.envfile import parse_env
from kairos.stages.fsutil import resolve_in_root

# Architecture names as Go's GOARCH spells them: stage files say `only_arch: amd64`.
GO_ARCH = {
    "x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
    "i386": "386", "i486": "386", "i586": "386", "i686": "386",
    "armv5l": "arm", "armv6l": "arm", "armv7l": "arm", "armv8l": "arm",
    "riscv64": "riscv64", "ppc64le": "ppc64le", "ppc64": "ppc64", "s390x": "s390x",
    "loongarch64": "loong64", "mips64": "mips64",
}


def go_arch(machine: str | None = None) -> str:
    machine = machine or platform.machine()
    return GO_ARCH.get(machine, machine)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def read_in_root(root: Path, path: str) -> str:
    """A file of the target system; symlinks are followed inside `root`."""
    return read_text(root / path if root == Path("/") else resolve_in_root(root, path))


def os_release(root: Path) -> dict[str, str]:
    for rel in ("etc/os-release", "usr/lib/os-release"):
        text = read_in_root(root, rel)
        if text:
            return parse_env(text)
    return {}


def os_name(root: Path) -> str:
    """What yip matches `only_os` against: PRETTY_NAME (e.g. "Debian GNU/Linux 12 (bookworm)")."""
    info = os_release(root)
    return info.get("PRETTY_NAME") or info.get("NAME", "")


def os_version(root: Path) -> str:
    return os_release(root).get("VERSION_ID", "")


def machine_id(root: Path) -> str:
    for rel in ("var/lib/dbus/machine-id", "etc/machine-id"):
        value = read_in_root(root, rel).strip()
        if value:
            return value
    return ""


def protected_id(mid: str, app: str = "yip") -> str:
    """An app-specific id derived from the machine id (HMAC-SHA256, as machineid.ProtectedID)."""
    return hmac.new(mid.encode(), app.encode(), hashlib.sha256).hexdigest()


def random_string(n: int = 32) -> str:
    alphabet = string.digits + string.ascii_lowercase
    return "".join(secrets.choice(alphabet) for _ in range(n))


def node_hostname(root: Path) -> str:
    if root == Path("/"):
        return socket.gethostname()
    return read_in_root(root, "etc/hostname").strip()


def _dmi(root: Path, name: str) -> str:
    return read_in_root(root, f"sys/class/dmi/id/{name}").strip()


def template_values(root: Path) -> dict[str, Any]:
    """The `.Values` tree templates see (a subset of yip's sysinfo, same key names)."""
    info = os_release(root)
    mid = machine_id(root)
    uname = platform.uname()
    return {
        "node": {"hostname": node_hostname(root), "machineid": mid},
        "os": {"name": info.get("PRETTY_NAME", ""), "vendor": info.get("ID", ""),
               "version": info.get("VERSION_ID", ""), "architecture": go_arch()},
        "kernel": {"release": uname.release, "version": uname.version,
                   "architecture": uname.machine},
        "product": {k: _dmi(root, "sys_vendor" if k == "vendor" else f"product_{k}")
                    for k in ("name", "vendor", "version", "serial", "uuid", "sku")},
        "board": {k: _dmi(root, f"board_{k}") for k in ("name", "vendor", "version", "serial")},
        "Random": random_string(),
        "ProtectedID": protected_id(mid) if mid else "",
    }
