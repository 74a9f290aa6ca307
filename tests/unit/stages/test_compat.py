"""The real Kairos configs in ../shared/compat/kairos-configs: every step parses into the model,
the invalid documents give a clean error, and the bundled /system/oem steps run against a
scratch root (commands recorded, not run: they are written for a real device)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from kairos.stages import plugins
from kairos.stages.context import Context
from kairos.stages.loader import load_file
from kairos.stages.plugins import datasource
from kairos.stages.runner import run_stage

from .conftest import MACHINE_ID, RecordingShell, make_root

CORPUS = Path(__file__).resolve().parents[4] / "shared" / "compat" / "kairos-configs"
pytestmark = pytest.mark.skipif(not CORPUS.is_dir(),
                                reason=f"compat corpus not found at {CORPUS}")


def corpus_files() -> list[Path]:
    return sorted(CORPUS.rglob("*.yaml")) if CORPUS.is_dir() else []


def test_corpus_is_there() -> None:
    names = {p.parent.name for p in corpus_files()}
    assert {"bundled", "docs", "examples"} <= names


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_step_parses(path: Path) -> None:
    text = path.read_text()
    try:
        yaml.safe_load(text)
        valid = True
    except yaml.YAMLError:
        valid = False
    doc = load_file(path, path.name)
    if not valid:
        # a clean one-line error naming file and line; no steps
        assert len(doc.errors) == 1 and doc.stages == {}
        assert doc.errors[0].startswith(f"{path.name}:")
        assert doc.errors[0].split(":")[1].isdigit()
        return
    assert doc.errors == []
    for warning in doc.warnings:  # the corpus's own typos are reported, not fatal
        assert re.search(r"unknown (key|field) '(systctl|permsisions|enabled|name)' is ignored",
                         warning), warning
    for stage, steps in doc.stages.items():
        for i, step in enumerate(steps):
            assert plugins.validate(step) == [], f"{stage}[{i}]"


@pytest.fixture
def device_root(tmp_path: Path) -> Path:
    root = make_root(tmp_path / "root")
    shutil.copytree(CORPUS / "bundled", root / "system/oem")
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    for name, install in {
        "multi-user.target": "Alias=default.target", "getty@.service": "WantedBy=getty.target",
        "iscsid.service": "WantedBy=multi-user.target", "logrotate.timer":
        "WantedBy=timers.target", "systemd-sysext.service": "WantedBy=sysinit.target",
        "systemd-confext.service": "WantedBy=sysinit.target",
        "systemd-bless-boot.service": "",  # static: no [Install] keys, enabling is a no-op
    }.items():
        (units / name).write_text(f"[Unit]\nDescription={name}\n[Install]\n{install}\n")
    return root


def test_bundled_stages_run_against_a_scratch_root(device_root: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasource, "find_labeled", lambda label: [])
    monkeypatch.setattr(datasource, "cd_drives", lambda: [])
    shell = RecordingShell(device_root)  # every `if` passes, commands are only recorded
    ctx = Context(root=device_root, shell=shell)
    failed: dict[str, list[str]] = {}
    hostnames: dict[str, str] = {}
    for stage in ("rootfs", "initramfs", "fs", "boot", "network"):
        report = run_stage(stage, root=device_root, ctx=ctx)
        assert all("permsisions" in w for w in report.warnings), report.warnings
        failed[stage] = [r.name for r in report.failed]
        hostname = device_root / "etc/hostname"
        hostnames[stage] = hostname.read_text() if hostname.exists() else ""
    # only what needs real hardware fails: no COS_PERSISTENT disk. Finding no datasource
    # media is the usual boot, not a failure.
    assert failed["rootfs"] == ["Rootfs Layout Settings.Grow persistent"]
    assert failed["initramfs"] == failed["fs"] == failed["boot"] == failed["network"] == []

    r = device_root
    # environment: the layout env immucore reads
    layout_env = (r / "run/cos/cos-layout.env").read_text()
    assert 'VOLUMES="LABEL=COS_PERSISTENT:/usr/local"' in layout_env
    assert "/var/lib/kairos /var/log" in layout_env
    assert 'PERSISTENT_STATE_PATHS="/snap /var/snap /var/lib/snapd"' in (
        r / "run/cos/extra-layout.env").read_text()
    # systemctl: mask and enables made as links
    etc = r / "etc/systemd/system"
    assert os.readlink(etc / "systemd-machine-id-commit.service") == "/dev/null"
    assert os.readlink(etc / "purge-kernels.service") == "/dev/null"
    assert (etc / "getty.target.wants/getty@tty1.service").is_symlink()
    assert (etc / "sysinit.target.wants/systemd-sysext.service").is_symlink()
    assert (etc / "default.target").is_symlink()
    assert (etc / "systemd-tpm2-setup.service.d/efi-rw.conf").exists()
    # files, directories
    assert "kairos-agent run-stage boot" in (etc / "cos-setup-boot.service").read_text()
    assert (etc / "kairos-agent.service").stat().st_mode & 0o777 == 0o644
    assert (r / "etc/sudoers").read_text().startswith("Defaults always_set_home")
    assert (r / "var/log/journal").is_dir() and (r / "usr/local/etc").is_dir()
    assert (r / "etc/profile.d/kairos.sh").exists()
    # users and groups (10_accounting)
    passwd = (r / "etc/passwd").read_text()
    assert "kairos:x:1000:1000::/home/kairos:/bin/bash" in passwd
    assert "admin:x:900:kairos" in (r / "etc/group").read_text()
    assert (r / "home/kairos").is_dir()
    # hostname: 31_hosts (initramfs) from the machine id; 50_recovery's `if` passed too (boot)
    assert hostnames["initramfs"] == f"kairos-{MACHINE_ID[:4]}\n"
    assert hostnames["boot"] == "cos-recovery\n"
    # sysctl (09_systemd_services)
    assert (r / "proc/sys/net/core/rmem_max").read_text() == "7500000"
    assert (r / "proc/sys/fs/inotify/max_user_watches").read_text() == "524288"
    # commands went to the shell in order, e.g. the host keys and the agent's enable
    assert any("ssh-keygen -t ed25519" in s for s in shell.scripts)
    assert "systemctl enable kairos-agent" in shell.scripts
