"""`users`: create or update accounts by editing the root's account files directly.

The step form is a mapping name -> {passwd, groups, shell, ...}; Kairos's list form
[{name, ...}] is accepted too. Applied in name order so ids come out the same every boot
(/etc is rebuilt each boot on a device): an explicit uid, else the one the user already has,
else the owner of an existing home directory, else the first free id from 1000.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass, field

from kairos import safefs
from kairos.envfile import parse_env
from kairos.errors import KairosError
from kairos.safefs import UnsafePath
from kairos.stages import fsutil
from kairos.stages.accounts import (
    Accounts,
    ensure_group,
    free_id,
    group_add_member,
    set_shadow,
    shadow_password,
)
from kairos.stages.cloudinit import user_entries
from kairos.stages.context import Context, Failures, PluginError
from kairos.stages.fields import PayloadError, as_bool, as_int, as_str, as_str_list
from kairos.stages.model import Step
from kairos.stages.sha512crypt import is_hashed_or_locked

KEYS = ("users",)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class User:
    name: str
    passwd: str | None = None
    ssh_authorized_keys: list[str] = field(default_factory=list)
    gecos: str | None = None
    homedir: str = ""
    no_create_home: bool = False
    primary_group: str = ""
    groups: list[str] = field(default_factory=list)
    no_user_group: bool = False
    system: bool = False
    shell: str = ""
    lock_passwd: bool = False
    uid: int | None = None


# What account files cannot hold: ':' separates fields, a line break starts a new entry (a
# `shell: "/bin/sh\nevil::0:0::/:/bin/sh"` would add a uid-0 user).
_BREAKS = ("\n", "\r", "\0")
_NOT_IN_NAMES = (":", ",", "/", *_BREAKS)


def check_name(value: str, where: str) -> None:
    """A user or group name: no separator of any account file (',' splits member lists),
    no '/' or dot-only name (it becomes /home/NAME), no leading '-' or '+'."""
    if (not value or any(c in value for c in _NOT_IN_NAMES) or any(c.isspace() for c in value)
            or value.startswith(("-", "+")) or value in (".", "..")):
        raise PayloadError(f"{where}: {value!r} is not a valid name (use letters, digits, "
                           "'_', '.' and '-')")


def check_text(value: str, where: str, *, colon: bool = False) -> None:
    """A free-text field: never a line break; ':' only where `colon` allows it."""
    if any(c in value for c in _BREAKS) or (not colon and ":" in value):
        bad = "a line break" if any(c in value for c in _BREAKS) else "':'"
        raise PayloadError(f"{where}: {value!r} holds {bad}, which /etc/passwd and /etc/shadow "
                           "cannot store; remove it")


def check_user(user: User) -> None:
    w = f"users.{user.name}"
    check_name(user.name, f"{w}.name")
    if user.primary_group:
        check_name(user.primary_group, f"{w}.primary_group")
    for group in user.groups:
        check_name(group, f"{w}.groups")
    check_text(user.shell, f"{w}.shell")
    check_text(user.homedir, f"{w}.homedir")
    check_text(user.gecos or "", f"{w}.gecos", colon=True)  # colons become spaces
    if user.passwd is not None:
        # a plain password is hashed (any ':' vanishes); a hash or lock is stored as given
        check_text(user.passwd, f"{w}.passwd", colon=not is_hashed_or_locked(user.passwd))


def parse_user(name: str, raw: dict[str, object]) -> User:
    w = f"users.{name}"
    groups = raw.get("groups")
    if isinstance(groups, str):  # cloud-init also allows "a,b"
        groups = [g.strip() for g in groups.split(",") if g.strip()]
    passwd = raw.get("passwd")
    user = User(
        name=name,
        passwd=None if passwd is None else as_str(passwd, f"{w}.passwd"),
        ssh_authorized_keys=as_str_list(raw.get("ssh_authorized_keys"),
                                        f"{w}.ssh_authorized_keys"),
        gecos=None if raw.get("gecos") is None else as_str(raw.get("gecos"), f"{w}.gecos"),
        homedir=as_str(raw.get("homedir"), f"{w}.homedir"),
        no_create_home=as_bool(raw.get("no_create_home"), f"{w}.no_create_home"),
        primary_group=as_str(raw.get("primary_group"), f"{w}.primary_group"),
        groups=as_str_list(groups, f"{w}.groups"),
        no_user_group=as_bool(raw.get("no_user_group"), f"{w}.no_user_group"),
        system=as_bool(raw.get("system"), f"{w}.system"),
        shell=as_str(raw.get("shell"), f"{w}.shell"),
        lock_passwd=as_bool(raw.get("lock_passwd"), f"{w}.lock_passwd"),
        uid=as_int(raw.get("uid"), f"{w}.uid"),
    )
    check_user(user)
    return user


def parse(step: Step) -> list[User]:
    users = []
    for entry in user_entries(step.payloads.get("users"), "users"):
        name = str(entry["name"])
        check_name(name, f"users.{name!r}")
        users.append(parse_user(name, entry))
    return sorted(users, key=lambda u: u.name)


def useradd_defaults(ctx: Context) -> tuple[str, str]:
    """(home base, shell) from the root's /etc/default/useradd, as yip reads them."""
    env = parse_env(fsutil.read_text(ctx.root, "/etc/default/useradd"))
    return env.get("HOME") or "/home", env.get("SHELL") or "/bin/sh"


def pick_uid(ctx: Context, acc: Accounts, user: User, current: list[str] | None,
             home: str) -> int:
    used = acc.passwd.ids()
    if user.uid is not None:
        return user.uid
    if current is not None and current[2].isdigit():
        return int(current[2])
    owner = home_owner(ctx, home)
    if owner is not None and owner != 0 and owner not in used:
        return owner  # a persistent /home remembers the uid
    return free_id(used, system=user.system)


def home_owner(ctx: Context, home: str) -> int | None:
    """The uid owning directory `home`, None when there is none we may look at (missing, or
    behind a link its user planted)."""
    try:
        with safefs.open_dir(ctx.root, home) as fd:
            return os.fstat(fd).st_uid
    except (OSError, UnsafePath):
        return None


def primary_gid(acc: Accounts, user: User, uid: int) -> int:
    if user.primary_group:
        return ensure_group(acc.group, acc.gshadow, user.primary_group, system=user.system)
    if user.no_user_group:
        row = acc.group.get("users")
        return int(row[2]) if row is not None else 100
    return ensure_group(acc.group, acc.gshadow, user.name, system=user.system, prefer=uid)


def copy_skel(src_fd: int, dst_fd: int, uid: int, gid: int) -> None:
    """Copy the entries of directory `src_fd` into `dst_fd`, owned by the user. Everything
    is made relative to descriptors with O_NOFOLLOW/O_EXCL: nothing is followed or written
    through, whatever appears in the new home meanwhile."""
    for entry in os.scandir(src_fd):
        name = entry.name
        st = entry.stat(follow_symlinks=False)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=dst_fd)
            sub_src = os.open(name, DIR_FLAGS, dir_fd=src_fd)
            try:
                sub_dst = os.open(name, DIR_FLAGS, dir_fd=dst_fd)
                try:
                    copy_skel(sub_src, sub_dst, uid, gid)
                    os.fchmod(sub_dst, mode)
                    safefs.fchown(sub_dst, uid, gid)
                finally:
                    os.close(sub_dst)
            finally:
                os.close(sub_src)
        elif stat.S_ISLNK(st.st_mode):
            with contextlib.suppress(FileExistsError):
                os.symlink(os.readlink(name, dir_fd=src_fd), name, dir_fd=dst_fd)
                with contextlib.suppress(PermissionError):  # not root: a scratch root
                    os.chown(name, uid, gid, dir_fd=dst_fd, follow_symlinks=False)
        elif stat.S_ISREG(st.st_mode):
            found = safefs.read_at(src_fd, name, shown=f"/etc/skel/{name}")
            if found is not None:
                with contextlib.suppress(FileExistsError):
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o600, dir_fd=dst_fd)
                    try:
                        with os.fdopen(fd, "wb", closefd=False) as fh:
                            fh.write(found[0])
                        os.fchmod(fd, mode)
                        safefs.fchown(fd, uid, gid)
                    finally:
                        os.close(fd)


def create_home(ctx: Context, home: str, uid: int, gid: int) -> None:
    """A new home directory with the root's /etc/skel copied in, owned by the user."""
    parent, _, name = home.rstrip("/").rpartition("/")
    if not name or name in (".", ".."):
        raise PluginError(f"{home} cannot be made a home directory")
    with safefs.open_dir(ctx.root, parent or "/", create=True) as parent_fd:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePath(home, "is a link or not a directory; not followed") from None
            raise
    try:
        if fsutil.is_dir(ctx.root, "/etc/skel"):
            with safefs.open_dir(ctx.root, "/etc/skel") as skel_fd:
                copy_skel(skel_fd, fd, uid, gid)
        os.fchmod(fd, 0o755)
        safefs.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def ensure_home(ctx: Context, home: str, uid: int, gid: int) -> None:
    """An existing home is given to the user (through its descriptor, never a link the user
    planted); a missing one is created from /etc/skel."""
    try:
        with safefs.open_dir(ctx.root, home) as fd:
            if os.fstat(fd).st_uid != uid:
                safefs.fchown(fd, uid, gid)
            return
    except FileNotFoundError:
        pass
    create_home(ctx, home, uid, gid)


def ensure_user(ctx: Context, acc: Accounts, user: User) -> None:
    base, default_shell = useradd_defaults(ctx)
    current = acc.passwd.get(user.name)
    home = user.homedir or (current[5] if current else f"{base.rstrip('/')}/{user.name}")
    uid = pick_uid(ctx, acc, user, current, home)
    gid = primary_gid(acc, user, uid)
    shell = user.shell or (current[6] if current and current[6] else default_shell)
    gecos = user.gecos if user.gecos is not None else (current[4] if current else "")
    acc.passwd.put([user.name, "x", str(uid), str(gid), gecos.replace(":", " "), home, shell])

    existing = acc.shadow.get(user.name)
    if user.lock_passwd:
        password = "!"
    elif user.passwd is not None:
        password = shadow_password(user.passwd, existing[1] if existing else None)
    else:  # no password given: keep the current one; a new account starts locked
        password = existing[1] if existing else "!"
    set_shadow(acc.shadow, user.name, password)

    for group in user.groups:
        ensure_group(acc.group, acc.gshadow, group, system=True)
        group_add_member(acc.group, acc.gshadow, group, user.name)
    acc.save()

    if not user.no_create_home:
        ensure_home(ctx, home, uid, gid)
    ctx.logger.info("users: %s (uid %d, gid %d)", user.name, uid, gid)


def apply(step: Step, ctx: Context) -> None:
    from kairos.stages.plugins.authorized_keys import ensure_keys

    failures = Failures("users", ctx.logger)
    for user in parse(step):
        acc = Accounts.load(ctx)
        try:
            ensure_user(ctx, acc, user)
        except (OSError, KairosError, ValueError) as exc:
            failures.add(f"{user.name}: {exc}")
            continue
        if user.ssh_authorized_keys:
            ensure_keys(ctx, user.name, user.ssh_authorized_keys, acc, failures)
    failures.raise_if_any()
