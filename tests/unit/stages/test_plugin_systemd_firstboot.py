from __future__ import annotations

import shutil

import pytest

from kairos.stages.context import Context
from kairos.stages.plugins import systemd_firstboot

from .helpers import make_step


def test_arguments_sorted_and_flags() -> None:
    assert systemd_firstboot.arguments({"Hostname": "myhost", "force": "true"}) == [
        "--force", "--hostname=myhost"]


@pytest.mark.skipif(shutil.which("systemd-firstboot") is None,
                    reason="systemd-firstboot not installed")
def test_runs_against_the_root(ctx: Context) -> None:
    (ctx.root / "etc/hostname").unlink(missing_ok=True)
    systemd_firstboot.apply(make_step(systemd_firstboot={"hostname": "fbhost"}), ctx)
    assert (ctx.root / "etc/hostname").read_text().strip() == "fbhost"
