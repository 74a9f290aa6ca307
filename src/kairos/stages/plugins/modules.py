"""`modules`: load kernel modules ("name [params...]") that are not loaded yet."""

from __future__ import annotations

from kairos.run import run
from kairos.stages.context import Context, Failures
from kairos.stages.fields import as_str_list
from kairos.stages.model import Step

KEYS = ("modules",)


def parse(step: Step) -> list[str]:
    return [m for m in as_str_list(step.payloads.get("modules"), "modules") if m.strip()]


def loaded_modules(ctx: Context) -> set[str]:
    try:
        text = ctx.path("/proc/modules").read_text()
    except OSError:
        return set()
    return {line.split(" ", 1)[0] for line in text.splitlines() if line.strip()}


def apply(step: Step, ctx: Context) -> None:
    failures = Failures("modules", ctx.logger)
    loaded = loaded_modules(ctx)
    for spec in parse(step):
        name, *params = spec.split()
        if name in loaded or name.replace("-", "_") in loaded:
            continue
        # below another root, modules come from that root's /lib/modules
        argv = ["modprobe", *([] if ctx.live else ["-d", str(ctx.root)]), name, *params]
        result = run(argv, check=False)
        if result.returncode != 0:
            failures.add(f"modprobe {name}: {result.stderr.strip() or 'failed'}")
        else:
            ctx.logger.info("modules: loaded %s", name)
    failures.raise_if_any()
