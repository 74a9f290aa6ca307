"""`dns`: write resolv.conf (nameservers, search domains, options)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kairos.stages.context import Context
from kairos.stages.fields import as_map, as_str, as_str_list
from kairos.stages.fsutil import write_file
from kairos.stages.model import Step

KEYS = ("dns",)


@dataclass
class DNS:
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    path: str = "/etc/resolv.conf"


def parse(step: Step) -> DNS:
    raw = as_map(step.payloads.get("dns"), "dns")
    return DNS(nameservers=as_str_list(raw.get("nameservers"), "dns.nameservers"),
               search=as_str_list(raw.get("search"), "dns.search"),
               options=as_str_list(raw.get("options"), "dns.options"),
               path=as_str(raw.get("path"), "dns.path") or "/etc/resolv.conf")


def render(dns: DNS) -> str:
    lines = []
    search = " ".join(dns.search)
    if search.strip() and search.strip() != ".":
        lines.append(f"search {search}")
    lines += [f"nameserver {ns}" for ns in dns.nameservers]
    options = " ".join(dns.options)
    if options.strip():
        lines.append(f"options {options}")
    return "".join(line + "\n" for line in lines)


def apply(step: Step, ctx: Context) -> None:
    dns = parse(step)
    if not dns.nameservers:  # as yip: nothing to write without a nameserver
        return
    write_file(ctx.root, dns.path, render(dns).encode())
    ctx.logger.info("dns: wrote %s", dns.path)
