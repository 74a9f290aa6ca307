"""`ensure_entities`: add or update passwd/shadow/group/gshadow entries (entities YAML)."""

from __future__ import annotations

from functools import partial

from kairos.stages.context import Context, Failures
from kairos.stages.entities import ensure, load_entity, parse_entities
from kairos.stages.model import Step

KEYS = ("ensure_entities",)


def parse(step: Step) -> list[tuple[str, str]]:
    return parse_entities(step.payloads.get("ensure_entities"), "ensure_entities")


def _ensure(ctx: Context, path: str, text: str) -> None:
    ensure(ctx, load_entity(ctx, path, text))


def apply(step: Step, ctx: Context) -> None:
    failures = Failures("ensure_entities", ctx.logger)
    for i, (path, text) in enumerate(parse(step)):
        failures.attempt(f"entity {i}", partial(_ensure, ctx, path, text))
    failures.raise_if_any()
