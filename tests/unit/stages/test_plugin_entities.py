from __future__ import annotations

from kairos.stages.context import Context
from kairos.stages.plugins import delete_entities, ensure_entities

from .helpers import make_step


def lines(ctx: Context, name: str) -> list[str]:
    return (ctx.root / "etc" / name).read_text().splitlines()


def test_group_entity_from_bundled_accounting(ctx: Context) -> None:
    step = make_step(ensure_entities=[{"entity": 'kind: "group"\ngroup_name: "admin"\n'
                                                 'password: "x"\ngid: 900\n'}])
    ensure_entities.apply(step, ctx)
    ensure_entities.apply(step, ctx)
    assert lines(ctx, "group")[-1] == "admin:x:900:"
    assert sum(line.startswith("admin:") for line in lines(ctx, "group")) == 1


def test_user_shadow_gshadow_and_group_members(ctx: Context) -> None:
    ensure_entities.apply(make_step(ensure_entities=[
        {"path": "/etc/passwd", "entity": 'kind: "user"\nusername: "foo"\npassword: "x"\n'
                                          'uid: 0\ngid: 0\ninfo: "Foo!"\nhomedir: "/home/foo"\n'
                                          'shell: "/bin/bash"\n'},
        {"entity": 'kind: "shadow"\nusername: "foo"\npassword: "secret"\nlast_changed: now\n'},
        {"entity": 'kind: "group"\ngroup_name: "users"\nusers: "foo"\n'},
        {"entity": 'kind: "gshadow"\nname: "users"\npassword: "!"\nmembers: "foo"\n'},
    ]), ctx)
    assert "foo:x:0:0:Foo!:/home/foo:/bin/bash" in lines(ctx, "passwd")
    shadow = next(line for line in lines(ctx, "shadow") if line.startswith("foo:"))
    assert shadow.split(":")[1].startswith("$6$") and int(shadow.split(":")[2]) > 0
    assert "users:x:100:foo" in lines(ctx, "group")
    assert "users:!::foo" in lines(ctx, "gshadow")


def test_dynamic_ids(ctx: Context) -> None:
    ensure_entities.apply(make_step(ensure_entities=[
        {"entity": 'kind: group\ngroup_name: dyn\ngid: -1\n'},
        {"entity": 'kind: user\nusername: dyn\nuid: -1\ngroup: dyn\nhomedir: /x\nshell: /bin/sh\n'},
    ]), ctx)
    assert "dyn:x:1000:" in lines(ctx, "group")
    assert "dyn:x:1000:1000:Created by entities:/x:/bin/sh" in lines(ctx, "passwd")


def test_templated_entity_and_delete(ctx: Context) -> None:
    ensure_entities.apply(make_step(ensure_entities=[
        {"entity": 'kind: group\ngroup_name: "g-{{ .Values.os.vendor }}"\ngid: 4242\n'}]), ctx)
    assert "g-debian:x:4242:" in lines(ctx, "group")
    delete_entities.apply(make_step(delete_entities=[
        {"path": "/etc/group", "entity": "kind: group\ngroup_name: g-debian\n"}]), ctx)
    assert not any(line.startswith("g-debian:") for line in lines(ctx, "group"))
    delete_entities.apply(make_step(delete_entities=[
        {"entity": "kind: user\nusername: daemon\n"}]), ctx)
    assert not any(line.startswith("daemon:") for line in lines(ctx, "passwd"))
