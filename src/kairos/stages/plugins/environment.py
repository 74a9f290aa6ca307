"""`environment` + `environment_file`: merge KEY="value" lines into an env file
(default /etc/environment), keeping keys already there."""

from __future__ import annotations

from dataclasses import dataclass, field

from kairos.stages.context import Context
from kairos.stages.fields import as_str, as_str_map
from kairos.stages.fsutil import make_dirs, write_file
from kairos.stages.model import Step

KEYS = ("environment", "environment_file")
DEFAULT_FILE = "/etc/environment"
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$", "`": "`",
             "!": "!"}


@dataclass
class Environment:
    values: dict[str, str] = field(default_factory=dict)
    path: str = DEFAULT_FILE


def parse(step: Step) -> Environment:
    return Environment(values=as_str_map(step.payloads.get("environment"), "environment"),
                       path=as_str(step.payloads.get("environment_file"), "environment_file")
                       or DEFAULT_FILE)


def _unquote_double(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(_UNESCAPE.get(text[i + 1], "\\" + text[i + 1]))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_env(text: str) -> dict[str, str]:
    """An env file as godotenv/sh read it: [export ]KEY=value, "double", 'single' quotes."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == '"' and value.rstrip().endswith('"'):
            value = _unquote_double(value[1:-1])
        elif len(value) >= 2 and value[0] == "'" and value.endswith("'"):
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        env[key] = value
    return env


def quote(value: str) -> str:
    """A double-quoted value that both sh and godotenv read back unchanged."""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
               .replace("`", "\\`").replace("\n", "\\n").replace("\r", "\\r"))
    return f'"{escaped}"'


def render_env(env: dict[str, str]) -> str:
    return "".join(f"{k}={quote(v)}\n" for k, v in sorted(env.items()))


def apply(step: Step, ctx: Context) -> None:
    spec = parse(step)
    if not spec.values:
        return
    target = ctx.path(spec.path)
    make_dirs(target.parent)
    env = parse_env(target.read_text()) if target.exists() else {}
    env.update({k: ctx.render(v) for k, v in spec.values.items()})
    write_file(target, render_env(env).encode(), 0o644)
    ctx.logger.info("environment: %d keys in %s", len(spec.values), spec.path)
