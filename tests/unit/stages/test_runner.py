from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kairos.errors import BadInput, KairosError
from kairos.stages.context import Context
from kairos.stages.runner import StageReport, plan_stage
from kairos.stages.runner import run_stage as _run_stage


def run_stage(stage: str, *, root: Path, **kwargs: Any) -> StageReport:
    """run_stage on a scratch root whose scripts may run on the host with $ROOT set."""
    ctx = Context(root=root, host_commands=True)
    return _run_stage(stage, root=root, ctx=ctx, **kwargs)


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


STAGES = """name: doc
stages:
  boot.after:
  - name: after
    commands: ['echo after >> "$ROOT/log"']
  boot:
  - name: main
    commands: ['echo main >> "$ROOT/log"']
  - name: skipped
    if: "false"
    commands: ['echo never >> "$ROOT/log"']
  - name: broken
    commands: ['exit 3', 'echo still >> "$ROOT/log"']
  boot.before:
  - name: before
    commands: ['echo before >> "$ROOT/log"']
"""


def test_before_stage_after_with_report(root: Path) -> None:
    write(root, "/oem/10.yaml", STAGES)
    report = run_stage("boot", root=root)
    assert (root / "log").read_text().split() == ["before", "main", "still", "after"]
    assert [r.name for r in report.run] == ["doc.before", "doc.main", "doc.after"]
    assert [r.name for r in report.skipped] == ["doc.skipped"]
    assert [r.name for r in report.failed] == ["doc.broken"]
    assert "exit 3" in report.failed[0].detail and "exited 3" in report.failed[0].detail
    data = report.to_json()
    assert json.loads(json.dumps(data))["ok"] is False


def test_strict_stops_at_the_first_failure(root: Path) -> None:
    write(root, "/oem/10.yaml", STAGES)
    with pytest.raises(KairosError, match=r"step 'doc.broken' failed"):
        run_stage("boot", root=root, strict=True)
    assert "after" not in (root / "log").read_text()


def test_strict_rejects_bad_files_but_default_skips_them(root: Path) -> None:
    write(root, "/oem/01.yaml", "stages: [\n")
    write(root, "/oem/02.yaml", "stages:\n  fs:\n  - commands: ['touch \"$ROOT/ran\"']\n")
    report = run_stage("fs", root=root)
    assert (root / "ran").exists()
    assert any("/oem/01.yaml:2" in w for w in report.warnings)
    with pytest.raises(BadInput, match=r"/oem/01\.yaml"):
        run_stage("fs", root=root, strict=True)


def test_dry_run_changes_nothing(root: Path) -> None:
    write(root, "/oem/10.yaml", STAGES)
    report = run_stage("boot", root=root, dry_run=True)
    assert not (root / "log").exists()
    assert [r.name for r in report.skipped] == ["doc.skipped"]
    assert len(report.run) == 4


def test_extra_docs_and_explicit_dirs(root: Path) -> None:
    write(root, "/custom/a.yaml", "stages:\n  network:\n  - name: x\n    files:\n"
          "    - path: /from-file\n      content: f\n")
    extra = ("merged config", {"runcmd": ['echo extra > "$ROOT/extra"'],
                               "stages": {"network": [{"name": "y", "files": [
                                   {"path": "/from-extra", "content": "e"}]}]}})
    report = run_stage("network", root=root, dirs=["/custom"], extra_docs=[extra])
    assert (root / "from-file").read_text() == "f"
    assert (root / "from-extra").read_text() == "e"
    assert not (root / "extra").exists()  # runcmd belongs to boot
    assert [r.name for r in report.run] == ["/custom/a.yaml.x", "merged config.y"]
    run_stage("boot", root=root, dirs=[], extra_docs=[extra])
    assert (root / "extra").read_text() == "extra\n"


def test_plan_lists_steps_with_plugins_and_conditions(root: Path) -> None:
    write(root, "/system/oem/00.yaml", STAGES)
    plan = plan_stage("boot", root=root)
    assert [(p.stage, p.name) for p in plan] == [
        ("boot.before", "doc.before"), ("boot", "doc.main"), ("boot", "doc.skipped"),
        ("boot", "doc.broken"), ("boot.after", "doc.after")]
    assert plan[2].plugins == ["commands"] and plan[2].conditions == ["if: false"]


def test_plugins_run_in_yip_order_within_a_step(root: Path) -> None:
    # files come before commands, commands before environment, whatever the key order
    write(root, "/oem/x.yaml", """stages:
  boot:
  - environment: {A: "1"}
    environment_file: /env
    commands: ['cat "$ROOT/made" > "$ROOT/seen"; test ! -e "$ROOT/env"']
    files: [{path: /made, content: "file first"}]
""")
    report = run_stage("boot", root=root)
    assert report.ok, report.failed
    assert (root / "seen").read_text() == "file first"
    assert (root / "env").read_text() == 'A="1"\n'


def test_empty_stage_name_is_bad_input(root: Path) -> None:
    with pytest.raises(BadInput):
        run_stage(" ", root=root)


def test_plugin_exception_does_not_stop_the_stage(root: Path) -> None:
    write(root, "/oem/x.yaml", """stages:
  boot:
  - name: bad
    files: [{path: /f, content: "x", encoding: base64}]
  - name: good
    files: [{path: /g, content: "ok"}]
""")
    report = run_stage("boot", root=root)
    assert [r.name for r in report.failed] == ["/oem/x.yaml.bad"]
    assert (root / "g").read_text() == "ok"


def test_without_host_commands_scripts_and_ifs_are_refused(root: Path) -> None:
    write(root, "/oem/10.yaml", STAGES)
    report = _run_stage("boot", root=root)
    assert not (root / "log").exists()
    assert "cannot run shell commands" in report.failed[0].detail
    skipped = {r.name: r.detail for r in report.skipped}
    assert "conditions could not be evaluated" in skipped["doc.skipped"]
