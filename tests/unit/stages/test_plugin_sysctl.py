from __future__ import annotations

from kairos.stages.context import Context
from kairos.stages.plugins import sysctl

from .helpers import make_step


def test_writes_proc_sys_below_root(ctx: Context) -> None:
    sysctl.apply(make_step(sysctl={"net.core.rmem_max": 7500000, "vm.max_map_count": "262144"}),
                 ctx)
    assert (ctx.root / "proc/sys/net/core/rmem_max").read_text() == "7500000"
    assert (ctx.root / "proc/sys/vm/max_map_count").read_text() == "262144"
