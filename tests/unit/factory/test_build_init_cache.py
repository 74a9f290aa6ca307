"""The init choice in the step cache: its own keys, and builds of one base with two inits
never throw away each other's cached steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from kairos.factory.bases import BaseSpec
from kairos.factory.build import BuildOptions, Context, _base_key
from kairos.factory.cache import StepCache


def _ctx(tmp_path: Path, init: str, base: BaseSpec | None = None) -> Context:
    opts = BuildOptions(base=base or BaseSpec("debian", "bookworm"), version="0.1.0",
                        output=tmp_path / "out", cache_dir=tmp_path / "cache", init=init)
    return Context(opts, StepCache(opts.cache_dir))


def test_debian_openrc_and_systemd_have_their_own_base(tmp_path: Path) -> None:
    systemd, openrc, auto = (_ctx(tmp_path, i) for i in ("systemd", "openrc", "auto"))
    assert auto.service_manager == "systemd"
    assert _base_key(auto) == _base_key(systemd)
    assert _base_key(openrc) != _base_key(systemd)
    assert "openrc" in openrc.packages() and "systemd-sysv" not in openrc.packages()
    assert openrc.lineage == "debian:bookworm openrc"
    assert systemd.lineage == "debian:bookworm systemd"


def test_a_tree_base_waits_for_its_tree(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    ctx = _ctx(tmp_path, "auto", BaseSpec("dir", str(tmp_path / "tree")))
    assert ctx.init is None
    # The base step's key does not depend on the init: it is read from that very base.
    assert _base_key(ctx) == _base_key(_ctx(tmp_path, "openrc", ctx.opts.base))
    with pytest.raises(RuntimeError):
        ctx.packages()
    ctx.init = "openrc"
    assert "openrc" in ctx.packages()


def _produce(cache: StepCache, key: str, lineage: str) -> Path:
    with cache.produce("squash", key, lineage=lineage) as out:
        (out / "rootfs.squashfs").write_text(key)
    return cache.path("squash", key)


def test_prune_keeps_other_lineages(tmp_path: Path) -> None:
    cache = StepCache(tmp_path / "cache")
    systemd_old = _produce(cache, "a1", "debian:bookworm systemd")
    openrc_old = _produce(cache, "b1", "debian:bookworm openrc")
    with cache.produce("squash", "c0") as out:  # made before lineages existed
        (out / "x").write_text("")
    systemd_new = _produce(cache, "a2", "debian:bookworm systemd")
    cache.prune("squash", "a2", lineage="debian:bookworm systemd")
    assert systemd_new.is_dir()
    assert not systemd_old.exists()
    assert not cache.path("squash", "c0").exists()
    assert openrc_old.is_dir(), "another init's image is not pruned"
    assert cache.lineage("squash", "b1") == "debian:bookworm openrc"
    cache.prune("squash", "a2")  # no lineage: every other output goes, as before
    assert not openrc_old.exists() and systemd_new.is_dir()
