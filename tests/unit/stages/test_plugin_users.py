from __future__ import annotations

import os
from pathlib import Path

from kairos.stages.context import Context
from kairos.stages.plugins import users
from kairos.stages.sha512crypt import verify

from .helpers import make_step


def rows(root: Path, name: str) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":")
            for line in (root / "etc" / name).read_text().splitlines()}


def test_creates_user_group_home_and_password(ctx: Context) -> None:
    users.apply(make_step(users={"kairos": {"passwd": "kairos", "shell": "/bin/bash",
                                            "groups": ["admin"], "gecos": "Kairos"}}), ctx)
    passwd = rows(ctx.root, "passwd")["kairos"]
    assert passwd == ["kairos", "x", "1000", "1000", "Kairos", "/home/kairos", "/bin/bash"]
    group = rows(ctx.root, "group")
    assert group["kairos"] == ["kairos", "x", "1000", ""]
    assert group["admin"][3] == "kairos" and int(group["admin"][2]) < 1000
    assert rows(ctx.root, "gshadow")["admin"] == ["admin", "!", "", "kairos"]
    shadow = rows(ctx.root, "shadow")["kairos"]
    assert shadow[1].startswith("$6$") and verify("kairos", shadow[1])
    assert int(shadow[2]) > 19000
    home = ctx.root / "home/kairos"
    assert (home / ".bashrc").read_text() == "# skel\n"
    if os.geteuid() == 0:
        assert home.stat().st_uid == 1000 and (home / ".bashrc").stat().st_uid == 1000
    # the shadow file keeps its mode through the atomic rewrite
    assert (ctx.root / "etc/shadow").stat().st_mode & 0o777 == 0o640


def test_same_config_same_files_every_run(ctx: Context) -> None:
    step = make_step(users={"b": {"passwd": "pw"}, "a": {"passwd": "$6$salt$hash",
                                                          "groups": ["admin"]}})
    users.apply(step, ctx)
    before = {n: (ctx.root / "etc" / n).read_bytes() for n in ("passwd", "group", "shadow")}
    users.apply(step, ctx)
    after = {n: (ctx.root / "etc" / n).read_bytes() for n in ("passwd", "group", "shadow")}
    assert before == after
    # sorted names: "a" gets the first uid
    assert rows(ctx.root, "passwd")["a"][2] == "1000"
    assert rows(ctx.root, "passwd")["b"][2] == "1001"
    assert rows(ctx.root, "shadow")["a"][1] == "$6$salt$hash"  # hashes kept as given


def test_uid_is_remembered_from_a_persistent_home(ctx: Context) -> None:
    if os.geteuid() != 0:
        return  # needs chown to set up the home's owner
    home = ctx.root / "home/alice"
    home.mkdir(parents=True)
    os.chown(home, 1005, 1005)
    users.apply(make_step(users={"alice": {}}), ctx)
    assert rows(ctx.root, "passwd")["alice"][2:4] == ["1005", "1005"]


def test_lock_explicit_uid_primary_group_and_kairos_list_form(ctx: Context) -> None:
    users.apply(make_step(users=[{"name": "svc", "uid": 2001, "primary_group": "users",
                                  "lock_passwd": True, "passwd": "ignored",
                                  "no_create_home": True, "homedir": "/srv/svc"}]), ctx)
    assert rows(ctx.root, "passwd")["svc"][2:6] == ["2001", "100", "", "/srv/svc"]
    assert rows(ctx.root, "shadow")["svc"][1] == "!"
    assert not (ctx.root / "srv/svc").exists()


def test_existing_user_is_updated_not_duplicated(ctx: Context) -> None:
    users.apply(make_step(users={"kairos": {"passwd": "!", "shell": "/bin/bash"}}), ctx)
    users.apply(make_step(users={"kairos": {"passwd": "kairos", "groups": ["admin"]}}), ctx)
    lines = (ctx.root / "etc/passwd").read_text().splitlines()
    assert sum(line.startswith("kairos:") for line in lines) == 1
    assert rows(ctx.root, "passwd")["kairos"][6] == "/bin/bash"
    assert verify("kairos", rows(ctx.root, "shadow")["kairos"][1])


def test_ssh_keys_for_a_user(ctx: Context) -> None:
    users.apply(make_step(users={"kairos": {"ssh_authorized_keys": ["ssh-ed25519 AAAA me"]}}),
                ctx)
    keys = ctx.root / "home/kairos/.ssh/authorized_keys"
    assert keys.read_text() == "ssh-ed25519 AAAA me\n"
    assert keys.stat().st_mode & 0o777 == 0o600
    if os.geteuid() == 0:
        assert keys.stat().st_uid == 1000


def test_new_user_without_password_is_locked(ctx: Context) -> None:
    users.apply(make_step(users={"nopw": {}}), ctx)
    assert rows(ctx.root, "shadow")["nopw"][1] == "!"
    assert rows(ctx.root, "passwd")["nopw"][6] == "/bin/sh"
