"""`kairos rollback` without root: slot files are plain files whose text is their image id
(the squashfs checks and the id reader are replaced), COS_STATE is a temp directory and
journal checkpoints are no-ops. tests/integration/test_rollback_reset_host.py runs the same
on real squashfs slots on ext4."""

from __future__ import annotations

from pathlib import Path

import pytest

from kairos.agent import rollback, slotfile, slotstate
from kairos.agent.rollback import RollbackTargets
from kairos.boot import assessment, grubenv
from kairos.boot.assessment import Flags
from kairos.errors import BadInput

OLD, NEW, OTHER = "a" * 32, "b" * 32, "c" * 32


@pytest.fixture(autouse=True)
def _plain_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    def image_id(path: Path) -> str:
        return path.read_text().strip() if path.is_file() else ""

    def check(path: Path, arch: str) -> dict[str, str]:
        if path.read_text().startswith("broken"):
            raise BadInput(f"{path} has no /boot/vmlinuz", "use a real image")
        return {}

    monkeypatch.setattr(rollback, "image_id_of_slot", image_id)
    monkeypatch.setattr(rollback, "check_slot_file", check)
    monkeypatch.setattr(slotfile, "checkpoint", lambda path: "sync")


def make_state(tmp_path: Path, active: str | None = NEW, passive: str | None = OLD) -> Path:
    state = tmp_path / "state"
    (state / "cOS").mkdir(parents=True)
    roles = {}
    for role, ident in (("active", active), ("passive", passive)):
        if ident is None:
            continue
        path = state / rollback.SLOT_FILES[role]
        path.write_text(ident)
        roles[role] = slotstate.record_file(path, source=f"file:/{role}", digest="",
                                            sha256=ident, version=f"v-{ident[:1]}",
                                            arch="amd64", date="2026-01-01T00:00:00Z",
                                            image_id=ident)
    slotstate.save(state, "COS_STATE", roles)
    return state


def snapshot(*dirs: Path) -> dict[str, tuple[bytes, int]]:
    out = {}
    for d in dirs:
        for p in sorted(d.rglob("*")):
            if p.is_file():
                out[str(p)] = (p.read_bytes(), p.stat().st_ino)
    return out


def targets(state: Path, booted: str = "active", oem: Path | None = None) -> RollbackTargets:
    return RollbackTargets(state, booted, oem_dir=oem, arch="amd64")


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("booted, words", [
    ("recovery", "recovery image"), ("autoreset", "recovery image"),
    ("livecd", "live media"), ("unknown", "cannot tell"),
])
def test_refused_outside_a_slot_boot(tmp_path: Path, booted: str, words: str) -> None:
    state = make_state(tmp_path)
    before = snapshot(state)
    with pytest.raises(BadInput, match=words) as err:
        rollback.rollback(targets(state, booted))
    assert err.value.hint
    assert snapshot(state) == before


def test_refused_without_a_passive_image(tmp_path: Path) -> None:
    state = make_state(tmp_path, passive=None)
    before = snapshot(state)
    with pytest.raises(BadInput, match="no passive image"):
        rollback.rollback(targets(state))
    assert snapshot(state) == before


def test_refused_when_passive_cannot_boot(tmp_path: Path) -> None:
    state = make_state(tmp_path, passive="broken")
    with pytest.raises(BadInput, match="not an image GRUB can boot"):
        rollback.rollback(targets(state))


def test_refused_when_passive_failed_in_grub_flags(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    assessment.write(state, Flags("", 0, OLD))
    before = snapshot(state)
    with pytest.raises(BadInput, match="failed its boot assessment") as err:
        rollback.rollback(targets(state))
    assert "v-a" in err.value.message
    assert snapshot(state) == before


def test_refused_when_passive_is_on_the_failed_list(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    slotstate.add_failed(state, slotstate.FailedImage(OLD, version="v-a"))
    before = snapshot(state)
    with pytest.raises(BadInput, match="failed its boot assessment"):
        rollback.rollback(targets(state))
    assert snapshot(state) == before


# -- the swap --------------------------------------------------------------------------------


def test_swap_records_and_tentative_flag(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    # A fresh upgrade on trial (NEW tentative) and an older failure (OTHER) that must stay.
    assessment.write(state, Flags(NEW, 2, OTHER))
    inodes = {role: (state / rel).stat().st_ino for role, rel in rollback.SLOT_FILES.items()}
    result = rollback.rollback(targets(state))
    assert (state / rollback.ACTIVE_IMG).read_text() == OLD
    assert (state / rollback.PASSIVE_IMG).read_text() == NEW
    # Renamed, not copied.
    assert (state / rollback.ACTIVE_IMG).stat().st_ino == inodes["passive"]
    assert (state / rollback.PASSIVE_IMG).stat().st_ino == inodes["active"]
    recs = slotstate.resolve(state, rollback.SLOT_FILES)
    assert recs["active"] is not None and recs["passive"] is not None
    assert (recs["active"].version, recs["passive"].version) == ("v-a", "v-b")
    # The document itself names them under their new roles (what `kairos state` shows).
    doc = slotstate.read_doc(state)
    assert doc["state"]["active"]["version"] == "v-a"
    flags = assessment.read(state)
    assert (flags.tentative, flags.tries, flags.failed) == ("", 0, OTHER)
    assert result.tentative_cleared and result.reboot_needed
    assert (result.active.image_id, result.passive.image_id) == (OLD, NEW)


def test_booted_passive_makes_the_running_image_active(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    assessment.write(state, Flags("", 0, NEW))  # GRUB gave up on NEW, booted passive
    result = rollback.rollback(targets(state, "passive"))
    assert (state / rollback.ACTIVE_IMG).read_text() == OLD
    assert not result.reboot_needed and not result.tentative_cleared
    assert assessment.read(state).failed == NEW


def test_twice_is_back_where_it_started(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    before = {rel: (state / rel).stat().st_ino for rel in rollback.SLOT_FILES.values()}
    rollback.rollback(targets(state))
    rollback.rollback(targets(state))
    assert {rel: (state / rel).stat().st_ino for rel in rollback.SLOT_FILES.values()} == before


@pytest.mark.parametrize("env, want", [
    ({"saved_entry": "fallback"}, {"saved_entry": "cos"}),
    ({"next_entry": "fallback", "extra_cmdline": "x=1"}, {"extra_cmdline": "x=1"}),
    ({"saved_entry": "recovery"}, {"saved_entry": "recovery"}),
])
def test_a_fallback_selection_goes_back_to_cos(tmp_path: Path, env: dict[str, str],
                                               want: dict[str, str]) -> None:
    state = make_state(tmp_path)
    oem = tmp_path / "oem"
    oem.mkdir()
    grubenv.write(oem / "grubenv", env)
    result = rollback.rollback(targets(state, oem=oem))
    assert grubenv.read(oem / "grubenv") == want
    assert result.boot_entry_reset == (env != want)


def test_device_refuses_a_recovery_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollback, "booted_slot", lambda root=Path("/"): "recovery")
    with pytest.raises(BadInput, match="recovery image"):
        rollback.device_targets()
