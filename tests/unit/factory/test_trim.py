"""`kairos build --modules-exclude/--modules-include/--remove-files`: what goes, what stays
(dependencies, the initrd's modules), depmod afterwards, globs that never leave the tree,
and cache keys that keep trimmed and full builds apart."""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from kairos.artifacts.initrd import WANTED_MODULES
from kairos.cli import build_cmd
from kairos.errors import BadInput
from kairos.factory import build as build_mod
from kairos.factory.bases import BaseSpec
from kairos.factory.build import (
    TRIM_REPORT,
    BuildOptions,
    Context,
    kairosify_key,
    step_kairosify,
    trim_record,
)
from kairos.factory.cache import StepCache, hash_tree, input_key
from kairos.factory.kairosify import PKG_DIR
from kairos.factory.release import Release
from kairos.factory.trim import Trim, TrimReport, expand_glob, match_name, trim_tree

KVER = "6.1.0-kairos-trim-test"  # a name no host has, so a stray write would show
needs_depmod = pytest.mark.skipif(shutil.which("depmod") is None,
                                  reason="depmod (kmod) is not installed")

MODULES = {  # path below the module dir → its dependencies (modules.dep)
    "kernel/drivers/gpu/drm/i915/i915.ko": ["kernel/drivers/gpu/drm/drm_kms_helper.ko",
                                            "kernel/drivers/gpu/drm/drm.ko"],
    "kernel/drivers/gpu/drm/drm_kms_helper.ko": ["kernel/drivers/gpu/drm/drm.ko"],
    "kernel/drivers/gpu/drm/drm.ko": [],
    "kernel/drivers/gpu/drm/amd/amdgpu/amdgpu.ko.xz": ["kernel/drivers/gpu/drm/ttm/ttm.ko",
                                                       "kernel/drivers/gpu/drm/drm.ko"],
    "kernel/drivers/gpu/drm/ttm/ttm.ko": [],
    "kernel/drivers/video/fbdev/simplefb.ko": ["kernel/drivers/gpu/drm/drm.ko"],
    "kernel/sound/core/snd.ko": [],
    "kernel/sound/core/snd-timer.ko": ["kernel/sound/core/snd.ko"],
    "kernel/fs/ext4/ext4.ko": ["kernel/lib/crc16.ko", "kernel/fs/mbcache.ko"],
    "kernel/fs/mbcache.ko": [],
    "kernel/lib/crc16.ko": [],
    "kernel/fs/btrfs/btrfs.ko": [],
    "kernel/lib/zlib_deflate/zlib_deflate.ko": [],
    "updates/dkms/zfs.ko": ["kernel/lib/zlib_deflate/zlib_deflate.ko"],
}
EXCLUDE = ("^drivers/gpu/", "^sound/", "^fs/", "crc16", "zlib")
REMOVED = {"kernel/drivers/gpu/drm/i915/i915.ko", "kernel/drivers/gpu/drm/drm_kms_helper.ko",
           "kernel/sound/core/snd.ko", "kernel/sound/core/snd-timer.ko",
           "kernel/fs/btrfs/btrfs.ko"}


def fake_tree(root: Path, *, lib_link: str = "usr/lib") -> Path:
    """A merged-/usr tree (`lib` a link to `usr/lib`) with one kernel and its modules.dep."""
    moddir = root / "usr/lib/modules" / KVER
    for rel in MODULES:
        (moddir / rel).parent.mkdir(parents=True, exist_ok=True)
        (moddir / rel).write_bytes(b"not really a module: " + rel.encode())
    (moddir / "modules.dep").write_text(
        "".join(f"{rel}: {' '.join(deps)}".rstrip() + "\n" for rel, deps in MODULES.items()))
    (root / "usr/lib/modules/5.10.0-old").mkdir()  # no modules.dep: left alone
    (root / "lib").symlink_to(lib_link)
    return moddir


def _size(moddir: Path, rels: set[str]) -> int:
    return sum((moddir / rel).stat().st_size for rel in rels)


# --- kernel modules ---------------------------------------------------------------------

def test_match_name_is_the_path_below_kernel_without_suffix() -> None:
    assert match_name("kernel/drivers/gpu/drm/i915/i915.ko") == "drivers/gpu/drm/i915/i915"
    assert match_name("kernel/sound/core/snd.ko.zst") == "sound/core/snd"
    assert match_name("kernel/fs/ext4/ext4.ko.xz") == "fs/ext4/ext4"


@needs_depmod
def test_exclude_include_dependencies_and_the_initrd_modules(tmp_path: Path) -> None:
    assert "ext4" in WANTED_MODULES  # the fake kernel's initrd module
    moddir = fake_tree(tmp_path)
    freed = _size(moddir, REMOVED)
    report = trim_tree(tmp_path, Trim(modules_exclude=EXCLUDE, modules_include=("amdgpu",)))
    assert report == TrimReport(modules_removed=len(REMOVED), files_removed=0,
                                bytes_freed=freed)
    left = {rel for rel in MODULES if (moddir / rel).exists()}
    assert left == set(MODULES) - REMOVED
    # drm: excluded, but simplefb (kept) needs it; ttm: needed by amdgpu (included);
    # ext4 + crc16 + mbcache: the initrd's; zlib_deflate: needed by a module outside kernel/.
    for gone in ("sound", "fs/btrfs", "drivers/gpu/drm/i915"):
        assert not (moddir / "kernel" / gone).exists(), "emptied directories are removed"
    assert (moddir / "kernel").is_dir()
    dep = (moddir / "modules.dep").read_text()  # written again by depmod from what is left
    assert "i915" not in dep and "snd" not in dep and "btrfs" not in dep
    assert "kernel/fs/ext4/ext4.ko:" in dep and "kernel/drivers/gpu/drm/drm.ko:" in dep
    assert (moddir / "modules.dep.bin").is_file()
    assert (tmp_path / "usr/lib/modules/5.10.0-old").is_dir()


@needs_depmod
def test_an_absolute_lib_link_stays_inside_the_tree(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    moddir = fake_tree(tree, lib_link="/usr/lib")  # on the host this is the host's /usr/lib
    trim_tree(tree, Trim(modules_exclude=("^sound/",)))
    assert not (moddir / "kernel/sound").exists()
    assert (moddir / "modules.dep.bin").is_file()
    for host in ("/lib/modules", "/usr/lib/modules"):
        assert not (Path(host) / KVER).exists(), "depmod wrote to the build host"


@needs_depmod
def test_an_excluded_module_link_is_removed_not_followed(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    moddir = fake_tree(tree)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret.ko").write_text("host file")
    (moddir / "kernel/drivers/evil.ko").symlink_to(tmp_path / "outside/secret.ko")
    report = trim_tree(tree, Trim(modules_exclude=("evil",)))
    assert report.modules_removed == 1
    assert not (moddir / "kernel/drivers/evil.ko").is_symlink()
    assert (tmp_path / "outside/secret.ko").read_text() == "host file"


def test_without_module_options_nothing_is_touched(tmp_path: Path) -> None:
    moddir = fake_tree(tmp_path)
    before = (moddir / "modules.dep").read_text()
    assert trim_tree(tmp_path, Trim(remove_files=("/usr/share/doc",))) == TrimReport()
    assert (moddir / "modules.dep").read_text() == before
    assert all((moddir / rel).exists() for rel in MODULES)


@pytest.mark.parametrize("option", ["modules_exclude", "modules_include"])
def test_an_invalid_regex_is_bad_input(option: str) -> None:
    with pytest.raises(BadInput) as err:
        Trim(**{option: ("^ok/", "snd[")})  # type: ignore[arg-type]
    assert "snd[" in err.value.message and err.value.exit_code == 2


# --- --remove-files ---------------------------------------------------------------------

def _docs_tree(root: Path) -> Path:
    files = {"usr/share/doc/bash/copyright": b"c" * 100,
             "usr/share/doc/bash/.hidden": b"h" * 3,
             "usr/share/locale/de/LC_MESSAGES/bash.mo": b"m" * 50,
             "usr/share/locale/locale.alias": b"a" * 7,
             "usr/share/man/man1/ls.1.gz": b"l" * 20,
             "usr/share/man/man1/ls.1.txt": b"t" * 1,
             "usr/bin/bash": b"b" * 1000}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "usr/share/doc/bash/changelog").symlink_to("copyright")
    return root


def test_globs_are_expanded_and_removed(tmp_path: Path) -> None:
    tree = _docs_tree(tmp_path / "tree")
    assert expand_glob(tree, "/usr/share/man/man?/*.gz") == [tree / "usr/share/man/man1/ls.1.gz"]
    report = trim_tree(tree, Trim(remove_files=(
        "/usr/share/doc", "/usr/share/locale/*", "/usr/share/man/man?/*.gz", "/no/such/*")))
    # doc: copyright, .hidden, the changelog link; locale: bash.mo, locale.alias; ls.1.gz
    assert report == TrimReport(modules_removed=0, files_removed=6,
                                bytes_freed=100 + 3 + 50 + 7 + 20)
    assert not (tree / "usr/share/doc").exists()
    assert (tree / "usr/share/locale").is_dir() and not any((tree / "usr/share/locale").iterdir())
    assert (tree / "usr/share/man/man1/ls.1.txt").is_file()
    assert (tree / "usr/bin/bash").is_file()


def test_a_planted_link_is_unlinked_and_never_followed(tmp_path: Path) -> None:
    tree = _docs_tree(tmp_path / "tree")
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "keep").write_text("host file")
    (outside / "sub/keep").write_text("host file")
    (tree / "usr/share/evil").symlink_to(outside)  # an absolute link out of the tree
    (tree / "usr/share/rel").symlink_to("../../../outside")
    (tree / "etc").mkdir()
    (tree / "etc/motd").symlink_to(outside / "keep")
    # Through a linked directory: no descent, so nothing matches and the links stay.
    assert expand_glob(tree, "/usr/share/evil/*") == []
    assert expand_glob(tree, "/usr/share/rel/sub") == []
    trim_tree(tree, Trim(remove_files=("/usr/share/evil/*", "/usr/share/rel/*")))
    assert (tree / "usr/share/evil").is_symlink() and (tree / "usr/share/rel").is_symlink()
    report = trim_tree(tree, Trim(remove_files=("/usr/share/evil", "/usr/share/rel",
                                                "/etc/mot*")))
    assert report.files_removed == 3 and report.bytes_freed == 0
    assert not (tree / "usr/share/evil").is_symlink() and not (tree / "etc/motd").is_symlink()
    assert (outside / "keep").read_text() == "host file"
    assert (outside / "sub/keep").read_text() == "host file"


@pytest.mark.parametrize("pattern", ["usr/share/doc", "*", "/usr/../etc", "/usr/share/..",
                                     "/", "//", "/."])
def test_bad_globs_are_bad_input(pattern: str) -> None:
    with pytest.raises(BadInput) as err:
        Trim(remove_files=("/usr/share/doc", pattern))
    assert pattern in err.value.message and err.value.exit_code == 2


def test_top_level_globs_are_allowed(tmp_path: Path) -> None:
    tree = _docs_tree(tmp_path / "tree")
    assert expand_glob(tree, "/us*") == [tree / "usr"]


# --- the build step and its cache -------------------------------------------------------

def _ctx(tmp_path: Path, trim: Trim | None = None) -> Context:
    opts = BuildOptions(base=BaseSpec("debian", "bookworm"), version="1.0.0",
                        output=tmp_path / "out", cache_dir=tmp_path / "cache", init="systemd",
                        trim=trim or Trim())
    return Context(opts, StepCache(opts.cache_dir))


RELEASE = Release(version="v1.0.0", flavor="debian", flavor_release="12")


def test_an_untrimmed_build_keeps_its_key_and_lineage(tmp_path: Path) -> None:
    full = _ctx(tmp_path)
    assert full.lineage == "debian:bookworm systemd"
    assert kairosify_key(full, RELEASE, "k0") == input_key(
        "kairosify", "k0", hash_tree(PKG_DIR), asdict(RELEASE), full.opts.source_date_epoch,
        "systemd"), "the key from before trimming existed: old caches stay valid"
    assert trim_record(full) == {}


def test_a_trim_has_its_own_key_and_lineage(tmp_path: Path) -> None:
    full = _ctx(tmp_path)
    a = _ctx(tmp_path, Trim(modules_exclude=("^sound/", "^drivers/gpu/")))
    a2 = _ctx(tmp_path, Trim(modules_exclude=("^drivers/gpu/", "^sound/")))
    b = _ctx(tmp_path, Trim(remove_files=("/usr/share/doc",)))
    assert a.lineage.startswith("debian:bookworm systemd trim:")
    assert a.lineage == a2.lineage, "order does not matter"
    assert len({full.lineage, a.lineage, b.lineage}) == 3
    keys = {kairosify_key(c, RELEASE, "k0") for c in (full, a, b)}
    assert len(keys) == 3


@needs_depmod
def test_the_step_trims_before_kairosify_and_remembers_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "base"
    moddir = fake_tree(_docs_tree(tree))
    seen: list[bool] = []
    monkeypatch.setattr(build_mod, "_release", lambda ctx, t: RELEASE)
    monkeypatch.setattr(build_mod, "kairosify", lambda root, *a, **k: seen.append(
        (root / "usr/lib/modules" / KVER / "kernel/sound").exists()))
    trim = Trim(modules_exclude=("^sound/",), remove_files=("/usr/share/doc",))
    ctx = _ctx(tmp_path, trim)
    out, key = step_kairosify(ctx, tree, "k0")
    assert seen == [False], "kairosify saw the trimmed tree"
    assert not (out / "usr/share/doc").exists() and (tree / "usr/share/doc").is_dir()
    assert (moddir / "kernel/sound").is_dir(), "the base tree is not trimmed"
    assert ctx.cache.lineage("kairosify", key) == ctx.lineage
    record = trim_record(ctx)
    assert record["modules_exclude"] == ["^sound/"] and record["modules_removed"] == 2
    assert record["files_removed"] == 3  # copyright, .hidden, the changelog link
    assert json.loads((out.parent / TRIM_REPORT).read_text())["modules_removed"] == 2
    ctx.cache.close()
    again = _ctx(tmp_path, trim)
    assert step_kairosify(again, tree, "k0") == (out, key)
    assert again.result_steps["kairosify"] == "cached" and seen == [False]
    assert trim_record(again) == record


# --- the command line -------------------------------------------------------------------

def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    build_cmd.register(parser.add_subparsers())
    return parser.parse_args(["build", *argv])


def test_cli_options_are_repeatable() -> None:
    args = _parse("--modules-exclude", "^sound/", "--modules-exclude", "^drivers/gpu/",
                  "--modules-include", "snd_hda", "--remove-files", "/usr/share/doc",
                  "--remove-files", "/usr/share/locale/*")
    assert build_cmd.trim_options(args) == Trim(
        modules_exclude=("^sound/", "^drivers/gpu/"), modules_include=("snd_hda",),
        remove_files=("/usr/share/doc", "/usr/share/locale/*"))
    assert build_cmd.trim_options(_parse()).empty
    with pytest.raises(BadInput):
        build_cmd.trim_options(_parse("--remove-files", "usr/share/doc"))
