"""The output directory is published as a whole: a failed step leaves the previous output
as it was (and no scratch dir), and output files are copies, never links into the cache.
The steps are stand-ins here (no root, no debootstrap); `build()` itself is the real one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kairos.errors import BadInput, KairosError
from kairos.factory import build as build_mod
from kairos.factory.bases import BaseSpec
from kairos.factory.build import BuildOptions, Context, build, check_output, swap_in
from kairos.factory.release import Release


class Steps:
    """Stand-in steps whose outputs live in a fake cache; `oci_fails` breaks the OCI step."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.oci_fails = False
        self.generation = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        tree = self.cache / "tree"
        tree.mkdir(parents=True, exist_ok=True)
        monkeypatch.setattr(build_mod, "preflight", lambda opts: None)
        monkeypatch.setattr(build_mod, "step_base", lambda ctx: (tree, "k0"))
        monkeypatch.setattr(build_mod, "step_packages", lambda ctx, t, k: (t, k))
        monkeypatch.setattr(build_mod, "_release", lambda ctx, t: Release(
            version=f"v{ctx.opts.version}", flavor="debian", flavor_release="12"))
        monkeypatch.setattr(build_mod, "step_kairosify", lambda ctx, t, k: (t, "k1"))
        monkeypatch.setattr(build_mod, "step_squash", self.squash)
        monkeypatch.setattr(build_mod, "step_oci", self.oci)

    def squash(self, ctx: Context, tree: Path, key: str) -> tuple[Path, str]:
        self.generation += 1
        out = self.cache / f"squash-{self.generation}"
        out.mkdir()
        for name in ("rootfs.squashfs", "vmlinuz", "initrd"):
            (out / name).write_text(f"{name} {self.generation}\n")
        return out, "k2"

    def oci(self, ctx: Context, tree: Path, key: str, release: Release) -> tuple[Path, str]:
        if self.oci_fails:
            raise KairosError("writing the OCI image failed", "disk full")
        out = self.cache / f"oci-{self.generation}"
        (out / "oci/blobs").mkdir(parents=True)
        (out / "oci/index.json").write_text("{}\n")
        (out / "image.oci.tar").write_text(f"archive {self.generation}\n")
        (out / "digest").write_text(f"sha256:{self.generation}\n")
        return out, "k3"


def _opts(tmp_path: Path, version: str = "1.0.0") -> BuildOptions:
    return BuildOptions(base=BaseSpec("debian", "bookworm"), version=version,
                        output=tmp_path / "out" / "image", cache_dir=tmp_path / "cache",
                        init="systemd")


def _contents(top: Path) -> dict[str, bytes]:
    return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*"))
            if p.is_file()}


@pytest.fixture
def steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Steps:
    s = Steps(tmp_path / "fakecache")
    s.install(monkeypatch)
    return s


def test_failed_oci_step_leaves_the_previous_output_whole(tmp_path: Path, steps: Steps) -> None:
    first = build(_opts(tmp_path))
    out = Path(first.output)
    before = _contents(out)
    assert json.loads(before["build.json"])["version"] == "v1.0.0"
    steps.oci_fails = True
    with pytest.raises(KairosError, match="OCI"):
        build(_opts(tmp_path, "2.0.0"))
    assert _contents(out) == before, "a failed build changed the previous output"
    assert sorted(p.name for p in out.parent.iterdir()) == ["image"], "scratch dir left"


def test_a_new_output_replaces_the_old_one_as_a_whole(tmp_path: Path, steps: Steps) -> None:
    build(_opts(tmp_path))
    out = tmp_path / "out/image"
    (out / "stray-from-before").write_text("x")
    steps.oci_fails = False
    opts = _opts(tmp_path, "2.0.0")
    opts.oci = False
    result = build(opts)
    assert (out / "rootfs.squashfs").read_text() == "rootfs.squashfs 2\n"
    assert not (out / "oci").exists() and not (out / "stray-from-before").exists()
    assert result.oci_archive is None
    assert json.loads((out / "build.json").read_text())["version"] == "v2.0.0"
    assert sorted(p.name for p in out.parent.iterdir()) == ["image"]


def test_output_files_are_copies_not_links_into_the_cache(tmp_path: Path, steps: Steps) -> None:
    build(_opts(tmp_path))
    out = tmp_path / "out/image"
    cached = _contents(steps.cache)
    for p in out.rglob("*"):
        if p.is_file():
            assert p.stat().st_nlink == 1, p
            with open(p, "ab") as fh:  # a user editing an output file
                fh.write(b"edited\n")
    assert _contents(steps.cache) == cached, "editing the output changed the cache"


def test_swap_without_rename_exchange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_mod, "rename_exchange", lambda a, b: False)
    out, new = tmp_path / "out", tmp_path / ".out.tmp-1"
    out.mkdir()
    (out / "old").write_text("old")
    new.mkdir()
    (new / "new").write_text("new")
    swap_in(new, out)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["new"]


def test_stale_scratch_dirs_of_dead_builds_are_cleaned(tmp_path: Path, steps: Steps) -> None:
    parent = tmp_path / "out"
    (parent / ".image.tmp-999999999/oci").mkdir(parents=True)
    (parent / ".image.tmp-1").mkdir()  # pid 1 is alive: not ours to delete
    build(_opts(tmp_path))
    assert sorted(p.name for p in parent.iterdir()) == [".image.tmp-1", "image"]


def test_output_must_be_new_or_an_earlier_build(tmp_path: Path) -> None:
    check_output(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty")
    (tmp_path / "home").mkdir()
    (tmp_path / "home/notes.txt").write_text("mine")
    with pytest.raises(BadInput, match=r"no build\.json"):
        check_output(tmp_path / "home")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput, match="not a directory"):
        check_output(tmp_path / "file")
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier/build.json").write_text("{}")
    check_output(tmp_path / "earlier")
