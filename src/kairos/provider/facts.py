"""Facts about the machine the plan needs: names, addresses, paths. Read here, once, so the
plan itself (plan.py) is a pure function of config and facts."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kairos import safefs
from kairos.provider.token import random_token
from kairos.run import run

log = logging.getLogger("kairos.provider")

NODE_TOKEN = "/etc/kubernetes/node-token"  # a server's generated join secret (like k3s's)
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")  # Debian's package, then the upstream path
RESOLVED_RESOLV = "/run/systemd/resolve/resolv.conf"


@dataclass(frozen=True)
class Facts:
    hostname: str = "localhost"
    machine_id: str = ""
    # (interface, IPv4) in the kernel's order; the default route's interface first
    addresses: tuple[tuple[str, str], ...] = ()
    default_iface: str = ""
    resolv_conf: str = "/etc/resolv.conf"
    cni_bin_dir: str = CNI_BIN_DIRS[0]
    systemd: bool = True
    stored_token: str = field(default="", repr=False)  # a server's token from an earlier boot
    new_token: str = field(default="", repr=False)  # a fresh one, used when none is stored

    def ips_of(self, iface: str) -> list[str]:
        return [ip for name, ip in self.addresses if name == iface]


def parse_addresses(text: str) -> list[tuple[str, str]]:
    """(interface, IPv4) pairs of `ip -j -4 addr show` output, loopback left out."""
    try:
        data = json.loads(text or "[]")
    except ValueError:
        return []
    out: list[tuple[str, str]] = []
    for link in data if isinstance(data, list) else []:
        if not isinstance(link, dict) or "LOOPBACK" in (link.get("flags") or []):
            continue
        for addr in link.get("addr_info") or []:
            if isinstance(addr, dict) and addr.get("family") == "inet" and addr.get("local"):
                out.append((str(link.get("ifname", "")), str(addr["local"])))
    return out


def parse_default_iface(text: str) -> str:
    """The interface of the first default route of `ip -j -4 route show default`."""
    try:
        data: Any = json.loads(text or "[]")
    except ValueError:
        return ""
    for route in data if isinstance(data, list) else []:
        if isinstance(route, dict) and route.get("dev"):
            return str(route["dev"])
    return ""


def _read(root: Path, path: str) -> str:
    try:
        data = safefs.read_bytes(root, path)
    except (OSError, safefs.UnsafePath):
        return ""
    return data.decode(errors="replace") if data is not None else ""


def _ip_json(args: list[str]) -> str:
    if shutil.which("ip") is None:
        return ""
    res = run(["ip", "-j", "-4", *args], check=False)
    return res.stdout if res.returncode == 0 else ""


def gather(root: Path = Path("/")) -> Facts:
    """The facts of the machine at `root` (addresses only when root is this machine)."""
    live = root.resolve() == Path("/")
    hostname = (_read(root, "proc/sys/kernel/hostname").strip() if live else "") \
        or _read(root, "etc/hostname").strip() or "localhost"
    addresses = parse_addresses(_ip_json(["addr", "show"])) if live else []
    default = parse_default_iface(_ip_json(["route", "show", "default"])) if live else ""
    addresses.sort(key=lambda pair: pair[0] != default)  # stable: keeps the kernel's order
    resolv = RESOLVED_RESOLV if (root / RESOLVED_RESOLV.lstrip("/")).is_file() \
        else "/etc/resolv.conf"
    cni = next((d for d in CNI_BIN_DIRS if (root / d.lstrip("/") / "bridge").exists()),
               CNI_BIN_DIRS[0])
    stored = _read(root, NODE_TOKEN).strip()
    return Facts(hostname=hostname.lower(), machine_id=_read(root, "etc/machine-id").strip(),
                 addresses=tuple(addresses), default_iface=default, resolv_conf=resolv,
                 cni_bin_dir=cni, systemd=(root / "run/systemd/system").is_dir(),
                 stored_token=stored, new_token="" if stored else random_token())
