"""`ensure_entities`: add or update passwd/shadow/group/gshadow entries (entities YAML)."""

from __future__ import annotations

from kairos.stages.context import Context
from kairos.stages.entities import apply_each, ensure, parse_entities
from kairos.stages.model import Step

KEYS = ("ensure_entities",)


def parse(step: Step) -> list[tuple[str, str]]:
    return parse_entities(step.payloads.get("ensure_entities"), "ensure_entities")


def apply(step: Step, ctx: Context) -> None:
    apply_each(ctx, "ensure_entities", parse(step), ensure)
