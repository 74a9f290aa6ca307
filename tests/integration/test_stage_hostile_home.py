"""The boot stage against a hostile user home, on a real root tree with real owners.

A local user (uid 1000) points ~/.ssh/authorized_keys, or ~/.ssh itself, at /etc/shadow,
/root/.ssh or /etc, or hard-links /etc/shadow there, and waits for the next boot: the stage
runner (running as root) must refuse, report the failure, leave the target untouched and
still run the rest of the boot.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from kairos.stages.runner import StageReport, run_stage
from tests.helpers import kairos

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (real owners)")]

PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
sshd:x:100:65534::/run/sshd:/usr/sbin/nologin
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
"""
GROUP = "root:x:0:\ndaemon:x:1:\nshadow:x:42:\nusers:x:100:\nalice:x:1000:\n"
SHADOW = ("root:$6$rootsalt$Qm9vdHBhc3N3b3JkaGFzaA:19700:0:99999:7:::\n"
          "daemon:*:19700:0:99999:7:::\nsshd:!:19700::::::\n"
          "alice:$6$alicesalt$YWxpY2VoYXNo:19700:0:99999:7:::\n")
GSHADOW = "root:*::\ndaemon:*::\nshadow:*::\nusers:*::\nalice:!::\n"
ROOT_KEYS = "ssh-ed25519 AAAAROOT admin@site\n"
SSHD_CONFIG = "PermitRootLogin no\n"
KEY = "ssh-ed25519 AAAANEW alice@laptop"
CLOUD_CONFIG = f"""#cloud-config
write_files:
- path: /etc/motd
  content: welcome
users:
- name: alice
  ssh_authorized_keys:
  - {KEY}
stages:
  boot:
  - name: admin key for alice
    authorized_keys:
      alice: ["ssh-ed25519 AAAAADMIN admin@site"]
  - name: a later step
    hostname: node1
"""


def make_tree(base: Path) -> Path:
    """A Debian-like root: account files with their real modes and owners, root's keys, a
    persistent sshd_config, alice's home owned by alice, the user config in /oem."""
    root = base / "tree"
    etc = root / "etc"
    (etc / "ssh").mkdir(parents=True)
    for name, text, mode, gid in (("passwd", PASSWD, 0o644, 0), ("group", GROUP, 0o644, 0),
                                  ("shadow", SHADOW, 0o640, 42), ("gshadow", GSHADOW, 0o640, 42),
                                  ("ssh/sshd_config", SSHD_CONFIG, 0o644, 0)):
        (etc / name).write_text(text)
        os.chmod(etc / name, mode)
        os.chown(etc / name, 0, gid)
    (etc / "hosts").write_text("127.0.0.1 localhost\n")
    (root / "root/.ssh").mkdir(parents=True, mode=0o700)
    (root / "root/.ssh/authorized_keys").write_text(ROOT_KEYS)
    home = root / "home/alice"
    (home / ".ssh").mkdir(parents=True)
    for path in (home, home / ".ssh"):
        os.chown(path, 1000, 1000)
    (root / "oem").mkdir()
    (root / "oem/90_custom.yaml").write_text(CLOUD_CONFIG)
    return root


def snapshot(path: Path) -> tuple[bytes, int, int, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_ino


def plant(path: Path, target: str) -> None:
    """What the user does: a symlink they own."""
    path.symlink_to(target)
    os.lchown(path, 1000, 1000)


def boot(root: Path) -> StageReport:
    return run_stage("boot", root=root, cmdline="")


def protected(root: Path) -> dict[str, tuple[bytes, int, int, int, int]]:
    return {p: snapshot(root / p) for p in ("etc/shadow", "etc/passwd", "etc/gshadow",
                                            "etc/ssh/sshd_config", "root/.ssh/authorized_keys")}


def assert_refused(report: StageReport, what: str) -> None:
    failed = [r.detail for r in report.failed]
    assert failed and all(what in d for d in failed), failed
    assert all("\n" not in d for d in failed)
    assert any(r.status == "ok" for r in report.results)


def assert_rest_of_boot_ran(root: Path) -> None:
    assert (root / "etc/motd").read_text() == "welcome"  # the same step's other plugins
    assert (root / "etc/hostname").read_text() == "node1\n"  # the steps after it


Plant = Callable[[Path], str]


def link_keys_to_shadow(root: Path) -> str:
    plant(root / "home/alice/.ssh/authorized_keys", "/etc/shadow")
    return "authorized_keys"


def link_keys_to_sshd_config(root: Path) -> str:
    plant(root / "home/alice/.ssh/authorized_keys", "/etc/ssh/sshd_config")
    return "authorized_keys"


def link_ssh_dir_to_root_ssh(root: Path) -> str:
    (root / "home/alice/.ssh").rmdir()
    plant(root / "home/alice/.ssh", "/root/.ssh")
    return ".ssh"


def link_ssh_dir_to_etc(root: Path) -> str:
    (root / "home/alice/.ssh").rmdir()
    plant(root / "home/alice/.ssh", "/etc")
    return ".ssh"


@pytest.mark.parametrize("attack", [link_keys_to_shadow, link_keys_to_sshd_config,
                                    link_ssh_dir_to_root_ssh, link_ssh_dir_to_etc])
def test_planted_link_is_refused_and_reported(tmp_path: Path, attack: Plant) -> None:
    root = make_tree(tmp_path)
    what = attack(root)
    before = protected(root)
    etc_before = (root / "etc").stat()
    report = boot(root)
    assert protected(root) == before
    etc_after = (root / "etc").stat()
    assert (etc_after.st_uid, etc_after.st_mode) == (etc_before.st_uid, etc_before.st_mode)
    assert (root / "root/.ssh").stat().st_uid == 0
    assert not (root / "etc/authorized_keys").exists()
    assert_refused(report, what)
    assert "symbolic link" in report.failed[0].detail
    assert_rest_of_boot_ran(root)


def test_hard_link_to_shadow_is_neither_read_nor_written(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    keys = root / "home/alice/.ssh/authorized_keys"
    os.link(root / "etc/shadow", keys)  # possible where protected_hardlinks is off
    before = protected(root)
    report = boot(root)
    assert protected(root) == before  # content, owner root:shadow, mode 0640, same inode
    assert keys.stat().st_ino == (root / "etc/shadow").stat().st_ino
    # no copy of the hashes landed anywhere the user owns
    for path in (root / "home/alice").rglob("*"):
        if path.is_file() and path.stat().st_ino != keys.stat().st_ino:
            assert b"rootsalt" not in path.read_bytes(), path
    assert_refused(report, "hard links")
    assert_rest_of_boot_ran(root)


def test_clean_home_gets_the_keys_once(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    before = protected(root)
    assert boot(root).ok
    keys = root / "home/alice/.ssh/authorized_keys"
    assert keys.read_text() == f"{KEY}\nssh-ed25519 AAAAADMIN admin@site\n"
    st = keys.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o600)
    assert protected(root) == before
    assert boot(root).ok
    again = keys.stat()
    assert (again.st_ino, again.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)


def test_run_stage_cli_reports_and_boot_goes_on(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    link_keys_to_shadow(root)
    before = protected(root)
    proc = kairos("run-stage", "boot", "--root", str(root), "--cmdline", "", "--json")
    assert proc.returncode == 0  # a bad home never stops a device booting
    report = json.loads(proc.stdout)
    failed = [r for r in report["results"] if r["status"] == "failed"]
    assert failed and all("not followed" in r["detail"] for r in failed)
    assert protected(root) == before
    assert_rest_of_boot_ran(root)
