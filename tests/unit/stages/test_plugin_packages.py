from __future__ import annotations

import logging

import pytest

from kairos.stages.context import Context
from kairos.stages.plugins import packages, unpack_images

from .helpers import make_step


def test_packages_are_parsed_and_reported_not_applied(ctx: Context,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    step = make_step(packages={"install": ["vim"], "refresh": True}, package_pins={"vim": "9"})
    spec = packages.parse(step)
    assert spec.install == ["vim"] and spec.refresh and spec.pins == {"vim": "9"}
    with caplog.at_level(logging.WARNING):
        packages.apply(step, ctx)
    assert "not supported on an immutable image" in caplog.text


def test_unpack_images_reports_not_supported(ctx: Context,
                                             caplog: pytest.LogCaptureFixture) -> None:
    step = make_step(unpack_images=[{"source": "quay.io/x:1", "target": "/opt/x"}])
    assert unpack_images.parse(step)[0].target == "/opt/x"
    with caplog.at_level(logging.WARNING):
        unpack_images.apply(step, ctx)
    assert "not supported yet" in caplog.text and not (ctx.root / "opt/x").exists()
