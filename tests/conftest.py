"""Shared fixtures: the default image is built once per test session with the real CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import settings

from tests.helpers import kairos

# Hypothesis's per-example deadline (200 ms) is a timed assert: on a loaded two-core machine
# running guests beside the suite one grubenv example took 808 ms. Property tests check
# behaviour; speed is for the benchmarks.
settings.register_profile("kairos", deadline=None)
settings.load_profile("kairos")


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (run the suite with scripts/test as root)")


@pytest.fixture(scope="session")
def default_image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """`kairos build` on its defaults (Debian 12); the step cache makes re-runs cheap."""
    _needs_root()
    out = tmp_path_factory.mktemp("image") / "image"
    proc = kairos("build", "--output", str(out), "--json")
    result: dict[str, object] = json.loads(proc.stdout)
    assert Path(str(result["rootfs"])).is_file()
    return result
