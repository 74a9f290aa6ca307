"""`kairos install` onto a loop device from the default image's slot image, as a live system
would (the slot image is given with --source: this host has no live medium), and the
refusals that must leave every byte of the device as it was."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from kairos.agent.install import minimum_size
from kairos.agent.installer import Request, run_install
from kairos.boot import grubenv
from kairos.disk.blockdev import reread_partitions
from kairos.disk.filesystems import FsTarget
from kairos.disk.gpt import read_gpt
from kairos.disk.loop import loop_device
from kairos.disk.mounts import mount, tempdir
from kairos.disk.sizes import GiB, MiB
from kairos.errors import BadInput
from kairos.run import run
from tests.integration.test_disk_helpers import blkid, cli, debugfs, dump, stat_fields

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices"),
]

CONFIG = """#cloud-config
hostname: installed
users:
- name: kairos
  groups: [admin]
install:
  grub_options:
    extra_cmdline: console=ttyS0
  partitions:
    oem: {size: 96}
  extra-partitions:
  - {name: data, size: 64, fs: ext4, label: DATA}
stages:
  before-install:
  - files:
    - {path: /before-install.txt, content: before}
  after-install:
  - files:
    - {path: /after-install.txt, content: after}
"""
Loop = Callable[[int], Path]
MP = pytest.MonkeyPatch
Cap = pytest.CaptureFixture[str]
LAYOUT = [("bios", None, None), ("efi", "COS_GRUB", "vfat"), ("oem", "COS_OEM", "ext4"),
          ("recovery", "COS_RECOVERY", "ext4"), ("state", "COS_STATE", "ext4"),
          ("data", "DATA", "ext4"), ("persistent", "COS_PERSISTENT", "ext4")]


@pytest.fixture(scope="module")
def slot(default_image: dict[str, object]) -> Path:
    return Path(str(default_image["rootfs"]))


@pytest.fixture
def loop_of(tmp_path: Path) -> Iterator[Loop]:
    """loop_of(size) → a loop device over a new sparse file of that size."""
    made: list[Path] = []
    with contextlib.ExitStack() as stack:

        def make(size: int) -> Path:
            backing = tmp_path / f"device{len(made)}.img"
            made.append(backing)
            with open(backing, "wb") as fh:
                fh.truncate(size)
            return stack.enter_context(loop_device(backing))

        yield make


def digest(dev: Path) -> str:
    """sha256 of what the loop device holds: the data extents of its backing file with their
    offsets (holes read as zeros and are skipped; anything written allocates and shows)."""
    backing = (Path("/sys/block") / dev.name / "loop" / "backing_file").read_text().strip()
    h = hashlib.sha256()
    with open(backing, "rb") as fh:
        fd, end, pos = fh.fileno(), os.fstat(fh.fileno()).st_size, 0
        while pos < end:
            try:
                pos = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            stop = os.lseek(fd, pos, os.SEEK_HOLE)
            h.update(f"{pos}:{stop}".encode())
            fh.seek(pos)
            while pos < stop:
                chunk = fh.read(min(8 * MiB, stop - pos))
                h.update(chunk)
                pos += len(chunk)
    return h.hexdigest()


def root_dir(tmp: Path) -> Path:
    """Where the install collects config and runs its stages (not the host's /)."""
    root = tmp / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc/cmdline").write_text("")
    return root


def big_enough(slot: Path) -> int:
    """The layout's need plus the test config's extra 96 MiB, rounded up to whole GiB."""
    need = minimum_size(slot.stat().st_size, slot.stat().st_size) + 128 * MiB
    return -(-need // GiB) * GiB


def test_install_from_the_slot_image(
        slot: Path, loop_of: Loop, tmp_path: Path, monkeypatch: MP) -> None:
    size = big_enough(slot)
    dev = loop_of(size)
    run(["mkfs.ext4", "-q", "-F", "-L", "OLDJUNK", str(dev)])  # a leftover must not survive
    cc = tmp_path / "cc.yaml"
    cc.write_text(CONFIG)
    root = root_dir(tmp_path)
    rc = cli(monkeypatch, "install", "--device", str(dev), "--source", f"file:{slot}",
             "--cloud-config", str(cc), "--yes", "--config-root", str(root))
    assert rc == 0
    assert "TYPE" not in blkid(dev) and blkid(dev).get("PTTYPE") == "gpt"
    entries = read_gpt(dev)
    assert [e.name for e in entries] == [name for name, _, _ in LAYOUT]
    sizes = {e.name: (e.end_lba - e.start_lba + 1) * 512 for e in entries}
    assert sizes["oem"] == 96 * MiB and sizes["data"] == 64 * MiB
    assert size // 512 - entries[-1].end_lba < 2048 + 34  # persistent takes the rest
    nodes = reread_partitions(dev, len(LAYOUT))
    for number, (_, label, fstype) in enumerate(LAYOUT, start=1):
        found = blkid(nodes[number])
        assert (found.get("LABEL"), found.get("TYPE")) == (label, fstype)
        if fstype == "ext4":
            run(["e2fsck", "-fn", str(nodes[number])])
    # /oem: the config as given, and the GRUB options from install.grub_options
    oem = FsTarget(nodes[3], 0, 0)
    assert dump(oem, "/90_custom.yaml", tmp_path / "cc-back").decode() == CONFIG
    fields = stat_fields(oem, "/90_custom.yaml")
    assert (int(fields["mode"], 8) & 0o7777, fields["uid"]) == (0o640, "0")
    assert grubenv.decode(dump(oem, "/grubenv", tmp_path / "env")) == {
        "extra_cmdline": "console=ttyS0"}
    # the slots: the very bytes of the slot image, and their records
    state = FsTarget(nodes[5], 0, 0)
    active = dump(state, "/cOS/active.img", tmp_path / "active.img")
    assert hashlib.sha256(active).hexdigest() == _sha(slot)
    del active
    assert int(stat_fields(state, "/cOS/passive.img")["size"]) == slot.stat().st_size
    doc = yaml.safe_load(dump(state, "/state.yaml", tmp_path / "state.yaml"))
    assert doc["state"]["active"]["source"] == f"file:{slot.resolve()}"
    assert doc["state"]["active"]["sha256"] == _sha(slot)
    recovery = FsTarget(nodes[4], 0, 0)
    assert int(stat_fields(recovery, "/cOS/recovery.squashfs")["size"]) == slot.stat().st_size
    # the stages ran, around the install
    assert (root / "before-install.txt").read_text() == "before"
    assert (root / "after-install.txt").read_text() == "after"
    # nothing is left mounted or attached from the install
    assert str(dev) not in Path("/proc/self/mountinfo").read_text()


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def test_automatic_install_from_the_collected_config(
        slot: Path, loop_of: Loop, tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    """What the live system's boot service runs: install.auto from the collected config, the
    disk named by a script://, no question asked, the merged config installed to /oem."""
    dev = loop_of(big_enough(slot))
    root = root_dir(tmp_path)
    pick = tmp_path / "pick-disk"
    pick.write_text(f"#!/bin/sh\necho {dev}\n")
    pick.chmod(0o755)
    (root / "oem").mkdir()
    (root / "oem/90_custom.yaml").write_text(
        "#cloud-config\nhostname: auto-node\ninstall:\n  auto: true\n"
        f"  device: script://{pick}\n  source: file:{slot}\n")
    (root / "proc/cmdline").write_text("quiet install.grub_options.extra_cmdline=quiet\n")
    rc = cli(monkeypatch, "install", "--auto", "--config-root", str(root), "--json")
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["device"], result["how"]) == (str(dev), f"{pick} printed {dev}")
    assert (result["source"], result["after"]) == (f"file:{slot}", "")
    assert [p["name"] for p in result["partitions"]][-1] == "persistent"
    nodes = reread_partitions(dev, 6)
    assert [e.name for e in read_gpt(dev)] == ["bios", "efi", "oem", "recovery", "state",
                                               "persistent"]
    oem = FsTarget(nodes[3], 0, 0)
    installed = yaml.safe_load(dump(oem, "/90_custom.yaml", tmp_path / "cc"))
    assert installed["hostname"] == "auto-node"
    assert installed["install"]["device"] == f"script://{pick}"
    assert grubenv.decode(dump(oem, "/grubenv", tmp_path / "env")) == {"extra_cmdline": "quiet"}
    names = {line.split("/")[5] for line in debugfs(oem, "ls -p /").splitlines()
             if line.count("/") >= 6}
    assert names == {".", "..", "lost+found", "grubenv", "90_custom.yaml"}


# ------------------------------------------------------------------------------ refusals

def _refused(monkeypatch: MP, capsys: Cap,
             dev: Path, *args: str) -> str:
    before = digest(dev)
    rc = cli(monkeypatch, "install", "--device", str(dev), *args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert digest(dev) == before
    return err


def test_a_device_in_use_is_refused(
        slot: Path, loop_of: Loop, tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    dev = loop_of(big_enough(slot))
    run(["sgdisk", "--new=1:2048:+16M", str(dev)])
    nodes = reread_partitions(dev, 1)
    # without lazy init and read-only: the mount itself writes nothing the digest would see
    run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
         str(nodes[1])])
    with tempdir() as mnt, mount(nodes[1], mnt, options=["ro"]):
        err = _refused(monkeypatch, capsys, dev, "--source", f"file:{slot}", "--yes",
                       "--config-root", str(root_dir(tmp_path)))
    assert f"{dev} is in use (mounted on {mnt})" in err


def test_a_device_too_small_is_refused(
        slot: Path, loop_of: Loop, tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    dev = loop_of(big_enough(slot) - 2 * GiB)
    with open(dev, "r+b") as fh:  # something to keep: a pattern at the start
        fh.write(os.urandom(MiB))
    err = _refused(monkeypatch, capsys, dev, "--source", f"file:{slot}", "--yes",
                   "--config-root", str(root_dir(tmp_path)))
    assert f"{dev} is too small: " in err and "the layout needs at least" in err


@pytest.mark.parametrize(("config", "message"), [
    ("#cloud-config\nusers:\n- name: kairos\n  groups: admin\n", "users[0].groups"),
    ("#cloud-config\ninstall:\n  partitions:\n    state: {size: 10}\n",
     "install.partitions.state.size is 10 MiB"),
    ("#cloud-config\ninstall:\n  encrypted_partitions: [COS_PERSISTENT]\n",
     "encrypted partitions is not supported yet"),
    ("#cloud-config\nstages:\n  before-install:\n  - files:\n"
     "    - {path: /run/cos/fail_installation, content: stop}\n",
     "a before-install step asked to stop"),
])
def test_a_bad_config_writes_nothing(
        config: str, message: str, slot: Path, loop_of: Loop, tmp_path: Path,
        monkeypatch: MP, capsys: Cap) -> None:
    dev = loop_of(big_enough(slot))
    with open(dev, "r+b") as fh:
        fh.write(os.urandom(MiB))
    cc = tmp_path / "bad.yaml"
    cc.write_text(config)
    before = digest(dev)
    rc = cli(monkeypatch, "install", "--device", str(dev), "--source", f"file:{slot}",
             "--cloud-config", str(cc), "--yes", "--config-root", str(root_dir(tmp_path)))
    err = capsys.readouterr().err
    assert rc in (1, 2) and message in err
    assert digest(dev) == before


def test_without_a_terminal_it_asks_nobody(
        slot: Path, loop_of: Loop, tmp_path: Path, monkeypatch: MP, capsys: Cap) -> None:
    dev = loop_of(big_enough(slot))
    assert stat.S_ISBLK(os.stat(dev).st_mode)
    err = _refused(monkeypatch, capsys, dev, "--source", f"file:{slot}",
                   "--config-root", str(root_dir(tmp_path)))
    assert "without confirmation" in err


def test_the_digest_sees_a_write(loop_of: Loop) -> None:
    """The refusal tests compare digests: one byte written through the device must show."""
    dev = loop_of(64 * MiB)
    before = digest(dev)
    with open(dev, "r+b") as fh:
        fh.seek(40 * MiB)
        fh.write(b"\1")
        fh.flush()
        os.fsync(fh.fileno())
    assert digest(dev) != before


def test_the_plan_is_shown_and_no_means_no(slot: Path, loop_of: Loop, tmp_path: Path,
                                           monkeypatch: MP, capsys: Cap) -> None:
    """On a terminal the plan is shown first; any answer but yes writes nothing."""
    dev = loop_of(big_enough(slot))
    before = digest(dev)
    monkeypatch.setattr(sys, "stdin", io.StringIO("no\n"))
    req = Request(device=str(dev), source=f"file:{slot}", root=root_dir(tmp_path))
    with pytest.raises(BadInput, match="installation cancelled"):
        run_install(req, interactive=True)
    shown = capsys.readouterr().err
    assert f"Install onto {dev} (" in shown and f"EVERYTHING ON {dev} IS ERASED." in shown
    assert f"image:    file:{slot}" in shown
    for name, label, _ in LAYOUT:
        if name != "data":
            assert re.search(rf"\d {name} +{label or '-'} ", shown), name
    assert shown.rstrip().endswith("Type 'yes' to continue:")
    assert digest(dev) == before
