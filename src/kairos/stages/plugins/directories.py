"""`directories`: create directories with mode and owner (existing ones get them too)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from kairos.safefs import UnsafePath
from kairos.stages.context import Context, Failures, PluginError
from kairos.stages.fields import PayloadError, as_int, as_map_list, as_mode, as_str
from kairos.stages.fsutil import DIR_MODE, make_dirs, set_dir_attrs
from kairos.stages.model import Step

KEYS = ("directories",)


@dataclass
class Directory:
    path: str
    permissions: int | None = None
    owner: int | None = None
    group: int | None = None


def parse(step: Step) -> list[Directory]:
    out = []
    for i, raw in enumerate(as_map_list(step.payloads.get("directories"), "directories")):
        where = f"directories[{i}]"
        path = as_str(raw.get("path"), f"{where}.path")
        if not path:
            raise PayloadError(f"{where}: a directory needs a path")
        out.append(Directory(path=path, permissions=as_mode(raw.get("permissions"),
                                                           f"{where}.permissions"),
                             owner=as_int(raw.get("owner"), f"{where}.owner"),
                             group=as_int(raw.get("group"), f"{where}.group")))
    return out


def ensure_directory(ctx: Context, d: Directory) -> None:
    # through descriptors: a link planted on the way (in a user's home) is refused, not
    # followed to a directory we would then chmod or give away
    try:
        # only what the step states is changed on an existing directory
        set_dir_attrs(ctx.root, d.path, d.permissions, d.owner, d.group)
        return
    except FileNotFoundError:
        pass
    except UnsafePath as exc:
        raise PluginError(f"{d.path} exists and is not a directory we may change "
                          f"({exc.message})") from None
    make_dirs(ctx.root, d.path, DIR_MODE if d.permissions is None else d.permissions,
              d.owner, d.group)


def apply(step: Step, ctx: Context) -> None:
    failures = Failures("directories", ctx.logger)
    for d in parse(step):
        failures.attempt(d.path, partial(ensure_directory, ctx, d))
    failures.raise_if_any()
