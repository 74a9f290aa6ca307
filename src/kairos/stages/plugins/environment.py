"""`environment` + `environment_file`: merge KEY="value" lines into an env file
(default /etc/environment), keeping keys already there."""

from __future__ import annotations

from dataclasses import dataclass, field

from kairos.envfile import parse_env, render_env
from kairos.stages.context import Context
from kairos.stages.fields import as_str, as_str_map
from kairos.stages.fsutil import read_text, write_file
from kairos.stages.model import Step

KEYS = ("environment", "environment_file")
DEFAULT_FILE = "/etc/environment"


@dataclass
class Environment:
    values: dict[str, str] = field(default_factory=dict)
    path: str = DEFAULT_FILE


def parse(step: Step) -> Environment:
    return Environment(values=as_str_map(step.payloads.get("environment"), "environment"),
                       path=as_str(step.payloads.get("environment_file"), "environment_file")
                       or DEFAULT_FILE)


def apply(step: Step, ctx: Context) -> None:
    spec = parse(step)
    if not spec.values:
        return
    env = parse_env(read_text(ctx.root, spec.path))
    env.update({k: ctx.render(v) for k, v in spec.values.items()})
    write_file(ctx.root, spec.path, render_env(dict(sorted(env.items()))).encode(), 0o644)
    ctx.logger.info("environment: %d keys in %s", len(spec.values), spec.path)
