from __future__ import annotations

from kairos.stages.context import Context
from kairos.stages.plugins import hostname

from .conftest import MACHINE_ID
from .helpers import make_step


def test_templated_name_writes_hostname_and_hosts(ctx: Context) -> None:
    hostname.apply(make_step(hostname="kairos-{{ trunc 4 .MachineID }}"), ctx)
    assert (ctx.root / "etc/hostname").read_text() == f"kairos-{MACHINE_ID[:4]}\n"
    hosts = (ctx.root / "etc/hosts").read_text().splitlines()
    assert hosts == [f"127.0.0.1 localhost kairos-{MACHINE_ID[:4]}", "::1 localhost"]


def test_idempotent_and_creates_hosts_when_missing(ctx: Context) -> None:
    (ctx.root / "etc/hosts").unlink()
    for _ in range(2):
        hostname.apply(make_step(hostname="node1"), ctx)
    assert (ctx.root / "etc/hosts").read_text() == "127.0.0.1 localhost node1\n"


def test_follows_persistent_symlinks_inside_root(ctx: Context) -> None:
    persistent = ctx.root / "usr/local/etc"
    persistent.mkdir(parents=True)
    (persistent / "hosts").write_text("127.0.0.1 localhost\n")
    (ctx.root / "etc/hosts").unlink()
    (ctx.root / "etc/hosts").symlink_to("/usr/local/etc/hosts")
    hostname.apply(make_step(hostname="edge"), ctx)
    assert (persistent / "hosts").read_text() == "127.0.0.1 localhost edge\n"


def test_other_template_values(ctx: Context) -> None:
    hostname.apply(make_step(hostname="n-{{ .UUID | trunc 8 }}-{{ .Random | trunc 3 }}"), ctx)
    name = (ctx.root / "etc/hostname").read_text().strip()
    assert len(name) == len("n-12345678-abc") and "{{" not in name
