from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from kairos.run import Result
from kairos.stages.context import Context, Failures, PluginError
from kairos.stages.plugins import systemctl

from .helpers import make_step

UNIT = "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n[Install]\n"


def unit(root: Path, name: str, install: str, where: str = "usr/lib/systemd/system") -> None:
    path = root / where / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(UNIT + install)


def link(root: Path, rel: str) -> str:
    return os.readlink(root / "etc/systemd/system" / rel)


def test_enable_creates_wants_links_and_aliases(ctx: Context) -> None:
    unit(ctx.root, "kairos-agent.service", "WantedBy=multi-user.target\nAlias=agent.service\n")
    unit(ctx.root, "logrotate.timer", "WantedBy=timers.target\nAlso=logrotate.service\n")
    unit(ctx.root, "logrotate.service", "RequiredBy=basic.target\n")
    unit(ctx.root, "getty@.service", "WantedBy=getty.target\nDefaultInstance=tty1\n")
    step = make_step(systemctl={"enable": ["kairos-agent", "logrotate.timer", "getty@tty2",
                                           "getty@.service"]})
    systemctl.apply(step, ctx)
    systemctl.apply(step, ctx)  # again: nothing changes, nothing fails
    assert link(ctx.root, "multi-user.target.wants/kairos-agent.service") == \
        "/usr/lib/systemd/system/kairos-agent.service"
    assert link(ctx.root, "agent.service") == "/usr/lib/systemd/system/kairos-agent.service"
    assert link(ctx.root, "timers.target.wants/logrotate.timer").endswith("logrotate.timer")
    assert link(ctx.root, "basic.target.requires/logrotate.service").endswith(
        "logrotate.service")
    assert link(ctx.root, "getty.target.wants/getty@tty2.service") == \
        "/usr/lib/systemd/system/getty@.service"
    assert link(ctx.root, "getty.target.wants/getty@tty1.service").endswith("getty@.service")


def test_unit_in_etc_and_missing_unit(ctx: Context) -> None:
    unit(ctx.root, "cos-setup-boot.service", "WantedBy=multi-user.target\n",
         where="etc/systemd/system")
    with pytest.raises(PluginError, match=r"unit file nope\.service does not exist"):
        systemctl.apply(make_step(systemctl={"enable": ["nope", "cos-setup-boot"]}), ctx)
    assert link(ctx.root, "multi-user.target.wants/cos-setup-boot.service") == \
        "/etc/systemd/system/cos-setup-boot.service"


def test_disable_mask_and_start_offline(ctx: Context) -> None:
    unit(ctx.root, "crond.service", "WantedBy=multi-user.target\nAlias=cron.service\n")
    systemctl.apply(make_step(systemctl={"enable": ["crond"]}), ctx)
    systemctl.apply(make_step(systemctl={"disable": ["crond"], "mask": ["purge-kernels"],
                                         "start": ["crond"]}), ctx)
    assert not (ctx.root / "etc/systemd/system/multi-user.target.wants/crond.service").exists()
    assert not (ctx.root / "etc/systemd/system/cron.service").is_symlink()
    assert link(ctx.root, "purge-kernels.service") == "/dev/null"
    with pytest.raises(PluginError, match="masked"):
        systemctl.apply(make_step(systemctl={"enable": ["purge-kernels"]}), ctx)


def test_overrides(ctx: Context) -> None:
    systemctl.apply(make_step(systemctl={"overrides": [
        {"service": "systemd-tpm2-setup", "name": "efi-rw", "content": "[Service]\nX=1\n"},
        {"service": "foo.service", "content": "[Unit]\n"},
        {"service": "empty", "content": ""}]}), ctx)
    d = ctx.root / "etc/systemd/system"
    assert (d / "systemd-tpm2-setup.service.d/efi-rw.conf").read_text() == "[Service]\nX=1\n"
    assert (d / "foo.service.d/override-yip.conf").read_text() == "[Unit]\n"
    assert not (d / "empty.service.d").exists()


def test_target_without_install_section_is_fine(ctx: Context) -> None:
    (ctx.root / "usr/lib/systemd/system").mkdir(parents=True)
    (ctx.root / "usr/lib/systemd/system/multi-user.target").write_text("[Unit]\n")
    systemctl.apply(make_step(systemctl={"enable": ["multi-user.target"]}), ctx)


class FakeSystemd:
    """Records systemctl argv; units in `stale` report NeedDaemonReload=yes, `missing` fail."""

    def __init__(self, stale: tuple[str, ...] = (), missing: tuple[str, ...] = ()) -> None:
        self.calls: list[list[str]] = []
        self.stale, self.missing = stale, missing

    def __call__(self, argv: list[str]) -> Result:
        self.calls.append(argv)
        units = [a for a in argv if a.endswith(".service")]
        if argv[0] == "show":
            return Result(argv, 0, "".join("yes\n" if u in self.stale else "no\n"
                                           for u in units), "")
        bad = [u for u in units if u in self.missing]
        return Result(argv, 1 if bad else 0, "", f"Unit {bad[0]} not found." if bad else "")


def live(payload: dict[str, object], fake: FakeSystemd) -> Failures:
    failures = Failures("systemctl", logging.getLogger("test"))
    systemctl.apply_live(systemctl.parse(make_step(systemctl=payload)), failures, fake)
    return failures


def test_live_enable_and_start_a_new_unit_needs_no_reload() -> None:
    fake = FakeSystemd()
    assert live({"enable": ["hello", "other"], "start": ["hello"]}, fake).messages == []
    assert fake.calls == [
        ["--no-reload", "enable", "hello.service", "other.service"],
        ["show", "--property=NeedDaemonReload", "--value", "hello.service"],
        ["start", "hello.service"]]


def test_live_start_of_a_changed_unit_reloads_first() -> None:
    fake = FakeSystemd(stale=("hello.service",))
    live({"start": ["hello", "other"]}, fake)
    assert fake.calls[1:] == [["daemon-reload"], ["start", "hello.service", "other.service"]]


@pytest.mark.parametrize("payload", [{"mask": ["x"], "start": ["y"]}, {"disable": ["x"]},
                                     {"overrides": [{"service": "x", "content": "[Unit]\n"}]}])
def test_live_masks_disables_and_overrides_reload(payload: dict[str, object]) -> None:
    fake = FakeSystemd()
    live(payload, fake)
    assert ["daemon-reload"] in fake.calls
    assert not [c for c in fake.calls if c[0] == "show"]


def test_live_batch_failure_names_each_failing_unit_and_does_the_rest() -> None:
    fake = FakeSystemd(missing=("nope.service",))
    failures = live({"enable": ["a", "nope", "b"]}, fake)
    assert fake.calls[1:] == [["--no-reload", "enable", u] for u in
                              ("a.service", "nope.service", "b.service")]
    assert len(failures.messages) == 1 and "nope.service" in failures.messages[0]
