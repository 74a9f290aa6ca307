"""A debootstrapped base is fetched again once older than --base-max-age (default 7 days),
and what is built on it is then built again; the build says how old its base is."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kairos.cli.build_cmd import base_max_age, source_date_epoch
from kairos.errors import BadInput, KairosError
from kairos.factory import build as build_mod
from kairos.factory.bases import BaseSpec
from kairos.factory.build import (
    DAY,
    DEFAULT_EPOCH,
    BuildOptions,
    Context,
    _base_key,
    base_age_days,
    base_is_stale,
    step_base,
)
from kairos.factory.cache import CREATED, StepCache

T0 = 1_800_000_000.0


@pytest.mark.parametrize("made,now,max_age,stale", [
    (T0, T0 + 6.9 * DAY, 7.0, False),
    (T0, T0 + 7.1 * DAY, 7.0, True),
    (T0, T0, 0.0, True),  # 0: at every build
    (T0, T0 + 999 * DAY, None, False),  # never
    (None, T0, 7.0, False),  # no base yet: nothing to refresh
    (T0, T0 + 0.5 * DAY, 0.25, True),
])
def test_stale_decision(made: float | None, now: float, max_age: float | None,
                        stale: bool) -> None:
    assert base_is_stale(made, now, max_age) is stale


def test_age_in_days() -> None:
    assert base_age_days(T0, T0 + 2.9 * DAY) == 2
    assert base_age_days(None, T0) == 0
    assert base_age_days(T0, T0 - 100) == 0  # a clock set back


class Fetches:
    def __init__(self, fail: bool = False) -> None:
        self.count = 0
        self.fail = fail

    def __call__(self, spec: BaseSpec, dest: Path, **_: object) -> None:
        if self.fail:
            raise KairosError("cannot reach the mirror", "check the network")
        self.count += 1
        (dest / "etc").mkdir(parents=True)
        (dest / "etc/fetch").write_text(str(self.count))


def _ctx(tmp_path: Path, now: float, max_age: float | None = 7.0,
         base: BaseSpec | None = None) -> Context:
    opts = BuildOptions(base=base or BaseSpec("debian", "bookworm"), version="1.0.0",
                        output=tmp_path / "out", cache_dir=tmp_path / "cache", init="systemd",
                        base_max_age_days=max_age)
    return Context(opts, StepCache(opts.cache_dir), clock=lambda: now)


def _seed(ctx: Context, made: float) -> None:
    with ctx.cache.produce("base", _base_key(ctx)) as out:
        (out / "tree/etc").mkdir(parents=True)
        (out / "tree/etc/fetch").write_text("seed")
    (ctx.cache.path("base", _base_key(ctx)) / CREATED).write_text(f"{made:.0f}\n")
    ctx.cache.close()


def test_old_base_is_fetched_again_and_later_steps_rebuilt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fetch = Fetches()
    monkeypatch.setattr(build_mod, "acquire", fetch)
    _seed(_ctx(tmp_path, T0), T0)
    young = _ctx(tmp_path, T0 + 3 * DAY)
    tree, key_young = step_base(young)
    assert young.result_steps["base"] == "cached" and fetch.count == 0
    assert (tree / "etc/fetch").read_text() == "seed"
    assert base_age_days(young.base_made, young.clock()) == 3
    young.cache.close()
    old = _ctx(tmp_path, T0 + 8 * DAY)
    tree, key_old = step_base(old)
    assert old.result_steps["base"] == "built" and fetch.count == 1
    assert (tree / "etc/fetch").read_text() == "1"
    assert key_old != key_young, "steps built on the old base must not be reused"
    old.cache.close()
    # The cache stamps the refreshed base with the real clock, not the context's: a clock
    # set to T0 + 8 days found it 50 days old and fetched it again at every call, and the
    # keys matched only when both fetches fell in one second (it failed once under load).
    again = _ctx(tmp_path, time.time())
    first = step_base(again)[1]
    assert step_base(again)[1] == first and fetch.count == 1  # stable while the base stays


def test_a_failed_refresh_builds_on_the_old_base(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_mod, "acquire", Fetches(fail=True))
    _seed(_ctx(tmp_path, T0), T0)
    ctx = _ctx(tmp_path, T0 + 30 * DAY)
    tree, _ = step_base(ctx)
    assert (tree / "etc/fetch").read_text() == "seed"
    assert ctx.result_steps["base"] == "cached (refresh failed)"
    assert [p.name for p in (tmp_path / "cache/steps").iterdir()] == [
        f"base-{_base_key(ctx)}"], "no scratch dir left"


@pytest.mark.parametrize("max_age,kind,fetched", [(None, "debian", 0), (0.0, "debian", 1),
                                                   (0.0, "dir", 0)])
def test_never_always_and_tree_bases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     max_age: float | None, kind: str, fetched: int) -> None:
    fetch = Fetches()
    monkeypatch.setattr(build_mod, "acquire", fetch)
    (tmp_path / "src").mkdir()
    spec = BaseSpec("debian", "bookworm") if kind == "debian" else BaseSpec(kind, str(tmp_path / "src"))
    seed = _ctx(tmp_path, T0, base=spec)
    _seed(seed, T0)
    step_base(_ctx(tmp_path, T0 + 100 * DAY, max_age, base=spec))
    assert fetch.count == fetched


def test_age_and_epoch_settings() -> None:
    assert base_max_age(None, {}) == 7.0
    assert base_max_age(None, {"KAIROS_BASE_MAX_AGE": "2.5"}) == 2.5
    assert base_max_age("0", {"KAIROS_BASE_MAX_AGE": "2"}) == 0.0
    assert base_max_age("never", {}) is None
    for bad in ("-1", "abc", "nan", "inf"):
        with pytest.raises(BadInput):
            base_max_age(bad, {})
    assert source_date_epoch({}) == DEFAULT_EPOCH
    assert source_date_epoch({"SOURCE_DATE_EPOCH": "1700000001"}) == 1_700_000_001


@pytest.mark.parametrize("env,needle", [({"SOURCE_DATE_EPOCH": "abc"}, "SOURCE_DATE_EPOCH"),
                                        ({"SOURCE_DATE_EPOCH": "-5"}, "SOURCE_DATE_EPOCH"),
                                        ({"KAIROS_BASE_MAX_AGE": "soon"}, "KAIROS_BASE_MAX_AGE")])
def test_bad_settings_are_one_line_exit_2(tmp_path: Path, env: dict[str, str],
                                          needle: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "kairos", "build", "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()
