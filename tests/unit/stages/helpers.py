"""Builders shared by the stage tests."""

from __future__ import annotations

from typing import Any

from kairos.stages.model import Step, parse_step


def make_step(**raw: Any) -> Step:
    """A step from keyword arguments; `if_` stands for the `if` key."""
    if "if_" in raw:
        raw["if"] = raw.pop("if_")
    step, warnings = parse_step(raw, "test.yaml", "test.yaml: step")
    assert not warnings, warnings
    return step
