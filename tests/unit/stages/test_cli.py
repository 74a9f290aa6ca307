from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from kairos.cli import stages_cmd
from kairos.errors import KairosError


def main(argv: list[str]) -> int:
    """The verb on its own parser (the other verbs' modules are not this test's subject)."""
    parser = argparse.ArgumentParser(prog="kairos")
    stages_cmd.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KairosError as exc:
        sys.stderr.write(f"kairos: error: {exc.message}\n")
        return exc.exit_code

STAGE = """name: t
stages:
  boot:
  - name: touch
    files: [{path: /done, content: "yes"}]
  - name: fail
    commands: ["exit 1"]
"""


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_run_stage_json(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(root, "/oem/a.yaml", STAGE)
    assert main(["run-stage", "boot", "--root", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stage"] == "boot" and out["ok"] is False
    assert [(r["name"], r["status"]) for r in out["results"]] == [("t.touch", "ok"),
                                                                   ("t.fail", "failed")]
    assert (root / "done").read_text() == "yes"


def test_strict_exit_code(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(root, "/oem/a.yaml", STAGE)
    assert main(["run-stage", "boot", "--root", str(root), "--strict"]) == 1
    assert "step 't.fail' failed" in capsys.readouterr().err


def test_analyze_and_paths(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(root, "/oem/a.yaml", STAGE)
    write(root, "/extra/b.yaml", "stages:\n  boot:\n  - name: extra\n    commands: [true]\n")
    assert main(["run-stage", "boot", "--root", str(root), "--analyze", "--json",
                 "--cloud-init-paths", "/extra"]) == 0
    names = [s["name"] for s in json.loads(capsys.readouterr().out)]
    assert names == ["t.touch", "t.fail", "/extra/b.yaml.extra"]
    assert main(["run-stage", "boot", "--root", str(root), "-a",
                 "--override-cloud-init-paths", "/extra"]) == 0
    out = capsys.readouterr().out
    assert "/extra/b.yaml.extra  (commands)" in out and "t.touch" not in out
    assert not (root / "done").exists()


def test_bad_root_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run-stage", "boot", "--root", str(tmp_path / "nope")]) == 2
    assert "--root" in capsys.readouterr().err
