"""The step plugins, in yip's execution order, imported only when a step uses them.

Each plugin is one module exposing:
  KEYS: the step keys it owns,
  parse(step) -> its typed payload (raises PayloadError on a malformed payload),
  apply(step, ctx) -> None (raises on failure; the runner logs and goes on).
This table is the only thing imported at start-up, so early boot stays fast.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from kairos.stages.context import Context
    from kairos.stages.model import Step

# (plugin name, keys it owns) in execution order (yip's executor order).
ORDER: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dns", ("dns",)),
    ("downloads", ("downloads",)),
    ("git", ("git",)),
    ("ensure_entities", ("ensure_entities",)),
    ("directories", ("directories",)),
    ("files", ("files",)),
    ("commands", ("commands",)),
    ("delete_entities", ("delete_entities",)),
    ("hostname", ("hostname",)),
    ("sysctl", ("sysctl",)),
    ("users", ("users",)),
    ("authorized_keys", ("authorized_keys",)),
    ("modules", ("modules",)),
    ("timesyncd", ("timesyncd",)),
    ("systemctl", ("systemctl",)),
    ("environment", ("environment", "environment_file")),
    ("systemd_firstboot", ("systemd_firstboot",)),
    ("datasource", ("datasource",)),
    ("layout", ("layout",)),
    ("packages", ("package_pins", "packages")),
    ("unpack_images", ("unpack_images",)),
)

PLUGIN_KEYS: frozenset[str] = frozenset(k for _, keys in ORDER for k in keys)

# The fields each payload item may have, so a typo (`permsisions`) is reported, not silently
# dropped. Payloads not listed here are free-form maps (sysctl, environment, ...).
_ENTITY = frozenset({"path", "entity"})
ITEM_FIELDS: dict[str, frozenset[str]] = {
    "files": frozenset({"path", "content", "encoding", "permissions", "owner", "group",
                        "owner_string"}),
    "directories": frozenset({"path", "permissions", "owner", "group"}),
    "downloads": frozenset({"path", "url", "permissions", "owner", "group", "timeout",
                            "owner_string"}),
    "dns": frozenset({"nameservers", "search", "options", "path"}),
    "datasource": frozenset({"providers", "path", "userdata_name"}),
    "layout": frozenset({"device", "expand_partition", "add_partitions"}),
    "systemctl": frozenset({"enable", "disable", "start", "mask", "overrides"}),
    "git": frozenset({"url", "path", "branch", "branch_only", "auth"}),
    "ensure_entities": _ENTITY,
    "delete_entities": _ENTITY,
    "unpack_images": frozenset({"source", "target", "platform"}),
    "packages": frozenset({"install", "remove", "refresh", "upgrade"}),
}
USER_FIELDS = frozenset({"name", "passwd", "ssh_authorized_keys", "gecos", "homedir",
                         "no_create_home", "primary_group", "groups", "no_user_group", "system",
                         "no_log_init", "shell", "lock_passwd", "uid"})


def unknown_fields(key: str, value: object) -> list[str]:
    """`key[i]: unknown field 'x'` for fields a payload item does not have."""
    if key == "users":
        specs = value.items() if isinstance(value, dict) else (
            (str(u.get("name", i)), u) for i, u in enumerate(value)
            if isinstance(u, dict)) if isinstance(value, list) else []
        return [f"users.{name}: unknown field '{f}' is ignored"
                for name, spec in specs if isinstance(spec, dict)
                for f in spec if f not in USER_FIELDS]
    allowed = ITEM_FIELDS.get(key)
    if allowed is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [f"{key}{f'[{i}]' if isinstance(value, list) else ''}: unknown field '{f}' is "
            "ignored" for i, item in enumerate(items) if isinstance(item, dict)
            for f in item if f not in allowed]


class Plugin(Protocol):
    KEYS: tuple[str, ...]

    def parse(self, step: Step) -> object: ...

    def apply(self, step: Step, ctx: Context) -> None: ...


def load(name: str) -> ModuleType:
    return importlib.import_module(f"kairos.stages.plugins.{name}")


def plugins_for(step: Step) -> list[str]:
    """Names of the plugins a step uses, in execution order."""
    return [name for name, keys in ORDER if any(k in step.payloads for k in keys)]


def validate(step: Step) -> list[str]:
    """Parse every payload of a step; return one message per malformed payload."""
    problems: list[str] = []
    for name in plugins_for(step):
        try:
            load(name).parse(step)
        except Exception as exc:  # PayloadError mostly; any parse bug is reported the same way
            problems.append(f"{name}: {exc}")
    return problems
