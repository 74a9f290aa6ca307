"""`delete_entities`: remove passwd/shadow/group/gshadow entries (entities YAML)."""

from __future__ import annotations

from kairos.stages.context import Context
from kairos.stages.entities import apply_each, delete, parse_entities
from kairos.stages.model import Step

KEYS = ("delete_entities",)


def parse(step: Step) -> list[tuple[str, str]]:
    return parse_entities(step.payloads.get("delete_entities"), "delete_entities")


def apply(step: Step, ctx: Context) -> None:
    apply_each(ctx, "delete_entities", parse(step), delete)
