"""`timesyncd`: set [Time] keys in /etc/systemd/timesyncd.conf.d/10-yip.conf."""

from __future__ import annotations

from kairos.stages.context import Context
from kairos.stages.fields import as_str_map
from kairos.stages.fsutil import read_text, write_file
from kairos.stages.model import Step

KEYS = ("timesyncd",)
CONF = "/etc/systemd/timesyncd.conf.d/10-yip.conf"


def parse(step: Step) -> dict[str, str]:
    return as_str_map(step.payloads.get("timesyncd"), "timesyncd")


def merge_time_section(text: str, values: dict[str, str]) -> str:
    """`text` (an INI file) with `values` set in its [Time] section, other lines kept."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "[Time]"), -1)
    if start < 0:
        if lines and lines[-1].strip():
            lines.append("")
        lines.append("[Time]")
        start = len(lines) - 1
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("[")),
               len(lines))
    pending = dict(values)
    for i in range(start + 1, end):
        key = lines[i].split("=", 1)[0].strip()
        if "=" in lines[i] and key in pending:
            lines[i] = f"{key}={pending.pop(key)}"
    insert = [f"{k}={v}" for k, v in pending.items()]
    lines[end:end] = insert
    return "\n".join(lines) + "\n"


def apply(step: Step, ctx: Context) -> None:
    values = parse(step)
    if not values:
        return
    from kairos.stages.plugins.systemctl import openrc_only
    if openrc_only(ctx):
        ctx.logger.warning("timesyncd: skipped (%s): this system runs OpenRC, where no "
                           "systemd-timesyncd reads it; configure its NTP client with files or "
                           "commands", " ".join(f"{k}={v}" for k, v in values.items()))
        return
    current = read_text(ctx.root, CONF)
    write_file(ctx.root, CONF, merge_time_section(current, values).encode())
    ctx.logger.info("timesyncd: wrote %s", CONF)
