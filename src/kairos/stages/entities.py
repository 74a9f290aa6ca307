"""Account entities in the YAML form yip's `ensure_entities`/`delete_entities` take
(the mudler/entities format): kind user|shadow|group|gshadow plus that file's fields."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import yaml

from kairos.stages.accounts import (
    Accounts,
    Table,
    days_since_epoch,
    free_id,
    shadow_password,
)
from kairos.stages.context import Context, Failures, PluginError
from kairos.stages.fields import PayloadError, as_int, as_map_list, as_str

KIND_FILES = {"user": "passwd", "shadow": "shadow", "group": "group", "gshadow": "gshadow"}
NAME_FIELDS = {"user": "username", "shadow": "username", "group": "group_name",
               "gshadow": "name"}


@dataclass
class Entity:
    kind: str
    path: str     # the account file inside the root ("" = the kind's default)
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return as_str(self.data.get(NAME_FIELDS[self.kind]), NAME_FIELDS[self.kind])


def parse_entities(value: Any, key: str) -> list[tuple[str, str]]:
    """(path, entity YAML text) pairs; the YAML is parsed after templating, at apply time."""
    out = []
    for i, raw in enumerate(as_map_list(value, key)):
        text = raw.get("entity")
        if isinstance(text, dict):  # an inline mapping instead of a YAML string
            text = yaml.safe_dump(text)
        entity = as_str(text, f"{key}[{i}].entity")
        if not entity.strip():
            raise PayloadError(f"{key}[{i}]: an entity is needed")
        out.append((as_str(raw.get("path"), f"{key}[{i}].path"), entity))
    return out


def load_entity(ctx: Context, path: str, text: str) -> Entity:
    try:
        data = yaml.safe_load(ctx.render(text))
    except yaml.YAMLError as exc:
        raise PluginError(f"entity is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PluginError("entity must be a mapping with a 'kind'")
    kind = as_str(data.get("kind"), "kind")
    if kind not in KIND_FILES:
        raise PluginError(f"entity kind '{kind}' is not one of user, shadow, group, gshadow")
    entity = Entity(kind=kind, path=path, data=data)
    if not entity.name:
        raise PluginError(f"{kind} entity needs '{NAME_FIELDS[kind]}'")
    return entity


def table_for(ctx: Context, entity: Entity) -> Table:
    return Table.load(ctx, KIND_FILES[entity.kind], entity.path or None)


def _s(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    return "" if value is None else str(value)


def ensure(ctx: Context, entity: Entity) -> None:
    table = table_for(ctx, entity)
    d, name = entity.data, entity.name
    current = table.get(name)
    if entity.kind == "user":
        uid = as_int(d.get("uid"), "uid", -1)
        assert uid is not None
        if uid < 0:
            uid = int(current[2]) if current else free_id(table.ids())
        gid = as_int(d.get("gid"), "gid", 0)
        if d.get("group"):
            gid = Accounts.load(ctx).lookup(f"{uid}:{d['group']}")[1]
        table.put([name, _s(d, "password") or "x", str(uid), str(gid),
                   _s(d, "info") or "Created by entities", _s(d, "homedir"), _s(d, "shell")])
    elif entity.kind == "group":
        gid = as_int(d.get("gid"), "gid")
        members = [m for m in _s(d, "users").split(",") if m]
        if current is not None:
            members = list(dict.fromkeys([m for m in current[3].split(",") if m] + members))
            password = _s(d, "password") or current[1]
            gid_text = str(gid) if gid is not None and gid >= 0 else current[2]
        else:
            password = _s(d, "password") or "x"
            gid_text = str(gid if gid is not None and gid >= 0 else free_id(table.ids()))
        table.put([name, password, gid_text, ",".join(members)])
    elif entity.kind == "shadow":
        last = _s(d, "last_changed")
        password = shadow_password(_s(d, "password"), current[1] if current else None)
        if last == "now":
            last = current[2] if current and current[1] == password else days_since_epoch()
        table.put([name, password, last] + [_s(d, k) for k in (
            "minimum_changed", "maximum_changed", "warn", "inactive", "expire", "reserved")])
    else:
        table.put([name, _s(d, "password"), _s(d, "administrators"), _s(d, "members")])
    table.save()


def delete(ctx: Context, entity: Entity) -> None:
    table = table_for(ctx, entity)
    if table.delete(entity.name):
        table.save()


def _load_then(ctx: Context, path: str, text: str,
               action: Callable[[Context, Entity], None]) -> None:
    action(ctx, load_entity(ctx, path, text))


def apply_each(ctx: Context, key: str, entries: list[tuple[str, str]],
               action: Callable[[Context, Entity], None]) -> None:
    """`action` (ensure or delete) on every entity of a step; one bad entity does not stop
    the others, and all failures are reported together under the plugin's `key`."""
    failures = Failures(key, ctx.logger)
    for i, (path, text) in enumerate(entries):
        failures.attempt(f"entity {i}", partial(_load_then, ctx, path, text, action))
    failures.raise_if_any()
