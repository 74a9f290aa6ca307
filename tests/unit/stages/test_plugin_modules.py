from __future__ import annotations

import shutil

import pytest

from kairos.stages.context import Context, PluginError
from kairos.stages.plugins import modules

from .helpers import make_step


def test_loaded_modules_are_skipped(ctx: Context) -> None:
    (ctx.root / "proc").mkdir()
    (ctx.root / "proc/modules").write_text("nvidia 100 0 - Live 0x0\nloop 10 0 - Live 0x0\n")
    modules.apply(make_step(modules=["nvidia", "loop max_loop=8"]), ctx)  # no modprobe run


@pytest.mark.skipif(shutil.which("modprobe") is None, reason="modprobe (kmod) not installed")
def test_missing_module_is_a_reported_failure(ctx: Context) -> None:
    with pytest.raises(PluginError, match="modprobe kairos_no_such_module"):
        modules.apply(make_step(modules=["kairos_no_such_module"]), ctx)
