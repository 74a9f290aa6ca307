"""The config verbs through the real entry point (only this verb module loaded)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import kairos.cli as cli
from kairos.config.yamlsrc import load_yaml_text

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def kairos(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    monkeypatch.setattr(cli, "VERB_MODULES", ("kairos.cli.config_cmd",))

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "oem").mkdir()
    (tmp_path / "oem/90_custom.yaml").write_text(
        "#cloud-config\nhostname: node1\nusers:\n- name: kairos\n  groups: [admin]\n")
    (tmp_path / "etc/kairos").mkdir(parents=True)
    (tmp_path / "etc/kairos/10.yaml").write_text("#cloud-config\ninstall: {auto: true}\n"
                                                  "hostnam: typo\n")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("console=ttyS0 install.device=/dev/vda\n")
    return tmp_path


def test_validate_exit_codes_and_messages(kairos: Run, tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("#cloud-config\nhostname: x\n")
    assert kairos("config", "validate", str(good)) == (0, f"{good}: valid cloud-config\n", "")
    bad = tmp_path / "bad.yaml"
    bad.write_text("#cloud-config\nusers:\n- name: kairos\n  groups: admin\n")
    code, out, _ = kairos("validate", str(bad))
    assert code == 2
    assert out == (f"{bad}:4:3: users[0].groups: expected a list, got a string "
                   "(hint: write groups: [admin])\n"
                   f"{bad}: invalid cloud-config: 1 error, 0 warnings\n")
    syntax = tmp_path / "syntax.yaml"
    syntax.write_text('#cloud-config\nhostname: "x\n')
    code, out, _ = kairos("config", "validate", str(syntax), "--json")
    result = json.loads(out)
    assert code == 2 and result["valid"] is False
    assert [(d["line"], d["column"]) for d in result["diagnostics"]] == [(2, 11)]


def test_validate_strict_and_stage_files(kairos: Run, tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("#cloud-config\nhostnam: x\n")
    assert kairos("validate", str(typo))[0] == 0
    assert kairos("validate", str(typo), "--strict")[0] == 2
    stage = tmp_path / "00_stage.yaml"
    stage.write_text("name: x\nstages:\n  boot:\n  - commands: [true]\n")
    assert kairos("validate", str(stage)) == (0, f"{stage}: valid stage file\n", "")


def test_validate_url(kairos: Run, tmp_path: Path) -> None:
    page = tmp_path / "remote.yaml"
    page.write_text("#cloud-config\nk3s: {enabled: yes}\n")
    code, out, _ = kairos("config", "validate", f"file://{page}")
    assert code == 2 and "k3s.enabled: expected true or false" in out


def test_show_yaml_and_json(kairos: Run, root: Path) -> None:
    code, out, err = kairos("config", "show", "--root", str(root))
    assert code == 0
    oem = str(root / "oem/90_custom.yaml")
    assert f"hostname: node1  # {oem}\n" in out
    assert "install:  # cmdline\n  auto: true  # " in out
    assert load_yaml_text(out) == {"install": {"auto": True, "device": "/dev/vda"},
                                   "hostname": "node1",
                                   "users": [{"name": "kairos", "groups": ["admin"]}],
                                   "hostnam": "typo"}
    assert "hostnam: unknown key (hint: did you mean 'hostname'?)" in err
    assert kairos("config", "--root", str(root), "show")[1] == out  # options before the action
    code, out, _ = kairos("config", "--root", str(root), "--json")  # bare `config` is show
    shown = json.loads(out)
    assert shown["sources"]["install.device"] == "cmdline"
    assert shown["files"][-1] == "cmdline" and shown["warnings"][0]["path"] == "hostnam"


def test_get(kairos: Run, root: Path) -> None:
    assert kairos("config", "get", "install.device", "--root", str(root)) == (0, "/dev/vda\n", "")
    assert kairos("config", "get", "install.auto", "--root", str(root))[1] == "true\n"
    assert kairos("config", "get", "users.0", "--root", str(root))[1] == (
        "name: kairos\ngroups:\n- admin\n")
    assert kairos("config", "get", "users[0].groups", "--root", str(root), "--json")[1] == (
        '["admin"]\n')
    code, _, err = kairos("config", "get", "nope", "--root", str(root))
    assert code == 2 and "'nope' is not set" in err
    code, _, err = kairos("config", "get", "a..b", "--root", str(root))
    assert code == 2 and "empty segment" in err
    code, _, err = kairos("config", "show", "--root", str(root / "missing"))
    assert code == 2 and "is not a directory" in err


def test_conflict_is_one_line_exit_2(kairos: Run, tmp_path: Path) -> None:
    (tmp_path / "oem").mkdir()
    (tmp_path / "oem/a.yaml").write_text("#cloud-config\nusers: {a: 1}\n")
    (tmp_path / "oem/b.yaml").write_text("#cloud-config\nusers: [a]\n")
    code, out, err = kairos("config", "show", "--root", str(tmp_path), "--cmdline", "")
    assert code == 2 and out == ""
    assert err.splitlines()[0] == (f"kairos: error: cannot merge users: {tmp_path}/oem/a.yaml "
                                   f"has a map, {tmp_path}/oem/b.yaml has a list")


def test_print_schema(kairos: Run) -> None:
    code, out, _ = kairos("print-schema")
    assert code == 0 and json.loads(out)["title"] == "Kairos cloud-config"
