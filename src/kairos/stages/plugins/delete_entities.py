"""`delete_entities`: remove passwd/shadow/group/gshadow entries (entities YAML)."""

from __future__ import annotations

from functools import partial

from kairos.stages.context import Context, Failures
from kairos.stages.entities import delete, load_entity, parse_entities
from kairos.stages.model import Step

KEYS = ("delete_entities",)


def parse(step: Step) -> list[tuple[str, str]]:
    return parse_entities(step.payloads.get("delete_entities"), "delete_entities")


def _delete(ctx: Context, path: str, text: str) -> None:
    delete(ctx, load_entity(ctx, path, text))


def apply(step: Step, ctx: Context) -> None:
    failures = Failures("delete_entities", ctx.logger)
    for i, (path, text) in enumerate(parse(step)):
        failures.attempt(f"entity {i}", partial(_delete, ctx, path, text))
    failures.raise_if_any()
