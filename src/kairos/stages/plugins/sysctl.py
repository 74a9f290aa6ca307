"""`sysctl`: write kernel parameters under /proc/sys (net.core.rmem_max -> net/core/rmem_max)."""

from __future__ import annotations

from functools import partial

from kairos.stages.context import Context, Failures
from kairos.stages.fields import as_str_map
from kairos.stages.model import Step

KEYS = ("sysctl",)


def parse(step: Step) -> dict[str, str]:
    return as_str_map(step.payloads.get("sysctl"), "sysctl")


def write(ctx: Context, key: str, value: str) -> None:
    target = ctx.path("/proc/sys/" + key.strip().replace(".", "/"))
    if not ctx.live:
        # a scratch root has no /proc/sys: create the tree so the values can be checked
        target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(value)


def apply(step: Step, ctx: Context) -> None:
    failures = Failures("sysctl", ctx.logger)
    for key, value in sorted(parse(step).items()):
        failures.attempt(f"{key}={value}", partial(write, ctx, key, value))
    failures.raise_if_any()
