"""Validation messages: exact file:line:column, key path and hint for each kind of mistake."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kairos.config.diagnostic import Diagnostic
from kairos.config.schema import load_schema, top_level_keys
from kairos.config.validate import STAGE, validate_data, validate_file, validate_text
from kairos.errors import BadInput

F = "oem/90_custom.yaml"

CASES: list[tuple[str, str, list[str]]] = [
    ("typo at the top level", "hostnam: node1\n",
     [f"{F}:2:1: warning: hostnam: unknown key (hint: did you mean 'hostname'?)"]),
    ("typo in a stage step", "stages:\n  boot:\n  - systctl: {a: 1}\n",
     [f"{F}:4:5: warning: stages.boot[0].systctl: unknown key (hint: did you mean 'sysctl'?)"]),
    ("a key one level too high", "p2p:\n  ha: {enable: true}\n",
     [f"{F}:3:3: warning: p2p.ha: unknown key (hint: did you mean 'auto.ha'?)"]),
    ("wrong type: string for a list", "users:\n- name: kairos\n  groups: admin\n",
     [f"{F}:4:3: users[0].groups: expected a list, got a string (hint: write groups: [admin])"]),
    ("wrong type: number for a name", "users:\n  - name: 007\n",
     [f'{F}:3:5: users[0].name: expected a string, got a number (hint: quote it: name: "007")']),
    ("wrong type: yes for a bool", "install:\n  auto: yes\n",
     [f"{F}:3:3: install.auto: expected true or false, got a string "
      "(hint: write auto: true or auto: false)"]),
    ("wrong type: a block of text for a list", "runcmd: |\n  echo a\n  echo b\n",
     [f"{F}:2:1: runcmd: expected a list, got a string "
      "(hint: make runcmd a list: put each entry on its own line after '- ')"]),
    ("wrong type: map for a list", "users:\n  name: kairos\n",
     [f"{F}:2:1: users: expected a list, got a map (hint: start each entry of users with '- ')"]),
    ("wrong type: list for a map", "k3s:\n- enabled: true\n",
     [f"{F}:2:1: k3s: expected a map, got a list "
      "(hint: k3s takes keys and values, not a list: remove the '- ')"]),
    ("wrong type: size with units", "install:\n  partitions:\n    oem: {size: 1G}\n",
     [f"{F}:4:11: install.partitions.oem.size: expected a whole number, got a string "
      "(hint: write a plain number without quotes or units, e.g. size: 512)"]),
    ("enum with a near miss", "stages:\n  boot:\n  - only_service_manager: sytemd\n",
     [f"{F}:4:5: stages.boot[0].only_service_manager: 'sytemd' is not one of: systemd, openrc "
      "(hint: did you mean 'systemd'?)"]),
    ("pattern", "install:\n  device: sda\n",
     [f"{F}:3:3: install.device: 'sda' is not a valid device "
      "(hint: auto, a /dev/ path, or script://COMMAND printing one)"]),
    ("required key", "users:\n- passwd: x\n",
     [f"{F}:3:3: users[0]: missing the required key 'name' (hint: add name: to this entry)"]),
    ("decimal file mode", "stages:\n  boot:\n  - files:\n    - path: /x\n      permissions: 644\n",
     [f"{F}:6:7: warning: stages.boot[0].files[0].permissions: 644 is read as a decimal number "
      "(mode 1204 in octal) (hint: write permissions: 0644)"]),
    ("ssh_hardening without keys", "install:\n  ssh_hardening: true\nusers: [{name: a}]\n",
     [f"{F}:3:3: install.ssh_hardening: ssh_hardening needs at least one user with "
      "ssh_authorized_keys (hint: add ssh_authorized_keys to a user, or the system is "
      "unreachable over SSH)"]),
    ("yaml syntax error", "users:\n- name: \"kairos\n  passwd: x\n",
     [f"{F}:3:9: this quoted value is never closed (found unexpected end of stream) "
      "(hint: add the closing quote at the end of the value)"]),
    ("unclosed bracket", "users:\n- name: kairos\n  groups: [admin\n",
     [f"{F}:4:11: this '[' is never closed with ']' "
      "(hint: add the closing bracket at the end of the list or map)"]),
    ("top level is a list", "- a\n",
     [f"{F}:2:1: the top level must be a map of keys, got a list "
      "(hint: start with keys such as users:, install: or stages:)"]),
    ("second document", "hostname: a\n---\nhostname: b\n",
     [f"{F}: warning: only the first YAML document is read "
      "(hint: Kairos ignores everything after the second '---')"]),
    ("null is 'unset' everywhere",
     "users:\n- name: a\n  ssh_authorized_keys:\n  # - github:x\ninstall:\nk3s: {args: ~}\n", []),
    ("empty file", "", []),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_messages(body: str, expected: list[str]) -> None:
    result = validate_text("#cloud-config\n" + body, F)
    assert [str(d) for d in result.diagnostics] == expected
    assert result.ok == all(" warning: " in e for e in expected)


def test_strict_turns_warnings_into_errors() -> None:
    result = validate_text("#cloud-config\nhostnam: x\n", F, strict=True)
    assert not result.ok
    assert [str(d) for d in result.errors] == [
        f"{F}:2:1: hostnam: unknown key (hint: did you mean 'hostname'?)"]


def test_header_is_required_except_for_stage_files() -> None:
    result = validate_text("hostname: x\n", F)
    assert [str(d) for d in result.diagnostics] == [
        f"{F}:1:1: missing the #cloud-config header "
        "(hint: make '#cloud-config' the first line; Kairos skips files without it)"]
    stage = validate_text("name: s\nstages:\n  boot:\n  - commands: [a]\n", "00_x.yaml")
    assert stage.kind == STAGE and stage.ok and not stage.diagnostics
    bad = validate_text("stages:\n  boot:\n  - commands: a\n", "00_x.yaml")
    assert bad.kind == STAGE
    assert [str(d) for d in bad.diagnostics] == [
        "00_x.yaml:3:5: stages.boot[0].commands: expected a list, got a string "
        "(hint: write commands: [a])"]
    forced = validate_text("#cloud-config\nusers: []\n", "x", kind=STAGE)
    assert [d.message for d in forced.warnings] == ["unknown key"]
    assert not validate_text("hostname: x\n", "x", require_header=False).diagnostics


def test_validate_file(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("#cloud-config\ninstall:\n  device: /dev/vda\n  auto: true\n")
    assert validate_file(path).ok
    missing = validate_file(tmp_path / "nope.yaml")
    assert not missing.ok and "cannot read" in missing.errors[0].message
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"#cloud-config\n\xff\xfe")
    assert "not UTF-8" in validate_file(binary).errors[0].message


def test_diagnostic_format() -> None:
    d = Diagnostic("error", F, 4, 3, "users[0].groups", "expected a list, got a string",
                   "write groups: [admin]")
    assert str(d) == (f"{F}:4:3: users[0].groups: expected a list, got a string "
                      "(hint: write groups: [admin])")
    assert str(Diagnostic("warning", "cmdline", 0, 0, "", "m")) == "cmdline: warning: m"
    assert d.as_dict()["line"] == 4


def test_every_schema_key_is_documented_somewhere_reachable() -> None:
    schema = load_schema()
    assert {"users", "install", "upgrade", "reset", "stages", "k3s", "k3s-agent", "k0s",
            "k0s-worker", "p2p", "kubevip", "bundles", "kcrypt", "hostname", "debug", "strict",
            "config_url", "options", "logs", "env", "name", "runcmd", "write_files",
            "ssh_authorized_keys", "growpart"} <= top_level_keys()
    step = schema["$defs"]["step"]["properties"]
    assert {"dns", "downloads", "git", "ensure_entities", "directories", "files", "commands",
            "delete_entities", "hostname", "sysctl", "users", "authorized_keys", "modules",
            "timesyncd", "systemctl", "environment", "environment_file", "systemd_firstboot",
            "datasource", "layout", "package_pins", "packages", "unpack_images", "if", "node",
            "only_os", "only_os_version", "only_arch", "only_service_manager", "if_files",
            "name", "after"} <= set(step)


# ---- properties: nothing raises but BadInput ---------------------------------------------

_KEYS = sorted(top_level_keys() | set(load_schema()["$defs"]["step"]["properties"])
               | {"boot", "name", "groups", "size", "oem", "partitions", "auto", "ha", "env"})
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
shaped = st.recursive(scalars, lambda c: st.lists(c, max_size=3)
                      | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=4), c,
                                        max_size=4), max_leaves=25)
odd = st.recursive(scalars | st.binary(max_size=2),
                   lambda c: st.lists(c, max_size=3)
                   | st.dictionaries(st.integers() | st.sampled_from(_KEYS), c, max_size=3),
                   max_leaves=15)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_KEYS), shaped, max_size=6) | shaped)
def test_validate_data_never_raises(data: Any) -> None:
    for diag in validate_data(data, "x.yaml"):
        assert diag.file == "x.yaml" and diag.message


@settings(max_examples=200, deadline=None)
@given(odd)
def test_validate_odd_python_values_only_raises_bad_input(data: Any) -> None:
    with contextlib.suppress(BadInput):
        validate_data(data)


TOKENS = ["users:", "\n- name: ", "\n  groups: ", "install:", "\n  device: ", "stages:",
          "\n  boot:", "\n  - ", "files: ", "permissions: ", "0644", "644", "{", "}", "[", "]",
          '"', "'", "&a ", "*a", "<<: ", "\n", "  ", "\t", "#", "null", "yes", "---", ": "]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS) | st.text(max_size=3), max_size=30).map("".join))
def test_validate_random_yaml_text_never_raises(text: str) -> None:
    result = validate_text("#cloud-config\n" + text, "r.yaml")
    for diag in result.diagnostics:
        assert diag.file == "r.yaml" and str(diag).startswith("r.yaml")


# --- user fields that would add lines to /etc/passwd, /etc/group or /etc/shadow ---

INJECTION = "evil::0:0::/:/bin/sh"
ACCOUNT_INJECTIONS: list[tuple[str, str]] = [
    ("shell", f'shell: "/bin/sh\\n{INJECTION}"'),
    ("homedir", 'homedir: "/home/x:0:0::/:/bin/sh"'),
    ("gecos", f'gecos: "Eve\\n{INJECTION}"'),
    ("primary_group", 'primary_group: "users\\nevil:x:0:"'),
    ("groups[0]", 'groups: ["admin\\nevil:x:0:"]'),
    ("groups[0]", 'groups: ["admin,root"]'),
    ("passwd", 'passwd: "$6$salt$hash:1:0:99999:7:::\\nevil::1:0:99999:7:::"'),
    ("passwd", 'passwd: "pw\\nevil"'),
]


@pytest.mark.parametrize(("key", "line"), ACCOUNT_INJECTIONS)
def test_account_injection_is_an_error_in_both_user_forms(key: str, line: str) -> None:
    listed = validate_text(f"#cloud-config\nusers:\n- name: eve\n  {line}\n", F)
    assert not listed.ok
    assert [d.path for d in listed.errors] == [f"users[0].{key}"]
    step = validate_text(f"#cloud-config\nstages:\n  boot:\n  - users:\n      eve:\n"
                         f"        {line}\n", F)
    assert [d.path for d in step.errors] == [f"stages.boot[0].users.eve.{key}"]


@pytest.mark.parametrize("name", ['"eve\\n"', '"root\\nevil"', '"a:b"', '"a,b"', '".."'])
def test_bad_user_names_are_errors(name: str) -> None:
    assert not validate_text(f"#cloud-config\nusers:\n- name: {name}\n", F).ok
    assert not validate_text(f"#cloud-config\nstages:\n  boot:\n  - users:\n      {name}: "
                             "{}\n", F).ok


def test_ordinary_users_stay_valid() -> None:
    body = ("#cloud-config\nusers:\n- name: kairos\n  passwd: 'pa:ss'\n  gecos: 'Kairos: OS'\n"
            "  shell: /bin/bash\n  homedir: /home/kairos\n  groups: [admin, systemd-journal]\n"
            "  primary_group: users\n- name: svc\n  passwd: '$6$salt$hash'\nstages:\n  boot:\n"
            "  - users:\n      bob: {passwd: '!', shell: /bin/sh, gecos: 'Bob,,,'}\n")
    result = validate_text(body, F)
    assert result.ok, [str(d) for d in result.diagnostics]


def test_config_validate_exits_2_on_an_injection(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import kairos.cli as cli

    monkeypatch.setattr(cli, "VERB_MODULES", ("kairos.cli.config_cmd",))
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'#cloud-config\nusers:\n- name: eve\n  shell: "/bin/sh\\n{INJECTION}"\n')
    assert cli.main(["config", "validate", str(bad)]) == 2


def test_key_with_newline_stays_on_one_line() -> None:
    from kairos.config.paths import format_path
    assert format_path(("stages", "boot", 0, "users", "ev\nil")) == "stages.boot[0].users.'ev\\nil'"
