"""Two `kairos build` runs at once on one step cache (two CI jobs, two checkouts): neither
deletes or replaces what the other reads, both succeed, and each slot image is the same
bytes as a build of the same inputs made alone.

The builds share a cache of their own, seeded with the shared cache's base step (hard links):
their prunes must not evict the default image's cached steps, which later tests reuse."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from kairos.artifacts.rootfs import sha256_file
from tests.helpers import CACHE_DIR, ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cache(default_image: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A step cache holding only the default image's base (and packages) steps."""
    root = tmp_path_factory.mktemp("cache")
    (root / "steps").mkdir()
    shared = sorted(p for p in Path(CACHE_DIR, "steps").glob("*")
                    if p.name.startswith(("base-", "packages-")))
    assert shared, f"no base step in {CACHE_DIR}"
    for step in shared:
        res = subprocess.run(["cp", "-al", str(step), str(root / "steps")], capture_output=True)
        if res.returncode != 0:  # another filesystem: copy
            subprocess.run(["cp", "-a", str(step), str(root / "steps")], check=True)
    return root


def _start(cache: Path, out: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, KAIROS_CACHE_DIR=str(cache))
    return subprocess.Popen([sys.executable, "-m", "kairos", "build", "--output", str(out),
                             "--json", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)


def _finish(proc: subprocess.Popen[str]) -> dict[str, object]:
    stdout, stderr = proc.communicate(timeout=1800)
    assert proc.returncode == 0, f"{proc.args}:\n{stderr[-3000:]}"
    assert "No such file or directory" not in stderr
    result: dict[str, object] = json.loads(stdout)
    return result


def test_two_builds_at_once_match_lone_builds(default_image: dict[str, object], cache: Path,
                                              tmp_path: Path) -> None:
    """Different versions: different kairosify/squash/OCI keys, so each build's prune meets
    the other's live entries. One re-runs the default image's steps (--rebuild); the other
    builds a version no cache has seen."""
    other = f"0.1.1+c{secrets.token_hex(4)}"
    first = _start(cache, tmp_path / "a", "--rebuild")
    second = _start(cache, tmp_path / "b", "--version", other)
    a, b = _finish(first), _finish(second)
    assert a["steps"]["kairosify"] == "built" and b["steps"]["kairosify"] == "built"  # type: ignore[index]
    assert sha256_file(tmp_path / "a/rootfs.squashfs") == default_image["rootfs_sha256"]
    assert a["oci_digest"] == default_image["oci_digest"]
    lone = _finish(_start(cache, tmp_path / "c", "--version", other, "--rebuild", "--no-oci"))
    assert sha256_file(tmp_path / "b/rootfs.squashfs") == lone["rootfs_sha256"]
    assert b["rootfs_sha256"] == lone["rootfs_sha256"] != a["rootfs_sha256"]


def test_two_builds_of_the_same_inputs_make_them_once(tmp_path: Path, cache: Path) -> None:
    """Same new version in both: one makes each step, the other waits and reuses it."""
    version = f"0.1.2+s{secrets.token_hex(4)}"
    procs = [_start(cache, tmp_path / name, "--version", version, "--no-oci") for name in ("a", "b")]
    a, b = (_finish(p) for p in procs)
    kinds = sorted(str(r["steps"]["kairosify"]) for r in (a, b))  # type: ignore[index]
    assert kinds == ["built", "cached"], kinds
    assert a["rootfs_sha256"] == b["rootfs_sha256"]
    assert sha256_file(tmp_path / "a/rootfs.squashfs") == sha256_file(tmp_path / "b/rootfs.squashfs")
