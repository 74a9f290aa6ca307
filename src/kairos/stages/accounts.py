"""/etc/passwd, /etc/group, /etc/shadow and /etc/gshadow edited directly.

No useradd/groupadd: this works on a scratch root without privileges and inside an
initramfs. Lines are kept as they are except the ones changed; files are rewritten
atomically (temporary file + rename) keeping their mode and owner, through safefs (no
untrusted link followed). No field may hold ':' or a line break (`check_row`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from kairos import safefs
from kairos.stages.context import Context, PluginError
from kairos.stages.sha512crypt import is_hashed_or_locked, sha512_crypt, verify

# Human accounts (systemd's UIDS-GIDS convention), and the system range searched downwards.
HUMAN_MIN, HUMAN_MAX = 1000, 60000
SYSTEM_MIN, SYSTEM_MAX = 100, 999

FIELDS = {"passwd": 7, "group": 4, "shadow": 9, "gshadow": 4}
NEW_MODES = {"passwd": 0o644, "group": 0o644, "shadow": 0o600, "gshadow": 0o600}


# Characters no field of an account file may hold: ':' separates fields and a line break
# starts a new entry, so either would let a value add a line such as a second uid-0 user.
FORBIDDEN = (":", "\n", "\r", "\0")


def check_row(kind: str, row: list[str]) -> None:
    """Refuse a row a field of which would change the file's structure (last line of
    defence: the users plugin and the schema refuse such values first)."""
    name = row[0] if row else ""
    if not name or name.startswith(("+", "-", "#")):  # +/- are NIS compat entries
        raise PluginError(f"{kind}: {name!r} is not a valid name; nothing written")
    for i, value in enumerate(row):
        if any(c in value for c in FORBIDDEN):
            raise PluginError(f"{kind} entry {name!r}: field {i + 1} ({value!r}) holds ':' or "
                              "a line break; nothing written")


@dataclass
class Table:
    """One colon-separated account file: rows keyed by their first field."""

    kind: str
    path: Path  # the host path, for messages
    lines: list[str] = field(default_factory=list)
    exists: bool = False
    changed: bool = False
    root: Path = Path("/")
    inside: str = ""  # the path inside root ("" = `path` itself, on the live root)

    @classmethod
    def load(cls, ctx: Context, kind: str, path: str | None = None) -> Table:
        inside = path or f"/etc/{kind}"
        table = cls(kind=kind, path=ctx.path(inside), root=ctx.root, inside=inside)
        data = safefs.read_bytes(ctx.root, inside)
        if data is not None:
            table.lines = data.decode("utf-8").splitlines()
            table.exists = True
        return table

    def _index(self, name: str) -> int:
        for i, line in enumerate(self.lines):
            if line.split(":", 1)[0] == name and not line.startswith("#"):
                return i
        return -1

    def get(self, name: str) -> list[str] | None:
        i = self._index(name)
        if i < 0:
            return None
        row = self.lines[i].split(":")
        return row + [""] * (FIELDS[self.kind] - len(row))

    def rows(self) -> list[list[str]]:
        return [line.split(":") for line in self.lines if line and not line.startswith("#")]

    def put(self, row: list[str]) -> None:
        row = [str(v) for v in row]
        check_row(self.kind, row)
        line = ":".join(row)
        i = self._index(row[0])
        if i < 0:
            self.lines.append(line)
            self.changed = True
        elif self.lines[i] != line:
            self.lines[i] = line
            self.changed = True

    def delete(self, name: str) -> bool:
        i = self._index(name)
        if i < 0:
            return False
        del self.lines[i]
        self.changed = True
        return True

    def ids(self) -> set[int]:
        """Numeric ids in use (third field of passwd and group)."""
        used = set()
        for row in self.rows():
            if len(row) > 2 and row[2].strip().lstrip("-").isdigit():
                used.add(int(row[2]))
        return used

    def save(self) -> None:
        if not self.changed:
            return
        text = "\n".join(self.lines) + ("\n" if self.lines else "")
        # atomic, keeping the file's mode and owner (shadow stays root:shadow 0640)
        safefs.write_atomic(self.root, self.inside or self.path, text.encode(), mode=None,
                            new_mode=NEW_MODES[self.kind], keep_owner=True,
                            create_parents=True)
        self.exists = True
        self.changed = False


def free_id(used: set[int], *, system: bool = False, prefer: int | None = None) -> int:
    """`prefer` when free, else the first free human id (or the highest free system id)."""
    if prefer is not None and prefer not in used:
        return prefer
    candidates = range(SYSTEM_MAX, SYSTEM_MIN - 1, -1) if system else range(HUMAN_MIN,
                                                                             HUMAN_MAX + 1)
    for candidate in candidates:
        if candidate not in used:
            return candidate
    raise PluginError("no free user or group id left")


def days_since_epoch() -> str:
    # 0 would mean "change at next login"; a board without RTC may think it is 1970
    return str(max(1, int(time.time()) // 86400))


def shadow_password(value: str, current: str | None) -> str:
    """The shadow field for `value`: hashes and locks as given, plain text hashed.

    A plain password that already matches the current hash keeps it, so re-applying the same
    config every boot leaves /etc/shadow unchanged."""
    if is_hashed_or_locked(value):
        return value
    if current and verify(value, current):
        return current
    return sha512_crypt(value)


def set_shadow(shadow: Table, name: str, password: str) -> None:
    """Set a user's shadow password, keeping its aging fields (and the change date when the
    password is the same)."""
    row = shadow.get(name)
    if row is None:
        shadow.put([name, password, days_since_epoch(), "", "", "", "", "", ""])
        return
    if row[1] != password:
        row[1] = password
        row[2] = days_since_epoch()
    shadow.put(row)


def group_add_member(group: Table, gshadow: Table | None, name: str, user: str) -> None:
    row = group.get(name)
    if row is None:
        return
    members = [m for m in row[3].split(",") if m]
    if user not in members:
        row[3] = ",".join([*members, user])
        group.put(row)
    if gshadow is not None and gshadow.exists:
        grow = gshadow.get(name) or [name, "!", "", ""]
        gmembers = [m for m in grow[3].split(",") if m]
        if user not in gmembers:
            grow[3] = ",".join([*gmembers, user])
        gshadow.put(grow)


def ensure_group(group: Table, gshadow: Table | None, name: str, *, gid: int | None = None,
                 system: bool = False, prefer: int | None = None) -> int:
    """The gid of group `name`, creating it (and its gshadow line) when missing."""
    row = group.get(name)
    if row is not None and row[2].isdigit():
        return int(row[2])
    new_gid = gid if gid is not None else free_id(group.ids(), system=system, prefer=prefer)
    group.put([name, "x", str(new_gid), ""])
    if gshadow is not None and gshadow.exists and gshadow.get(name) is None:
        gshadow.put([name, "!", "", ""])
    return new_gid


@dataclass
class Accounts:
    """The four account files of a root, loaded together and saved together."""

    passwd: Table
    group: Table
    shadow: Table
    gshadow: Table

    @classmethod
    def load(cls, ctx: Context) -> Accounts:
        return cls(*(Table.load(ctx, kind) for kind in ("passwd", "group", "shadow", "gshadow")))

    def save(self) -> None:
        for table in (self.group, self.gshadow, self.passwd, self.shadow):
            table.save()

    def lookup(self, owner: str) -> tuple[int, int]:
        """uid and gid for "user", "user:group", or numeric forms, read from this root."""
        user, _, grp = owner.partition(":")
        if user.isdigit():
            uid = int(user)
            row = next((r for r in self.passwd.rows() if len(r) > 3 and r[2] == user), None)
            gid = int(row[3]) if row is not None and row[3].isdigit() else uid
        else:
            row = self.passwd.get(user)
            if row is None:
                raise PluginError(f"user '{user}' does not exist in {self.passwd.path}")
            uid, gid = int(row[2]), int(row[3])
        if grp:
            if grp.isdigit():
                gid = int(grp)
            else:
                grow = self.group.get(grp)
                if grow is None:
                    raise PluginError(f"group '{grp}' does not exist in {self.group.path}")
                gid = int(grow[2])
        return uid, gid
