"""`hostname`: set the host name (templated: {{ trunc 4 .MachineID }}, .UUID, .Random).

Writes /etc/hostname and puts the name on the 127.0.0.1 line of /etc/hosts; the running
kernel's host name is changed only when acting on the live system.
"""

from __future__ import annotations

import uuid

from kairos.run import run
from kairos.stages import sysinfo
from kairos.stages.context import Context, Failures
from kairos.stages.fields import as_str
from kairos.stages.fsutil import read_text, write_file
from kairos.stages.model import Step

KEYS = ("hostname",)
LOCALHOST = "127.0.0.1"


def parse(step: Step) -> str:
    return as_str(step.payloads.get("hostname"), "hostname").strip()


def render_name(ctx: Context, template: str) -> str:
    mid = sysinfo.machine_id(ctx.root)
    data = {"UUID": str(uuid.uuid4()), "Random": sysinfo.random_string(), "MachineID": mid,
            "ProtectedID": sysinfo.protected_id(mid) if mid else ""}
    return ctx.render(template, data).strip()


def hosts_text(current: str, name: str) -> str:
    """/etc/hosts with the 127.0.0.1 line naming `name` (added when missing)."""
    lines = current.splitlines()
    line = f"{LOCALHOST} localhost {name}"
    replaced = False
    for i, text in enumerate(lines):
        fields = text.split()
        if fields and fields[0] == LOCALHOST:
            lines[i] = line
            replaced = True
    if not replaced:
        lines.insert(0, line)
    return "\n".join(lines) + "\n"


def apply(step: Step, ctx: Context) -> None:
    template = parse(step)
    if not template:
        return
    name = render_name(ctx, template)
    failures = Failures("hostname", ctx.logger)

    def write_hostname() -> None:
        write_file(ctx.root, "/etc/hostname", f"{name}\n".encode())

    def write_hosts() -> None:
        current = read_text(ctx.root, "/etc/hosts")
        write_file(ctx.root, "/etc/hosts", hosts_text(current, name).encode())

    failures.attempt("/etc/hostname", write_hostname)
    failures.attempt("/etc/hosts", write_hosts)
    if ctx.live:
        result = run(["hostname", name], check=False)
        if result.returncode != 0:
            failures.add(f"cannot set the running host name: {result.stderr.strip()}")
    ctx.logger.info("hostname: %s", name)
    failures.raise_if_any()
