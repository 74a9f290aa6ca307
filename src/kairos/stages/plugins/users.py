"""`users`: create or update accounts by editing the root's account files directly.

The step form is a mapping name -> {passwd, groups, shell, ...}; Kairos's list form
[{name, ...}] is accepted too. Applied in name order so ids come out the same every boot
(/etc is rebuilt each boot on a device): an explicit uid, else the one the user already has,
else the owner of an existing home directory, else the first free id from 1000.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from kairos.envfile import parse_env
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
from kairos.stages.fsutil import chown
from kairos.stages.model import Step
from kairos.stages.sysinfo import read_text

KEYS = ("users",)


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


def parse_user(name: str, raw: dict[str, object]) -> User:
    w = f"users.{name}"
    groups = raw.get("groups")
    if isinstance(groups, str):  # cloud-init also allows "a,b"
        groups = [g.strip() for g in groups.split(",") if g.strip()]
    passwd = raw.get("passwd")
    return User(
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


def parse(step: Step) -> list[User]:
    users = []
    for entry in user_entries(step.payloads.get("users"), "users"):
        name = str(entry["name"])
        if not name or ":" in name or "\n" in name:
            raise PayloadError(f"users: '{name}' is not a valid user name")
        users.append(parse_user(name, entry))
    return sorted(users, key=lambda u: u.name)


def useradd_defaults(ctx: Context) -> tuple[str, str]:
    """(home base, shell) from the root's /etc/default/useradd, as yip reads them."""
    env = parse_env(read_text(ctx.path("/etc/default/useradd")))
    return env.get("HOME") or "/home", env.get("SHELL") or "/bin/sh"


def pick_uid(ctx: Context, acc: Accounts, user: User, current: list[str] | None,
             home: str) -> int:
    used = acc.passwd.ids()
    if user.uid is not None:
        return user.uid
    if current is not None and current[2].isdigit():
        return int(current[2])
    home_path = ctx.path(home)
    if home_path.is_dir():
        owner = home_path.stat().st_uid
        if owner != 0 and owner not in used:  # a persistent /home remembers the uid
            return owner
    return free_id(used, system=user.system)


def primary_gid(acc: Accounts, user: User, uid: int) -> int:
    if user.primary_group:
        return ensure_group(acc.group, acc.gshadow, user.primary_group, system=user.system)
    if user.no_user_group:
        row = acc.group.get("users")
        return int(row[2]) if row is not None else 100
    return ensure_group(acc.group, acc.gshadow, user.name, system=user.system, prefer=uid)


def create_home(ctx: Context, home: Path, uid: int, gid: int) -> None:
    """A new home directory with the root's /etc/skel copied in, owned by the user."""
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o755)
    skel = ctx.path("/etc/skel")
    if skel.is_dir():
        shutil.copytree(skel, home, symlinks=True, dirs_exist_ok=True)
    chown(home, uid, gid)
    for dirpath, dirnames, filenames in os.walk(home):
        for entry in dirnames + filenames:
            chown(Path(dirpath, entry), uid, gid, follow=False)


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
        home_path = ctx.path(home)
        if home_path.is_dir():
            if home_path.stat().st_uid != uid:
                chown(home_path, uid, gid)
        else:
            create_home(ctx, home_path, uid, gid)
    ctx.logger.info("users: %s (uid %d, gid %d)", user.name, uid, gid)


def apply(step: Step, ctx: Context) -> None:
    from kairos.stages.plugins.authorized_keys import ensure_keys

    failures = Failures("users", ctx.logger)
    for user in parse(step):
        acc = Accounts.load(ctx)
        try:
            ensure_user(ctx, acc, user)
        except (OSError, PluginError, ValueError) as exc:
            failures.add(f"{user.name}: {exc}")
            continue
        if user.ssh_authorized_keys:
            ensure_keys(ctx, user.name, user.ssh_authorized_keys, acc, failures)
    failures.raise_if_any()
