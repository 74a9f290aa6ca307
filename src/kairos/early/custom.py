"""A user's own persistent and ephemeral paths: Kairos's `install.bind_mounts` and
`install.ephemeral_mounts`, checked as hostile input and merged with the layout's lists.

Where they come from (early/main.py reads them, this module only decides):
- `install.bind_mounts` / `install.ephemeral_mounts` of the collected cloud-config (the
  install config lands in /oem, so the installed system reads them at every boot, and a file
  added to /oem later works the same way);
- `CUSTOM_BIND_MOUNTS` / `CUSTOM_EPHEMERAL_MOUNTS` (space-separated) in
  /run/cos/custom-layout.env or /run/cos/cos-layout.env: what Kairos's installer writes (a
  `rootfs` stage in /oem/10_user_custom_mounts.yaml) and what its docs tell users to write
  to add paths after installing.

A bind path is kept on COS_PERSISTENT and bound over the path like the built-in persistent
paths; an ephemeral path gets a tmpfs overlay, lost at reboot. Every entry is checked here;
a bad one is skipped with one line for the boot log, never an error: a user's config must
not stop a boot.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

BIND_KEY = "bind_mounts"
EPHEMERAL_KEY = "ephemeral_mounts"
BIND_ENV = "CUSTOM_BIND_MOUNTS"
EPHEMERAL_ENV = "CUSTOM_EPHEMERAL_MOUNTS"
MAX_ENTRIES = 64  # per list: a runaway config must not make thousands of mounts
MAX_PATH = 1024
# Owned by the kernel, early-init or the boot itself: never a user's mount point.
RESERVED = ("/proc", "/sys", "/dev", "/run", "/tmp", "/oem")
# The image's own top-level trees: persisting one whole would keep the old image's files
# over every upgrade (list the subdirectories that need to persist instead).
SYSTEM_TREES = ("/bin", "/boot", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/sbin",
                "/system", "/usr", "/var")
# Characters that cannot appear in a mount point here: separators of the env lists and of
# overlayfs options (`lowerdir=a:b,upperdir=…`), and anything invisible in a log line.
_BAD_CHARS = frozenset(",:\\\"'")


@dataclass(frozen=True)
class Entry:
    value: Any  # as found: a string from a list or an env file, or anything YAML gave
    source: str  # where: "install.bind_mounts", "CUSTOM_BIND_MOUNTS", …


@dataclass(frozen=True)
class UserMounts:
    """Entries as found, before any check."""

    binds: tuple[Entry, ...] = ()
    ephemerals: tuple[Entry, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.binds or self.ephemerals)


@dataclass(frozen=True)
class Layout:
    """What the custom paths are checked against: the plan's built-in lists."""

    rw_paths: tuple[str, ...]
    persistent: tuple[str, ...]
    volumes: tuple[str, ...]  # mount points of the layout's volumes (/usr/local, …)
    state_target: str


@dataclass(frozen=True)
class CustomPaths:
    """The entries that get a mount, and one line per entry that does not."""

    binds: tuple[str, ...] = ()
    ephemerals: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # refused: the boot log's warnings
    merged: tuple[str, ...] = ()  # already covered by the layout: informational


def _entries(values: Any, source: str) -> list[Entry]:
    """A list from the config (a string: space-separated, as in the env file)."""
    if values is None:
        return []
    if isinstance(values, str):
        return [Entry(v, source) for v in values.split()]
    if isinstance(values, list | tuple):
        return [Entry(v, source) for v in values]
    return [Entry(values, source)]  # not a list: refused with its source named


def user_mounts(install: Mapping[str, Any], *envs: Mapping[str, str]) -> UserMounts:
    """The entries of the config's install: block, then of each env file."""
    binds = _entries(install.get(BIND_KEY), f"install.{BIND_KEY}")
    ephemerals = _entries(install.get(EPHEMERAL_KEY), f"install.{EPHEMERAL_KEY}")
    for env in envs:
        binds += _entries(env.get(BIND_ENV), BIND_ENV)
        ephemerals += _entries(env.get(EPHEMERAL_ENV), EPHEMERAL_ENV)
    return UserMounts(tuple(binds), tuple(ephemerals))


def within(path: str, top: str) -> bool:
    """path is top or below it."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 80 else text[:77] + "..."


def normalise(value: Any) -> tuple[str, str]:
    """(path, "") for a usable absolute path, or ("", why not). A trailing slash is
    dropped (Kairos's docs write `/opt/scratch/`); anything else must already be normal."""
    if not isinstance(value, str):
        return "", f"is not a path but {type(value).__name__}"
    if not value:
        return "", "is empty"
    if len(value) > MAX_PATH:
        return "", f"is longer than {MAX_PATH} characters"
    if not value.startswith("/"):
        return "", "is not an absolute path"
    if any(not c.isprintable() or c.isspace() or c in _BAD_CHARS for c in value):
        return "", "contains a space, control character, quote, ',', ':' or '\\'"
    path = value.rstrip("/") or "/"
    if path == "/":
        return "", "is the root directory"
    parts = path.split("/")[1:]
    if any(p in ("", ".", "..") for p in parts) or posixpath.normpath(path) != path:
        return "", "is not a normal path (no '//', '.' or '..' components)"
    return path, ""


def _reserved(path: str, layout: Layout, *, bind: bool) -> str:
    """Why `path` may not be a user's mount point at all ("" if it may)."""
    for top in RESERVED:
        if within(path, top):
            return f"is under {top}, which the boot owns"
    for target in (*layout.volumes, layout.state_target):
        if within(path, target):
            return f"is on the volume mounted at {target}, not the root's tree"
        if within(target, path):
            return f"would hide the volume mounted at {target}"
    if bind and path in SYSTEM_TREES:
        return ("would keep the image's own files over every upgrade; list the "
                "subdirectories that must persist instead")
    return ""


def _enclosing(path: str, planned: Mapping[str, str]) -> tuple[str, str]:
    """(kind, path) of the deepest planned mount strictly above `path`, or ("", "")."""
    best = ("", "")
    for other, kind in planned.items():
        if other != path and within(path, other) and len(other) > len(best[1]):
            best = (kind, other)
    return best


def _cap(entries: tuple[Entry, ...], what: str) -> tuple[tuple[Entry, ...], list[str]]:
    if len(entries) <= MAX_ENTRIES:
        return entries, []
    return entries[:MAX_ENTRIES], [f"{what}: {len(entries) - MAX_ENTRIES} entries past the "
                                   f"first {MAX_ENTRIES} skipped"]


def _checked(user: UserMounts, layout: Layout) -> tuple[list[tuple[str, str, str]], list[str]]:
    """([(path, "bind" or "ephemeral", label)], skipped lines) after the per-entry checks."""
    binds, skipped = _cap(user.binds, BIND_KEY)
    ephemerals, more = _cap(user.ephemerals, EPHEMERAL_KEY)
    skipped += more
    checked: list[tuple[str, str, str]] = []
    for kind, entries in (("bind", binds), ("ephemeral", ephemerals)):
        for entry in entries:
            label = f"{entry.source} entry {_shown(entry.value)}"
            path, why = normalise(entry.value)
            why = why or _reserved(path, layout, bind=kind == "bind")
            if why:
                skipped.append(f"{label} skipped: it {why}")
            else:
                checked.append((path, kind, label))
    return checked, skipped


class _Merge:
    """The layout's mounts by path, with the user's added one at a time, shallowest first
    (so that a path's parents are decided before it)."""

    def __init__(self, layout: Layout, dashed: Callable[[str], str], binds: set[str]) -> None:
        self.dashed = dashed
        self.binds = binds  # every bind entry: an ephemeral entry naming one gives way
        self.kinds: dict[str, str] = {p: "ephemeral" for p in layout.rw_paths}
        self.kinds.update({p: "persistent" for p in layout.persistent})
        self.kinds.update({p: "volume" for p in layout.volumes})
        # immucore names stores (and overlay dirs) by dashes: /var/lib-x and /var/lib/x meet
        self.names = {"persistent": {dashed(p): p for p in layout.persistent},
                      "ephemeral": {dashed(p): p for p in layout.rw_paths}}

    def decide(self, path: str, want: str, label: str) -> tuple[str, str]:
        """("mount", ""), ("merged", line) or ("skipped", line) for one entry; `want` is
        "persistent" or "ephemeral"."""
        own = self.kinds.get(path)
        if want == "ephemeral" and path in self.binds:
            return "skipped", f"{label} skipped: it is in {BIND_KEY} too; it stays persistent"
        if own == want:
            return "merged", f"{label}: already {'a' if want == 'persistent' else 'an'} " \
                f"{want} path"
        if own == "persistent":
            return "skipped", (f"{label} skipped: it is a persistent path of the layout; it "
                               "stays persistent")
        parent_kind, parent = _enclosing(path, self.kinds)
        if parent_kind == want:
            return "merged", f"{label}: already {want}, under {parent}"
        name = self.dashed(path)
        clash = self.names[want].get(name, path)
        if clash != path:
            return "skipped", f"{label} skipped: its store name {name} is the one of {clash}"
        self.names[want][name] = path
        self.kinds[path] = want
        return "mount", ""


def custom_paths(user: UserMounts, layout: Layout,
                 dashed: Callable[[str], str]) -> CustomPaths:
    """Check every entry and merge it with the layout: a bind may go over an overlay (/srv
    made persistent), an ephemeral path inside a persistent one (~/.cache made ephemeral).
    `dashed` names a path's store (plan.dashed)."""
    checked, skipped = _checked(user, layout)
    merge = _Merge(layout, dashed, {p for p, k, _ in checked if k == "bind"})
    mounts: dict[str, list[str]] = {"bind": [], "ephemeral": []}
    merged: list[str] = []
    seen: set[tuple[str, str]] = set()
    for path, kind, label in sorted(checked, key=lambda c: (c[0].count("/"), c[0])):
        if (path, kind) in seen:
            continue  # the same entry twice (or from two sources): once is enough
        seen.add((path, kind))
        verdict, line = merge.decide(path, "persistent" if kind == "bind" else "ephemeral",
                                     label)
        if verdict == "mount":
            mounts[kind].append(path)
        else:
            (merged if verdict == "merged" else skipped).append(line)
    return CustomPaths(tuple(mounts["bind"]), tuple(mounts["ephemeral"]), tuple(skipped),
                       tuple(merged))


def mentions(texts: Iterable[str]) -> bool:
    """Whether any of these config texts could hold the install keys: the full collector
    (and its imports) is only worth loading at boot when one does."""
    return any(BIND_KEY in t or EPHEMERAL_KEY in t for t in texts)
