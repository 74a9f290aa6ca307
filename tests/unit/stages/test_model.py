from __future__ import annotations

import pytest

from kairos.stages.fields import PayloadError, as_mode
from kairos.stages.model import parse_doc, parse_step


def test_step_fields_conditions_and_payloads() -> None:
    step, warnings = parse_step({
        "name": "Setup", "after": [{"name": "other.step"}, "plain.name"],
        "if": "[ -e /x ]", "node": "node-.*", "only_os": "Debian.*", "only_os_version": "12",
        "only_arch": "amd64", "only_service_manager": "systemd",
        "if_files": {"any": ["/a", "/b"], "none": "/c"},
        "files": [{"path": "/etc/x"}], "commands": ["true"],
    }, "f.yaml", "f.yaml: step")
    assert warnings == []
    assert step.name == "Setup"
    assert step.after == ["other.step", "plain.name"]
    c = step.conditions
    assert (c.if_, c.node, c.only_os, c.only_os_version, c.only_arch,
            c.only_service_manager) == ("[ -e /x ]", "node-.*", "Debian.*", "12", "amd64",
                                        "systemd")
    assert c.if_files == {"any": ["/a", "/b"], "none": ["/c"]}
    assert set(step.payloads) == {"files", "commands"}
    assert step.source == "f.yaml"


def test_unknown_key_is_a_warning_not_an_error() -> None:
    step, warnings = parse_step({"name": "x", "systctl": {"a": "1"}}, "f.yaml", "f.yaml: s")
    assert step.payloads == {}
    assert warnings == ["f.yaml: s: unknown key 'systctl' is ignored"]


def test_step_must_be_a_mapping() -> None:
    with pytest.raises(PayloadError, match="must be a mapping"):
        parse_step(["commands"], "f.yaml", "f.yaml: s")


def test_stages_are_additive_and_bad_steps_are_reported() -> None:
    doc = parse_doc({"name": "doc", "stages": {
        "boot": [{"commands": ["a"]}, "not a step", None],
        "network": None,
        "fs": "wrong",
    }}, "f.yaml", cloud_config=False)
    assert doc.name == "doc"
    assert len(doc.stages["boot"]) == 2  # the null step is an empty step, as in yip
    assert any("a step must be a mapping" in e for e in doc.errors)
    assert any("stages.fs must be a list" in e for e in doc.errors)


def test_top_level_must_be_a_mapping() -> None:
    doc = parse_doc(["a"], "f.yaml", cloud_config=True)
    assert doc.stages == {}
    assert doc.errors == ["f.yaml: the top level must be a mapping; file ignored"]


@pytest.mark.parametrize(("value", "mode"), [(0o644, 0o644), ("0644", 0o644), ("755", 0o755),
                                             ("0o600", 0o600), (None, None)])
def test_modes(value: object, mode: int | None) -> None:
    assert as_mode(value, "x") == mode


def test_bad_mode() -> None:
    with pytest.raises(PayloadError, match="file mode"):
        as_mode("rw-r--r--", "files[0].permissions")


def test_unknown_payload_fields_warn() -> None:
    _, warnings = parse_step({"files": [{"path": "/x", "permsisions": "0600"}],
                              "systemctl": {"enabled": ["x"]},
                              "users": {"bob": {"passwd": "x", "sheel": "/bin/sh"}}},
                             "f.yaml", "f.yaml: s")
    assert warnings == ["f.yaml: s.files[0]: unknown field 'permsisions' is ignored",
                        "f.yaml: s.systemctl: unknown field 'enabled' is ignored",
                        "f.yaml: s.users.bob: unknown field 'sheel' is ignored"]
