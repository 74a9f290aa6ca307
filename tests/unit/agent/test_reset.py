"""`kairos reset`'s parts without root: boot checks, step markers and pauses, the grubenv pin,
the OEM wipe, the flags, the options from CLI and cloud-config. Whole resets on ext4 loop
partitions (slots, COS_PERSISTENT, cuts after every step) are in
tests/integration/test_rollback_reset_host.py."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kairos.agent import reset, slotfile
from kairos.agent.reset import ResetOptions, ResetResult, ResetTargets, Steps
from kairos.agent.upgradesource import UpgradeSource
from kairos.boot import assessment, grubenv
from kairos.boot.assessment import Flags
from kairos.cli import reset_cmd
from kairos.config.collect import MergedConfig
from kairos.errors import BadInput

NEW = "b" * 32


@pytest.fixture(autouse=True)
def _no_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slotfile, "checkpoint", lambda path: "sync")


def make_run(tmp_path: Path, boot: str = "recovery", **opts: object) -> reset._Run:
    state, recovery, oem = tmp_path / "state", tmp_path / "recovery", tmp_path / "oem"
    for d in (state / "cOS", recovery / "cOS", oem):
        d.mkdir(parents=True, exist_ok=True)
    targets = ResetTargets(state, recovery, boot, oem_dir=oem, lock_dir=tmp_path / "run")
    options = ResetOptions(arch="amd64", **opts)  # type: ignore[arg-type]
    return reset._Run(options, targets, Steps(), ResetResult("x", boot))


# -- boot ------------------------------------------------------------------------------------


@pytest.mark.parametrize("boot, unattended, ok", [
    ("recovery", False, True), ("recovery", True, True),
    ("autoreset", True, True), ("autoreset", False, False),
    ("active", False, False), ("active", True, False), ("passive", True, False),
    ("livecd", True, False), ("unknown", True, False),
])
def test_only_the_recovery_image_resets(boot: str, unattended: bool, ok: bool) -> None:
    if ok:
        reset.check_boot(boot, unattended)
        return
    with pytest.raises(BadInput) as err:
        reset.check_boot(boot, unattended)
    assert err.value.hint and "\n" not in err.value.message


def test_refusals_come_before_anything_is_written(tmp_path: Path) -> None:
    run = make_run(tmp_path, "active")
    grubenv.write(tmp_path / "oem/grubenv", {"saved_entry": "cos"})
    before = (tmp_path / "oem/grubenv").read_bytes()
    with pytest.raises(BadInput, match="not the recovery image"):
        reset.reset(run.opts, run.targets, Steps())
    assert (tmp_path / "oem/grubenv").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "state").rglob("*")) == ["cOS"]


def test_missing_recovery_image_is_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    with pytest.raises(BadInput, match="no recovery image"):
        reset.preflight(run)


def test_a_recovery_image_that_fails_its_checks_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path)
    run.targets.recovery_image.write_bytes(b"not a squashfs")

    def check(path: Path, arch: str) -> dict[str, str]:
        raise BadInput(f"{path} has no /etc/kairos-release", "use a Kairos image")

    monkeypatch.setattr(reset, "check_slot_file", check)
    with pytest.raises(BadInput, match="recovery image fails its checks"):
        reset.preflight(run)


def test_a_tree_source_needs_persistent_scratch(tmp_path: Path) -> None:
    run = make_run(tmp_path, source=UpgradeSource("oci", "reg.example/k:v1"))
    with pytest.raises(BadInput, match="scratch"):
        reset.preflight(run)


# -- steps -----------------------------------------------------------------------------------


def test_steps_call_the_hook_and_reject_unknown_pauses() -> None:
    seen: list[str] = []
    steps = Steps(hook=seen.append)
    steps.mark("preflight")
    steps.mark("pinned")
    assert seen == ["preflight", "pinned"] and list(steps.times) == seen
    with pytest.raises(BadInput, match="unknown step"):
        Steps("pinned,bogus")
    assert Steps("all").pause == set(reset.STEPS)


# -- grubenv, OEM, flags ---------------------------------------------------------------------


@pytest.mark.parametrize("boot, entry", [("recovery", "recovery"), ("autoreset", "statereset")])
def test_pin_and_unpin(tmp_path: Path, boot: str, entry: str) -> None:
    run = make_run(tmp_path, boot)
    env_file = tmp_path / "oem/grubenv"
    grubenv.write(env_file, {"next_entry": "statereset", "extra_cmdline": "quiet"})
    reset.pin(run)
    assert grubenv.read(env_file) == {"extra_cmdline": "quiet", "saved_entry": entry}
    reset.pin(run)  # again after a cut: the same
    assert grubenv.read(env_file) == {"extra_cmdline": "quiet", "saved_entry": entry}
    reset.unpin(run)
    assert grubenv.read(env_file) == {"extra_cmdline": "quiet"}
    assert env_file.stat().st_size == grubenv.BLOCK_SIZE


def test_pin_creates_grubenv(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    reset.pin(run)
    assert grubenv.read(tmp_path / "oem/grubenv") == {"saved_entry": "recovery"}


def test_oem_wipe_keeps_grubenv_with_the_pin_only(tmp_path: Path) -> None:
    run = make_run(tmp_path, reset_oem=True)
    oem = tmp_path / "oem"
    grubenv.write(oem / "grubenv", {"saved_entry": "recovery", "extra_cmdline": "quiet"})
    (oem / "90_custom.yaml").write_text("#cloud-config\n")
    (oem / "health.d").mkdir()
    (oem / "health.d/check").write_text("#!/bin/sh\n")
    (oem / "link").symlink_to("/etc/passwd")
    (oem / "lost+found").mkdir()
    reset.wipe_oem(run)
    assert sorted(p.name for p in oem.iterdir()) == ["grubenv", "lost+found"]
    assert grubenv.read(oem / "grubenv") == {"saved_entry": "recovery"}
    assert Path("/etc/passwd").exists() and run.result.oem_wiped


def test_oem_kept_by_default(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (tmp_path / "oem/90_custom.yaml").write_text("#cloud-config\n")
    reset.wipe_oem(run)
    assert (tmp_path / "oem/90_custom.yaml").exists() and not run.result.oem_wiped


def test_every_flag_is_cleared(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    assessment.write(run.state, Flags(NEW, 3, NEW))
    reset.clear_flags(run)
    flags = assessment.read(run.state)
    assert (flags.tentative, flags.tries, flags.failed) == ("", 0, "")
    assert run.result.flags_cleared


def test_no_flags_file_is_left_alone(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    reset.clear_flags(run)
    assert not (run.state / assessment.ENV_FILE).exists() and not run.result.flags_cleared


# -- options ---------------------------------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    reset_cmd.register(parser.add_subparsers())
    return parser.parse_args(["reset", *argv])


def test_options_cli_over_config(tmp_path: Path) -> None:
    slot = tmp_path / "slot.img"
    slot.write_bytes(b"x")
    cfg = MergedConfig({"reset": {"reset-persistent": False, "reset-oem": True,
                                  "system": {"source": f"file:{slot}"}}})
    opts = reset_cmd.options(_args(), cfg)
    assert (opts.reset_persistent, opts.reset_oem, str(opts.source)) == \
        (False, True, f"file:{slot}")
    opts = reset_cmd.options(_args("--reset-persistent", "--no-reset-oem", "--unattended"), cfg)
    assert (opts.reset_persistent, opts.reset_oem, opts.unattended) == (True, False, True)
    defaults = reset_cmd.options(_args(), MergedConfig())
    assert (defaults.reset_persistent, defaults.reset_oem, defaults.source) == (True, False, None)


def test_a_bad_source_is_refused_by_the_cli() -> None:
    with pytest.raises(BadInput, match="not absolute"):
        reset_cmd.options(_args("--source", "file:relative.img"), MergedConfig())


@pytest.mark.parametrize("booted", ["active", "passive", "livecd"])
def test_device_refuses_before_mounting_anything(monkeypatch: pytest.MonkeyPatch,
                                                 booted: str) -> None:
    from kairos.agent import rollback

    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may run (blkid, mount) before the boot check")

    monkeypatch.setattr(rollback, "booted_slot", lambda root=Path("/"): booted)
    monkeypatch.setattr(reset, "run", no_run)
    monkeypatch.setattr(reset, "mount", no_run)
    with pytest.raises(BadInput), reset.device_targets(unattended=True):
        pass
