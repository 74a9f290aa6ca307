from __future__ import annotations

from kairos.stages.context import Context
from kairos.stages.plugins import dns

from .helpers import make_step


def test_writes_resolv_conf(ctx: Context) -> None:
    dns.apply(make_step(dns={"nameservers": ["8.8.8.8", "1.1.1.1"], "search": ["foo.bar"],
                             "options": ["edns0"]}), ctx)
    assert (ctx.root / "etc/resolv.conf").read_text() == (
        "search foo.bar\nnameserver 8.8.8.8\nnameserver 1.1.1.1\noptions edns0\n")


def test_custom_path_and_dot_search(ctx: Context) -> None:
    dns.apply(make_step(dns={"nameservers": ["9.9.9.9"], "search": ["."],
                             "path": "/etc/resolv.conf.bak"}), ctx)
    assert (ctx.root / "etc/resolv.conf.bak").read_text() == "nameserver 9.9.9.9\n"


def test_nothing_without_nameservers(ctx: Context) -> None:
    dns.apply(make_step(dns={"search": ["x"]}), ctx)
    assert not (ctx.root / "etc/resolv.conf").exists()
