"""`kairos interactive-install` as a person uses it: a real terminal (a detached tmux session),
answers typed with `tmux send-keys`, the screen read with `tmux capture-pane`. The only disk
offered is a loop device (`--device-candidates`), so the host's disks never appear; the slot
image is the default image's, given with --source (this host has no live medium)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from kairos.disk.blockdev import reread_partitions
from kairos.disk.filesystems import FsTarget
from kairos.disk.loop import loop_device
from kairos.stages.sha512crypt import verify
from tests.integration.test_disk_helpers import dump, stat_fields
from tests.integration.test_install_device import big_enough, digest, root_dir
from tests.tmux import ANSWER_TIMEOUT, Pane

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices"),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (scripts/setup)"),
]

PASSWORD = "Corr3ct-horse battery"
DEFAULT_HOSTNAME = "kairos-{{ trunc 4 .MachineID }}"
INSTALL_TIMEOUT = 900.0


Loop = Callable[[int], Path]


@pytest.fixture(scope="module")
def slot(default_image: dict[str, object]) -> Path:
    return Path(str(default_image["rootfs"]))


@pytest.fixture
def loop_of(tmp_path: Path) -> Iterator[Loop]:
    with contextlib.ExitStack() as stack:

        def make(size: int) -> Path:
            backing = tmp_path / "disk.img"
            with open(backing, "wb") as fh:
                fh.truncate(size)
            return stack.enter_context(loop_device(backing))

        yield make


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Pane]:
    p = Pane(f"kairos-test-{uuid.uuid4().hex[:8]}", tmp_path / "exit-code")
    try:
        yield p
    finally:
        with contextlib.suppress(Exception):
            p.tmux("kill-server")  # this test's own server, by its socket


def start(pane: Pane, slot: Path, dev: Path, tmp_path: Path) -> Path:
    """Start the installer; its temporary files go to the directory returned."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    pane.start([sys.executable, "-m", "kairos", "interactive-install", "--source",
                f"file:{slot}", "--device-candidates", str(dev),
                "--config-root", str(root_dir(tmp_path))], tmpdir)
    return tmpdir


def test_installs_with_the_answers_typed(slot: Path, loop_of: Loop, pane: Pane,
                                        tmp_path: Path) -> None:
    dev = loop_of(big_enough(slot))
    start(pane, slot, dev, tmp_path)
    screen = pane.wait_for(f"Disk to install to [{dev}]: ")
    assert re.search(rf"1\) {dev} \(\d+G, loop\): empty", screen), screen
    pane.type("/dev/sda")  # not offered: asked again
    pane.wait_for("'/dev/sda' is not one of the disks listed")
    pane.type("")  # the default: the loop device
    pane.wait_for("User name [kairos]: ")
    pane.type("Bad User")
    pane.wait_for("'Bad User' is not a user name")
    pane.type("")
    pane.wait_for("Login [1]: ")
    pane.type("")  # a password
    pane.wait_for("Password for kairos: ")
    pane.type(PASSWORD)
    pane.wait_for("The same password again: ")
    pane.type("something else")
    pane.wait_for("the two passwords differ")
    pane.wait_for("Password for kairos: ", count=2)
    pane.type(PASSWORD)
    pane.wait_for("The same password again: ", count=2)
    pane.type(PASSWORD)
    pane.wait_for(f"Hostname [{DEFAULT_HOSTNAME}]: ")
    pane.type("node_1")
    pane.wait_for("'node_1' is not a hostname")
    pane.type("node-1")
    plan = pane.wait_for(f"Erase {dev} and install? [y/N]: ")
    for shown in (f"Install onto {dev} (", f"EVERYTHING ON {dev} IS ERASED.",
                  f"image:    file:{slot}", "COS_PERSISTENT", "COS_STATE",
                  "user:     kairos (group admin: sudo)",
                  "login:    password (stored as a SHA-512 hash)", "hostname: node-1"):
        assert shown in plan, plan
    assert PASSWORD not in plan and "something else" not in plan  # never echoed
    pane.type("y")
    assert pane.exit_code(INSTALL_TIMEOUT) == 0, pane.screen()
    assert f"Installed on {dev}" in pane.screen()

    nodes = reread_partitions(dev, 6)
    oem = FsTarget(nodes[3], 0, 0)
    text = dump(oem, "/90_custom.yaml", tmp_path / "installed.yaml").decode()
    assert PASSWORD not in text
    data = yaml.safe_load(text)
    assert data["hostname"] == "node-1"
    [user] = data["users"]
    assert (user["name"], user["groups"]) == ("kairos", ["admin"])
    assert user["passwd"].startswith("$6$") and verify(PASSWORD, user["passwd"])
    fields = stat_fields(oem, "/90_custom.yaml")
    assert (int(fields["mode"], 8) & 0o7777, fields["uid"]) == (0o640, "0")


def test_no_at_the_confirmation_leaves_the_disk_as_it_was(
        slot: Path, loop_of: Loop, pane: Pane, tmp_path: Path) -> None:
    dev = loop_of(big_enough(slot))
    with open(dev, "r+b") as fh:  # something to keep
        fh.write(os.urandom(1 << 20))
    before = digest(dev)
    start(pane, slot, dev, tmp_path)
    pane.wait_for(f"Disk to install to [{dev}]: ")
    pane.type("1")
    pane.wait_for("User name [kairos]: ")
    pane.type("ops")
    pane.wait_for("Login [1]: ")
    pane.type("3")
    pane.wait_for("GitHub user name: ")
    pane.type("-octocat-")
    pane.wait_for("'-octocat-' is not a GitHub user name")
    pane.type("octocat")
    pane.wait_for(f"Hostname [{DEFAULT_HOSTNAME}]: ")
    pane.type("")
    plan = pane.wait_for(f"Erase {dev} and install? [y/N]: ")
    assert "login:    the SSH keys of GitHub user octocat" in plan, plan
    assert f"hostname: {DEFAULT_HOSTNAME}" in plan
    pane.type("")  # the default: No
    assert pane.exit_code(ANSWER_TIMEOUT) == 2
    assert f"installation cancelled: nothing was written to {dev}" in pane.screen()
    assert digest(dev) == before


@pytest.mark.parametrize(("key", "code", "message"), [
    ("C-c", 130, "interrupted: interactive install stopped, nothing was written"),
    ("C-d", 2, "no answer (end of input): interactive install stopped, nothing was written"),
])
def test_ctrl_c_or_end_of_input_stops_with_nothing_written(
        key: str, code: int, message: str, slot: Path, loop_of: Loop, pane: Pane,
        tmp_path: Path) -> None:
    dev = loop_of(big_enough(slot))
    before = digest(dev)
    tmpdir = start(pane, slot, dev, tmp_path)
    pane.wait_for(f"Disk to install to [{dev}]: ")
    pane.type("")
    pane.wait_for("User name [kairos]: ")
    pane.key(key)
    assert pane.exit_code(ANSWER_TIMEOUT) == code
    assert f"kairos: error: {message}" in pane.screen()
    assert digest(dev) == before
    assert list(tmpdir.iterdir()) == []


def test_a_closed_terminal_leaves_no_password_hash_behind(
        slot: Path, loop_of: Loop, pane: Pane, tmp_path: Path) -> None:
    """The terminal goes away (SIGHUP) at the confirmation, when the config with the hash
    is written: the installer stops, removes it, and writes nothing to the disk."""
    dev = loop_of(big_enough(slot))
    before = digest(dev)
    tmpdir = start(pane, slot, dev, tmp_path)
    pane.wait_for(f"Disk to install to [{dev}]: ")
    pane.type("")
    pane.wait_for("User name [kairos]: ")
    pane.type("")
    pane.wait_for("Login [1]: ")
    pane.type("")
    pane.wait_for("Password for kairos: ")
    pane.type(PASSWORD)
    pane.wait_for("The same password again: ")
    pane.type(PASSWORD)
    pane.wait_for("Hostname [")
    pane.type("")
    pane.wait_for(f"Erase {dev} and install? [y/N]: ")
    assert [p.name for p in tmpdir.iterdir()]  # the config is there now
    pane.tmux("kill-server")
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while list(tmpdir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(tmpdir.iterdir()) == []
    assert digest(dev) == before
