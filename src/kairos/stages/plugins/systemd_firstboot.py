"""`systemd_firstboot`: run systemd-firstboot with --key=value for each entry."""

from __future__ import annotations

from kairos.run import run
from kairos.stages.context import Context, PluginError
from kairos.stages.fields import as_str_map
from kairos.stages.model import Step

KEYS = ("systemd_firstboot",)


def parse(step: Step) -> dict[str, str]:
    return as_str_map(step.payloads.get("systemd_firstboot"), "systemd_firstboot")


def arguments(values: dict[str, str]) -> list[str]:
    args = [f"--{k.lower()}" if v == "true" else f"--{k.lower()}={v}"
            for k, v in values.items()]
    return sorted(args)


def apply(step: Step, ctx: Context) -> None:
    args = arguments(parse(step))
    if not args:
        return
    from kairos.stages.plugins.systemctl import openrc_only
    if openrc_only(ctx):
        ctx.logger.warning("systemd_firstboot: skipped (%s): this system runs OpenRC, not "
                           "systemd; set these with the hostname, files or commands plugins",
                           " ".join(args))
        return
    argv = ["systemd-firstboot", *([] if ctx.live else [f"--root={ctx.root}"]), *args]
    result = run(argv, check=False)
    if result.returncode != 0:
        raise PluginError(f"systemd-firstboot failed: {result.stderr.strip()}")
