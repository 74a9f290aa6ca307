from __future__ import annotations

import os
from pathlib import Path

import pytest

from kairos.stages import plugins
from kairos.stages.context import Context, PluginError
from kairos.stages.fields import PayloadError
from kairos.stages.plugins import users
from kairos.stages.sha512crypt import verify

from .helpers import make_step

ACCOUNT_FILES = ("passwd", "group", "shadow", "gshadow")


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


# --- values that would change the structure of the account files are refused ---

INJECTIONS = [
    ("shell", {"shell": "/bin/sh\nevil::0:0::/:/bin/sh"}),
    ("homedir", {"homedir": "/home/x:0:0::/:/bin/sh"}),
    ("gecos", {"gecos": "Eve\nevil::0:0::/:/bin/sh"}),
    ("primary_group", {"primary_group": "users\nevil:x:0:"}),
    ("groups", {"groups": ["admin\nevil:x:0:"]}),
    ("groups", {"groups": ["admin,root"]}),
    ("passwd", {"passwd": "$6$salt$hash:19000:0:99999:7:::\nevil::0:0::::"}),
    ("passwd", {"passwd": "!\nevil::1:0:99999:7:::"}),
]


@pytest.mark.parametrize(("field", "spec"), INJECTIONS, ids=[f"{f}-{i}" for i, (f, _) in
                                                             enumerate(INJECTIONS)])
@pytest.mark.parametrize("form", ["map", "list"])
def test_injection_is_refused_and_nothing_written(ctx: Context, field: str,
                                                  spec: dict[str, object], form: str) -> None:
    before = {n: (ctx.root / "etc" / n).read_bytes() for n in ACCOUNT_FILES}
    users_value: object = ({"eve": spec} if form == "map" else [{"name": "eve", **spec}])
    step = make_step(users=users_value)
    with pytest.raises(PayloadError, match=rf"users\.eve\.{field}") as err:
        users.apply(step, ctx)
    assert "\n" not in str(err.value)  # one line, the value shown escaped
    assert {n: (ctx.root / "etc" / n).read_bytes() for n in ACCOUNT_FILES} == before
    assert not (ctx.root / "home/eve").exists()
    assert any("users" in p for p in plugins.validate(step))  # `validate` reports it too


@pytest.mark.parametrize("name", ["evil\n", "a:b", "a,b", "..", "-r", "+", "a b", "../etc"])
def test_bad_names_are_refused(ctx: Context, name: str) -> None:
    before = (ctx.root / "etc/passwd").read_bytes()
    for value in ({name: {}}, [{"name": name}]):
        with pytest.raises(PayloadError, match="not a valid name"):
            users.apply(make_step(users=value), ctx)
    assert (ctx.root / "etc/passwd").read_bytes() == before


def test_plain_password_with_colon_is_hashed(ctx: Context) -> None:
    users.apply(make_step(users={"kairos": {"passwd": "pa:ss", "gecos": "K: Os"}}), ctx)
    assert verify("pa:ss", rows(ctx.root, "shadow")["kairos"][1])
    assert rows(ctx.root, "passwd")["kairos"][4] == "K  Os"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a link owned by a user")
def test_existing_home_behind_a_users_link_is_not_given_away(ctx: Context) -> None:
    (ctx.root / "home").mkdir()
    (ctx.root / "home/alice").symlink_to("/etc")
    os.chown(ctx.root / "home/alice", 1000, 1000, follow_symlinks=False)
    with pytest.raises(PluginError, match="not followed"):
        users.apply(make_step(users={"alice": {"uid": 1000}}), ctx)
    etc = (ctx.root / "etc").stat()
    assert (etc.st_uid, etc.st_gid) == (0, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a link owned by a user")
def test_uid_is_not_read_through_a_users_link(ctx: Context) -> None:
    (ctx.root / "srv/real").mkdir(parents=True)
    os.chown(ctx.root / "srv/real", 1005, 1005)
    (ctx.root / "srv/alice").symlink_to("/srv/real")
    os.chown(ctx.root / "srv/alice", 1007, 1007, follow_symlinks=False)
    users.apply(make_step(users={"alice": {"homedir": "/srv/alice", "no_create_home": True}}),
                ctx)
    assert rows(ctx.root, "passwd")["alice"][2] == "1000"  # not 1005 through the link


def test_skel_is_copied_without_following_links(ctx: Context) -> None:
    skel = ctx.root / "etc/skel"
    (skel / ".config").mkdir()
    (skel / ".config/app.conf").write_text("a=1\n")
    (skel / ".config/app.conf").chmod(0o640)
    (skel / ".link").symlink_to("/etc/shadow")
    users.apply(make_step(users={"kairos": {}}), ctx)
    home = ctx.root / "home/kairos"
    assert (home / ".config/app.conf").read_text() == "a=1\n"
    assert (home / ".config/app.conf").stat().st_mode & 0o777 == 0o640
    assert (home / ".link").is_symlink() and os.readlink(home / ".link") == "/etc/shadow"
    assert home.stat().st_mode & 0o777 == 0o755
    if os.geteuid() == 0:
        assert all(p.lstat().st_uid == 1000 for p in [home, *home.rglob("*")])
        assert (ctx.root / "etc/shadow").stat().st_uid == 0
