"""The systemctl plugin on an OpenRC system (no systemctl): a clear warning, no failure, and
no systemd links left behind; with systemd present it still works as before."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kairos.stages.context import Context
from kairos.stages.plugins import systemctl

from .conftest import make_root
from .helpers import make_step

UNIT = "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"


def _openrc_root(tmp_path: Path) -> Path:
    root = make_root(tmp_path / "root", systemd=False)
    (root / "sbin").mkdir()
    (root / "sbin/openrc").write_text("")
    return root


def test_openrc_system_skips_with_a_warning(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    root = _openrc_root(tmp_path)
    ctx = Context(root=root, logger=logging.getLogger("kairos.stages.test"), host_commands=True)
    step = make_step(systemctl={"enable": ["kairos-cc-hello"], "start": ["kairos-cc-hello"],
                                "overrides": [{"service": "ssh", "content": "[Service]\n"}]})
    with caplog.at_level(logging.WARNING, logger="kairos.stages.test"):
        systemctl.apply(step, ctx)  # no PluginError: nothing here can do what it asks
    text = caplog.text
    assert "this system runs OpenRC, not systemd" in text
    assert "enable kairos-cc-hello" in text and "start kairos-cc-hello" in text
    assert "rc-update add" in text
    assert not (root / "etc/systemd").exists()


def test_systemd_and_openrc_both_present_still_enable(tmp_path: Path) -> None:
    """Only OpenRC *without* systemctl skips: a tree with both keeps today's behaviour."""
    root = _openrc_root(tmp_path)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/systemctl").write_text("")
    unit_path = root / "usr/lib/systemd/system/hello.service"
    unit_path.parent.mkdir(parents=True)
    unit_path.write_text(UNIT)
    ctx = Context(root=root, logger=logging.getLogger("kairos.stages.test"), host_commands=True)
    systemctl.apply(make_step(systemctl={"enable": ["hello"]}), ctx)
    assert (root / "etc/systemd/system/multi-user.target.wants/hello.service").is_symlink()


def test_systemd_firstboot_on_openrc_is_skipped_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from kairos.stages.plugins import systemd_firstboot
    ctx = Context(root=_openrc_root(tmp_path), logger=logging.getLogger("kairos.stages.test"),
                  host_commands=True)
    with caplog.at_level(logging.WARNING, logger="kairos.stages.test"):
        systemd_firstboot.apply(make_step(systemd_firstboot={"keymap": "us"}), ctx)
    assert "--keymap=us" in caplog.text and "runs OpenRC" in caplog.text


def test_timesyncd_on_openrc_is_skipped_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from kairos.stages.plugins import timesyncd
    root = _openrc_root(tmp_path)
    ctx = Context(root=root, logger=logging.getLogger("kairos.stages.test"), host_commands=True)
    with caplog.at_level(logging.WARNING, logger="kairos.stages.test"):
        timesyncd.apply(make_step(timesyncd={"NTP": "pool.example"}), ctx)
    assert "timesyncd: skipped (NTP=pool.example)" in caplog.text
    assert not (root / "etc/systemd").exists()
