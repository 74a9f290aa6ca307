"""`commands`: run shell scripts (each as ["/bin/sh", "-c", script]) in order.

A failing command is reported and the next one still runs, as yip does.
"""

from __future__ import annotations

from kairos.stages.context import Context, Failures
from kairos.stages.fields import as_str_list
from kairos.stages.model import Step

KEYS = ("commands",)


def parse(step: Step) -> list[str]:
    return as_str_list(step.payloads.get("commands"), "commands")


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def apply(step: Step, ctx: Context) -> None:
    failures = Failures("commands", ctx.logger)
    for script in parse(step):
        rendered = ctx.render(script)
        first = rendered.strip().splitlines()[0] if rendered.strip() else ""
        result = ctx.sh(rendered)
        if result.stdout.strip():
            ctx.logger.debug("output of '%s': %s", first, result.stdout.strip())
        if result.returncode != 0:
            output = _tail(result.stderr) or _tail(result.stdout)
            failures.add(f"'{first}' exited {result.returncode}"
                         + (f": {output}" if output else ""))
    failures.raise_if_any()
