"""The provider's systemd units: written under /run/systemd/system at every boot (so a
changed config or a new image takes effect at the next boot), compared with what is there on
a later apply in the same boot (`kairos run-stage reconcile`, `kairos provider apply`).

A unit whose text changed is restarted; one whose text is the same is only started (a no-op
when it runs, a restart when it failed); a unit of ours that is no longer wanted (a role
change, Kubernetes disabled, Traefik disabled) is stopped and removed. Each unit's text
carries the hash of the files its process reads, so a renewed certificate or a changed
config file changes the text too.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kairos import safefs
from kairos.provider.components import UNIT_DIR, Component
from kairos.provider.render import UNIT_MARKER, unit_text
from kairos.run import run

log = logging.getLogger("kairos.provider")

PREFIX = "kairos-"
Systemctl = Callable[..., object]


@dataclass(frozen=True)
class UnitDiff:
    write: tuple[str, ...] = ()  # new or changed
    same: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()  # ours, no longer wanted


@dataclass
class UnitChanges:
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)


def diff_units(current: Mapping[str, str], wanted: Mapping[str, str]) -> UnitDiff:
    return UnitDiff(write=tuple(n for n, t in wanted.items() if current.get(n) != t),
                    same=tuple(n for n, t in wanted.items() if current.get(n) == t),
                    remove=tuple(sorted(n for n in current if n not in wanted)))


def inputs_hash(root: Path, paths: Sequence[str]) -> str:
    """One hash of the content of every file a process reads ("missing" for an absent one)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            data = safefs.read_bytes(root, path)
        except (OSError, safefs.UnsafePath):
            data = None
        digest.update(path.encode() + b"\0")
        digest.update(hashlib.sha256(data).digest() if data is not None else b"missing")
    return digest.hexdigest()[:32]


def render_unit(root: Path, component: Component) -> str:
    return unit_text(description=component.name, argv=component.argv, env=component.env,
                     after=component.after, notify=component.notify,
                     service=component.service, conflicts=component.conflicts,
                     inputs_hash=inputs_hash(root, component.inputs))


def current_units(root: Path) -> dict[str, str]:
    """Our units in /run/systemd/system (found by the marker line, never by name alone)."""
    found: dict[str, str] = {}
    directory = root / UNIT_DIR.lstrip("/")
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return found
    for name in names:
        if not (name.startswith(PREFIX) and name.endswith(".service")):
            continue
        try:
            data = safefs.read_bytes(root, f"{UNIT_DIR}/{name}", follow="none")
        except (OSError, safefs.UnsafePath):
            continue
        text = (data or b"").decode(errors="replace")
        if UNIT_MARKER in text:
            found[name] = text
    return found


def systemctl(*args: str) -> None:
    run(["systemctl", *args])


def write_units(root: Path, wanted: Mapping[str, str], *,
                ctl: Systemctl = systemctl) -> tuple[UnitDiff, UnitChanges]:
    """Bring /run/systemd/system to `wanted`: stop and remove the stale units, write the
    changed ones, reload systemd when anything changed. Starting is start_units'."""
    diff = diff_units(current_units(root), wanted)
    changes = UnitChanges()
    if diff.remove:
        ctl("stop", *diff.remove)
        for name in diff.remove:
            (root / UNIT_DIR.lstrip("/") / name).unlink(missing_ok=True)
        changes.removed = list(diff.remove)
    for name in diff.write:
        safefs.write_atomic(root, f"{UNIT_DIR}/{name}", wanted[name].encode(), mode=0o644,
                            create_parents=True)
    changes.written = list(diff.write)
    if diff.write or diff.remove:
        ctl("daemon-reload")
    return diff, changes


def start_units(names: Sequence[str], diff: UnitDiff, changes: UnitChanges, *,
                wait: bool = False, ctl: Systemctl = systemctl) -> None:
    """Restart the changed units of `names`, start the others (in the order given)."""
    block = [] if wait else ["--no-block"]
    restart = [n for n in names if n in diff.write]
    start = [n for n in names if n not in diff.write]
    if restart:
        ctl("restart", *block, *restart)
        changes.restarted += restart
    if start:
        ctl("start", *block, *start)
        changes.started += start


def remove_all(root: Path, *, ctl: Systemctl = systemctl) -> list[str]:
    """Stop and remove every unit of ours (Kubernetes is off in the config)."""
    _, changes = write_units(root, {}, ctl=ctl)
    return changes.removed
