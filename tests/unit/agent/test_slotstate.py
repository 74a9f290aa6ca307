"""Slot records (state.yaml): Kairos's shape, round trip, and the truth about every file after a
power cut between any two renames of an upgrade (records are matched by inode and size)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import yaml

from kairos.agent import slotstate as ss
from kairos.safefs import rename_exchange

FILES = {"active": "cOS/active.img", "passive": "cOS/passive.img"}


def rec(name: str, size: int = 0, inode: int = 0, digest: str = "") -> ss.ImageRecord:
    return ss.ImageRecord(source=f"oci:registry.example/kairos/os:{name}", digest=digest,
                          sha256=f"sha-{name}", size=size, version=name, arch="amd64",
                          date="2025-06-01T10:00:00Z", inode=inode)


def slot(part: Path, name: str, content: bytes) -> Path:
    path = part / "cOS" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def recorded(part: Path, name: str, version: str) -> ss.ImageRecord:
    return ss.record_file(part / "cOS" / name, source=f"file:/{version}", digest="",
                          sha256=f"sha-{version}", version=version, arch="amd64",
                          date="2025-06-01T10:00:00Z")


def versions(part: Path, files: dict[str, str] = FILES) -> dict[str, str | None]:
    return {role: r.version if r else None for role, r in ss.resolve(part, files).items()}


def test_record_file_takes_size_and_inode_from_stat(tmp_path: Path) -> None:
    path = slot(tmp_path, "active.img", b"x" * 1234)
    r = ss.record_file(path, source="file:/x", digest="", sha256="s", version="v1",
                       arch="amd64", date="d", size=1, inode=1)
    assert (r.size, r.inode) == (1234, os.stat(path).st_ino)


def test_round_trip_and_kairos_shape(tmp_path: Path) -> None:
    active = rec("v2.0.0", 100, 12, digest="sha256:" + "a" * 64)
    passive = rec("v1.0.0", 90, 13)
    kept = rec("v0.9.0", 80, 14)
    ss.save(tmp_path, "COS_STATE", {"active": active, "passive": passive}, [kept, passive])
    assert ss.load(tmp_path) == [active, passive, kept]  # passive is not kept twice

    path = tmp_path / ss.STATE_FILE
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [ss.STATE_FILE]  # no temp file left
    doc = yaml.safe_load(path.read_text())
    assert list(doc) == ["date", "state"]
    assert doc["date"].endswith("Z")
    state = doc["state"]
    assert list(state) == ["label", "active", "passive", "kept"]
    assert state["label"] == "COS_STATE"
    # Kairos's (elemental's InstallState) keys first, then ours.
    assert state["active"] == {
        "source": "oci:registry.example/kairos/os:v2.0.0",
        "source-metadata": {"digest": "sha256:" + "a" * 64},
        "label": "COS_ACTIVE", "fs": "squashfs", "version": "v2.0.0", "arch": "amd64",
        "sha256": "sha-v2.0.0", "size": 100, "inode": 12, "date": "2025-06-01T10:00:00Z"}
    assert state["passive"]["label"] == "COS_PASSIVE"
    assert "source-metadata" not in state["passive"]  # no digest: omitted, as Kairos does
    assert "label" not in state["kept"][0]  # a kept image has no role


def test_save_replaces_only_its_own_section(tmp_path: Path) -> None:
    ss.save(tmp_path, "COS_RECOVERY", {"recovery": rec("r1", 5, 20)})
    ss.save(tmp_path, "COS_STATE", {"active": rec("a1", 6, 21)})
    ss.save(tmp_path, "COS_STATE", {"active": rec("a2", 7, 22)})
    doc = yaml.safe_load((tmp_path / ss.STATE_FILE).read_text())
    assert list(doc) == ["date", "recovery", "state"]
    assert doc["recovery"]["recovery"]["label"] == "COS_SYSTEM"
    assert doc["recovery"]["label"] == "COS_RECOVERY"
    assert [r.version for r in ss.load(tmp_path)] == ["r1", "a2"]


def test_upgrade_booted_from_active_cut_between_every_step(tmp_path: Path) -> None:
    """transition.img → passive.img, then one RENAME_EXCHANGE of passive.img and active.img;
    records written once, before the first rename. At every step, each file's record is the
    record of the image it holds."""
    part = tmp_path
    slot(part, "active.img", b"A" * 3000)
    slot(part, "passive.img", b"P" * 2000)
    # Install-time records: no inode (written into an unmounted filesystem).
    install = {"active": recorded(part, "active.img", "v1-active"),
               "passive": recorded(part, "passive.img", "v0-passive")}
    for r in install.values():
        r.inode = 0
    ss.save(part, "COS_STATE", install)
    assert versions(part) == {"active": "v1-active", "passive": "v0-passive"}

    # The upgrade: write transition.img, read the current records, save, then rename.
    slot(part, "transition.img", b"T" * 4000)
    new = recorded(part, "transition.img", "v2-new")
    current = ss.resolve(part, FILES)
    assert current["active"] is not None and current["passive"] is not None
    assert current["active"].inode == os.stat(part / "cOS/active.img").st_ino  # filled in
    ss.save(part, "COS_STATE", {"active": new, "passive": current["active"]},
            [current["passive"]])
    # cut 1: records written, nothing renamed yet — the files still hold the old images.
    assert versions(part) == {"active": "v1-active", "passive": "v0-passive"}

    os.rename(part / "cOS/transition.img", part / "cOS/passive.img")
    # cut 2: the new image is passive.img, the old active still active.img.
    assert versions(part) == {"active": "v1-active", "passive": "v2-new"}

    if not rename_exchange(part / "cOS/passive.img", part / "cOS/active.img"):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    # done: the new image is active, the old active is passive.
    assert versions(part) == {"active": "v2-new", "passive": "v1-active"}

    # The next upgrade (after a reboot) starts from the truth too.
    after = ss.resolve(part, FILES)
    assert after["active"] == new and after["passive"] == current["active"]


def test_upgrade_booted_from_passive(tmp_path: Path) -> None:
    """Booted from passive, the passive image is the known-good one: transition.img →
    active.img replaces the active image and nothing else."""
    part = tmp_path
    slot(part, "active.img", b"X" * 1000)
    slot(part, "passive.img", b"Y" * 1000)  # same size: only the inode tells them apart
    ss.save(part, "COS_STATE", {"active": recorded(part, "active.img", "bad"),
                                "passive": recorded(part, "passive.img", "good")})
    slot(part, "transition.img", b"Z" * 1000)
    new = recorded(part, "transition.img", "new")
    current = ss.resolve(part, FILES)
    ss.save(part, "COS_STATE", {"active": new, "passive": current["passive"]},
            [current["active"]])
    assert versions(part) == {"active": "bad", "passive": "good"}  # cut before the rename
    os.rename(part / "cOS/transition.img", part / "cOS/active.img")
    assert versions(part) == {"active": "new", "passive": "good"}


def test_inode_zero_matches_its_own_role_by_size(tmp_path: Path) -> None:
    slot(tmp_path, "active.img", b"a" * 100)
    slot(tmp_path, "passive.img", b"p" * 200)
    ss.save(tmp_path, "COS_STATE", {"active": rec("a", 100), "passive": rec("p", 999)})
    got = ss.resolve(tmp_path, FILES)
    assert got["active"] is not None and got["active"].version == "a"
    assert got["active"].inode == os.stat(tmp_path / "cOS/active.img").st_ino
    assert got["passive"] is None  # the size says it is not that image
    # An inode-0 record never matches another role's file.
    ss.save(tmp_path, "COS_STATE", {"passive": rec("p", 100)})
    assert versions(tmp_path) == {"active": None, "passive": None}


def test_missing_files_and_no_state_file(tmp_path: Path) -> None:
    assert ss.load(tmp_path) == []
    assert ss.resolve(tmp_path, FILES) == {"active": None, "passive": None}
    slot(tmp_path, "active.img", b"a")
    assert ss.resolve(tmp_path, FILES) == {"active": None, "passive": None}
    # A link is not a slot file.
    (tmp_path / "cOS/passive.img").symlink_to("active.img")
    ss.save(tmp_path, "COS_STATE", {"passive": recorded(tmp_path, "active.img", "a")})
    assert ss.resolve(tmp_path, FILES)["passive"] is None


def test_records_of_another_partition_are_not_matched(tmp_path: Path) -> None:
    """Inode numbers are per filesystem: a recovery file must not take the record of a
    COS_STATE file that happens to have the same inode number and size."""
    path = slot(tmp_path, "recovery.squashfs", b"r" * 500)
    ino = os.stat(path).st_ino
    ss.save(tmp_path, "COS_STATE", {"active": rec("state-image", 500, ino)})
    assert ss.resolve(tmp_path, {"recovery": "cOS/recovery.squashfs"}) == {"recovery": None}
    ss.save(tmp_path, "COS_RECOVERY", {"recovery": rec("recovery-image", 500, ino)})
    assert versions(tmp_path, {"recovery": "cOS/recovery.squashfs"}) == {
        "recovery": "recovery-image"}


@pytest.mark.parametrize("text", [
    "{{{ not yaml", "- a list\n- of things\n", "just a string\n", "\x00\x01binary",
])
def test_a_bad_file_is_ignored_with_a_warning(tmp_path: Path, text: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    slot(tmp_path, "active.img", b"a" * 10)
    (tmp_path / ss.STATE_FILE).write_text(text)
    with caplog.at_level(logging.WARNING, logger="kairos.slotstate"):
        assert ss.load(tmp_path) == []
        assert ss.resolve(tmp_path, FILES) == {"active": None, "passive": None}
    assert "slot records ignored" in caplog.text
    # Saving over a bad file works and starts afresh.
    ss.save(tmp_path, "COS_STATE", {"active": recorded(tmp_path, "active.img", "v1")})
    assert versions(tmp_path)["active"] == "v1"


def test_a_bad_record_is_skipped_the_others_kept(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / ss.STATE_FILE).write_text(
        "date: x\nstate:\n  label: COS_STATE\n  active: {source: a, size: lots}\n"
        "  passive: {source: b, size: 3, inode: 4, version: v3}\n  odd: 5\n"
        "  kept: not-a-list\nrecovery: [1, 2]\n")
    with caplog.at_level(logging.WARNING, logger="kairos.slotstate"):
        got = ss.load(tmp_path)
    assert [(r.source, r.size, r.inode, r.version, r.digest) for r in got] == [
        ("b", 3, 4, "v3", "")]
    assert "not a number: 'lots'" in caplog.text


def test_an_unreadable_state_file_is_no_records(tmp_path: Path) -> None:
    (tmp_path / ss.STATE_FILE).mkdir()  # reading it fails (EISDIR)
    assert ss.load(tmp_path) == []


def test_debugfs_listing() -> None:
    out = ("/2/040755/0/0/./4096/\n/2/040755/0/0/../4096/\n"
           "/12/100644/0/0/active.img/4096000/\n/13/100644/0/0/passive.img/4096000/\n"
           "/14/120777/0/0/link/6/\n")
    assert ss.parse_debugfs_ls(out) == {"active.img": (12, 4096000),
                                        "passive.img": (13, 4096000)}
