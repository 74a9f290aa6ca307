"""Shared fixtures: a scratch system root and a Context acting on it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kairos.run import Result
from kairos.stages.context import Context, Shell

PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
GROUP = """root:x:0:
daemon:x:1:
users:x:100:
nogroup:x:65534:
"""
SHADOW = """root:*:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
"""
GSHADOW = """root:*::
daemon:*::
users:*::
nogroup:*::
"""
OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
ID=debian
"""
MACHINE_ID = "0123456789abcdef0123456789abcdef"


def make_root(root: Path, *, systemd: bool = True) -> Path:
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text(PASSWD)
    (etc / "group").write_text(GROUP)
    (etc / "shadow").write_text(SHADOW)
    (etc / "shadow").chmod(0o640)
    (etc / "gshadow").write_text(GSHADOW)
    (etc / "os-release").write_text(OS_RELEASE)
    (etc / "machine-id").write_text(MACHINE_ID + "\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    (etc / "skel").mkdir()
    (etc / "skel" / ".bashrc").write_text("# skel\n")
    if systemd:
        (root / "usr/bin").mkdir(parents=True)
        (root / "usr/bin/systemctl").write_text("")
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path / "root")


@pytest.fixture
def ctx(root: Path) -> Context:
    return Context(root=root, logger=logging.getLogger("kairos.stages.test"), host_commands=True)


class RecordingShell(Shell):
    """Records scripts instead of running them (for steps written for a real device)."""

    def __init__(self, root: Path, returncode: int = 0) -> None:
        super().__init__(root, {})
        self.scripts: list[str] = []
        self.returncode = returncode

    def run(self, script: str) -> Result:
        self.scripts.append(script)
        return Result(["/bin/sh", "-c", script], self.returncode, "", "")
