"""Boot-time stage runs (early-init and the cos-setup-* units) record what they did in
/run/kairos/stages/<stage>.json, failed steps included, and never fail the boot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kairos.early import stage
from kairos.early.main import run_fs_stage
from kairos.stages import runner

STAGES = """name: test
stages:
  boot:
  - name: fine
    files:
    - path: /run/fine
      content: fine
  - name: broken
    commands: ["false"]
  - name: not here
    if: "false"
    commands: ["true"]
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "oem").mkdir()
    (tmp_path / "oem/50_test.yaml").write_text(STAGES)
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("root=LABEL=COS_ACTIVE\n")
    return tmp_path


def report(root: Path, name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((root / "run/kairos/stages" / f"{name}.json").read_text())
    return data


def test_a_failed_step_is_recorded(root: Path) -> None:
    got = stage.run_and_record("boot", root)
    assert got is not None and len(got.failed) == 1
    data = report(root, "boot")
    assert data["stage"] == "boot" and data["ok"] is False
    status = {r["name"]: r["status"] for r in data["results"]}  # type: ignore[attr-defined]
    assert status == {"test.fine": "ok", "test.broken": "failed", "test.not here": "skipped"}
    assert isinstance(data["finished"], float)
    assert (root / "run/fine").read_text() == "fine"  # the step after a failure still ran
    assert not list((root / "run/kairos/stages").glob(".*"))  # no temp files left


def test_a_stage_without_steps_is_recorded_as_ok(root: Path) -> None:
    stage.run_and_record("network", root)
    assert report(root, "network") | {"finished": 0} == {
        "stage": "network", "ok": True, "results": [], "warnings": [], "finished": 0}


def test_a_crashed_runner_is_recorded_as_a_failed_step(root: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_args: object, **_kwargs: object) -> runner.StageReport:
        raise RuntimeError("bug")

    monkeypatch.setattr(runner, "run_stage", boom)
    assert stage.run_and_record("boot", root) is None
    data = report(root, "boot")
    assert data["ok"] is False
    [result] = data["results"]  # type: ignore[misc]
    assert result["status"] == "failed" and result["name"] == runner.RUNNER_STEP
    assert "RuntimeError: bug" in result["detail"]
    # early-init's fs stage: the unit has to run it again, so no skip marker
    assert run_fs_stage(str(root / "skip"), root) is False
    assert not (root / "skip/fs").exists()


def test_the_unit_never_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(runner, "run_stage", lambda name, **_kw: runner.StageReport(name, [
        runner.StepResult(name, "x.y", "x", "failed", "no")]))
    monkeypatch.setattr(runner, "save_report", lambda rep, _root: seen.append(rep.stage))
    assert stage.main(["boot"]) == 0
    assert seen == ["boot"]


def test_early_fs_stage_records_and_marks(root: Path) -> None:
    assert run_fs_stage(str(root / "skip"), root) is True
    assert (root / "skip/fs").exists()
    assert report(root, "fs")["ok"] is True


def test_report_names_stay_in_the_directory(tmp_path: Path) -> None:
    assert runner.report_path("../../etc/x", tmp_path).parent == tmp_path / runner.REPORT_DIR
    assert runner.report_path("boot.after", tmp_path).name == "boot.after.json"


def test_an_unwritable_report_does_not_raise(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("not a directory")
    assert runner.save_report(runner.StageReport("boot"), tmp_path) is None
