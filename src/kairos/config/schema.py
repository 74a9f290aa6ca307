"""The JSON Schema shipped with the package (schema.json) and facts read from it."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any


@functools.cache
def schema_text() -> str:
    """schema.json as shipped (what `kairos print-schema` prints)."""
    return resources.files("kairos.config").joinpath("schema.json").read_text(encoding="utf-8")


@functools.cache
def _schema() -> dict[str, Any]:
    data = json.loads(schema_text())
    assert isinstance(data, dict)
    return data


def load_schema() -> dict[str, Any]:
    """A fresh copy of the root (cloud-config) schema."""
    return json.loads(schema_text())  # type: ignore[no-any-return]


def stage_document_schema() -> dict[str, Any]:
    """The schema of a stage (yip) file: `name` and `stages` only, no header needed."""
    schema = load_schema()
    doc = dict(schema["$defs"]["stage_document"])
    doc["$defs"] = schema["$defs"]
    doc["$schema"] = schema["$schema"]
    return doc


@functools.cache
def top_level_keys() -> frozenset[str]:
    """Every top-level key the schema knows (the kernel command line accepts only these)."""
    return frozenset(_schema()["properties"])
