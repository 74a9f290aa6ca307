"""The upgrade's pure parts: sources, phases, space arithmetic, slot-file checks, copies."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from kairos.agent import slotfile
from kairos.agent.fetch import SLOT_SLACK, check_tree, need_space, slot_need, tree_bytes
from kairos.agent.phases import MARK, PHASES, Phases
from kairos.agent.upgradesource import UpgradeOptions, check_arch, device_arch, parse_source
from kairos.artifacts.rootfs import squashfs_compression
from kairos.errors import BadInput


def test_sources_parse_with_kairos_spellings(tmp_path: Path) -> None:
    f = tmp_path / "slot.img"
    f.write_bytes(b"x")
    assert str(parse_source("oci:reg.example:5000/kairos/core:v2")) == \
        "oci:reg.example:5000/kairos/core:v2"
    assert parse_source("docker:reg.example/k:v1").kind == "oci"
    assert parse_source("oci://reg.example/k:v1").value == "reg.example/k:v1"
    assert parse_source(f"file:{f}").path == f
    assert parse_source(f"dir://{tmp_path}").kind == "dir"


@pytest.mark.parametrize("text, words", [
    ("reg.example/k:v1", "KIND:VALUE"),
    ("ftp:/x", "KIND:VALUE"),
    ("oci:", "names nothing"),
    ("oci:kairos/core:v2", "names no registry"),
    ("oci:reg.example/K:v1", "invalid repository"),
    ("file:relative.img", "not absolute"),
    ("file:/does/not/exist", "does not exist"),
    ("dir:/does/not/exist", "does not exist"),
])
def test_bad_sources_are_refused(text: str, words: str) -> None:
    with pytest.raises(BadInput, match=words):
        parse_source(text)


def test_arch_mismatch_is_refused() -> None:
    assert device_arch(lambda: "x86_64") == "amd64"
    assert device_arch(lambda: "aarch64") == "arm64"
    check_arch("amd64", "amd64", "the image")
    check_arch("", "amd64", "the image")  # unknown: the manifest check already ran
    with pytest.raises(BadInput, match="for arm64, this device is amd64"):
        check_arch("arm64", "amd64", "the image")


def test_phases_mark_once_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    phases = Phases(kmsg=None)
    for name in ("start", "preflight", "start", "done"):
        phases.mark(name)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{MARK} start", f"{MARK} preflight", f"{MARK} done"]
    assert list(phases.times) == ["start", "preflight", "done"]


def test_unknown_pause_phase_is_refused() -> None:
    with pytest.raises(BadInput, match="unknown phase"):
        Phases("slot-writting", kmsg=None)
    assert Phases("all", kmsg=None).pause == set(PHASES)


def test_step_mode_waits_for_sigusr1(tmp_path: Path) -> None:
    """A stepping upgrade holds at each phase until SIGUSR1, then goes on."""
    src = str(Path("src").resolve())
    code = (f"import sys; sys.path.insert(0, {src!r})\n"
            "from kairos.agent.phases import Phases\n"
            "p = Phases('start,done', step=True, kmsg=None)\n"
            "p.mark('start'); p.mark('preflight'); p.mark('done')\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line.strip())
        if "paused at" in line:
            proc.send_signal(10)  # SIGUSR1
    assert proc.wait(30) == 0
    assert seen == [f"{MARK} start", "kairos-upgrade: paused at start (SIGUSR1 goes on)",
                    f"{MARK} preflight", f"{MARK} done",
                    "kairos-upgrade: paused at done (SIGUSR1 goes on)"]


def test_verify_needs_a_key(tmp_path: Path) -> None:
    src = parse_source("oci:reg.example/k:v1")
    with pytest.raises(BadInput, match="no public key"):
        UpgradeOptions(src, verify=True)
    with pytest.raises(BadInput, match="compression"):
        UpgradeOptions(src, compression="zstd")


def test_space_error_names_both_numbers(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as err:
        need_space(tmp_path, "COS_STATE", 1 << 60, "the new slot image", "free something")
    assert "COS_STATE" in err.value.message
    assert "MiB free" in err.value.message and "needs 1099511627776 MiB" in err.value.message
    assert err.value.hint == "free something"


def test_slot_need_covers_the_tree_and_the_configured_size() -> None:
    assert slot_need(100 << 20, 0) == 100 << 20
    assert slot_need(1 << 20, 500) == 500 << 20


def test_tree_bytes_bounds_the_squashfs(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path / "t")
    (tree / "big").write_bytes(os.urandom(1 << 20))
    os.link(tree / "big", tree / "big-link")  # stored once
    (tree / "same").write_bytes((tree / "big").read_bytes())  # deduplicated by mksquashfs
    bound = tree_bytes(tree)
    assert bound < (2 << 20) + SLOT_SLACK + 4096
    out = tmp_path / "slot.sqfs"
    subprocess.run(["mksquashfs", str(tree), str(out), "-noappend", "-no-progress", "-noI",
                    "-noD", "-noF", "-noX", "-no-duplicates"], check=True, capture_output=True)
    assert out.stat().st_size <= bound


def _fake_tree(root: Path, arch: str = "amd64") -> Path:
    for rel, data in (("etc/kairos-release", f'KAIROS_VERSION="v2"\nKAIROS_ARCH="{arch}"\n'),
                      ("boot/vmlinuz", "k"), ("boot/initrd", "i"),
                      ("usr/lib/kairos/early-init", "#!/bin/sh\n")):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(data)
    return root


def test_check_tree_wants_a_kairos_image(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path / "t")
    assert check_tree(tree, "amd64")["KAIROS_VERSION"] == "v2"
    assert tree_bytes(tree) > 0
    with pytest.raises(BadInput, match="for arm64"):
        check_tree(_fake_tree(tmp_path / "a", "arm64"), "amd64")
    (tree / "boot/initrd").unlink()
    with pytest.raises(BadInput, match="no /boot/initrd"):
        check_tree(tree, "amd64")
    (tree / "etc/kairos-release").unlink()
    with pytest.raises(BadInput, match="not a Kairos image"):
        check_tree(tree, "amd64")


def test_squashfs_compression_is_read_from_the_superblock(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path / "t")
    for comp, args in (("none", ["-noI", "-noD", "-noF", "-noX"]), ("xz", ["-comp", "xz"]),
                       ("gzip", [])):
        out = tmp_path / f"{comp}.sqfs"
        subprocess.run(["mksquashfs", str(tree), str(out), "-noappend", "-no-progress", *args],
                       check=True, capture_output=True)
        assert squashfs_compression(out) == comp
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 200)
    with pytest.raises(BadInput, match="not a squashfs"):
        squashfs_compression(junk)


def test_copy_file_hashes_and_syncs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = os.urandom(3 << 20) + b"tail"
    src.write_bytes(data)
    seen: list[int] = []
    got = slotfile.copy_file(src, tmp_path / "dest", progress=seen.append)
    assert got == slotfile.Sums(zlib.crc32(data))
    assert (tmp_path / "dest").read_bytes() == data
    assert seen[-1] == len(data)
    assert slotfile.hash_on_disk(tmp_path / "dest") == slotfile.Sums(
        zlib.crc32(data), hashlib.sha256(data).hexdigest())
    (tmp_path / "dest").write_bytes(data[:-1] + b"X")  # what a failing disk would give back
    assert slotfile.hash_on_disk(tmp_path / "dest").crc32 != got.crc32


def test_exchange_swaps_names(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("A")
    b.write_text("B")
    ino_a = a.stat().st_ino
    slotfile.exchange(a, b)
    assert (a.read_text(), b.read_text()) == ("B", "A")
    assert b.stat().st_ino == ino_a
