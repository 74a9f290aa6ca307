"""`config show` output (YAML with source comments) and key paths."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kairos.config.paths import format_path, parse_path, resolve
from kairos.config.render import render_yaml
from kairos.config.yamlsrc import load_yaml_text
from kairos.errors import BadInput


def test_comments_name_sources_only_where_they_change() -> None:
    data = {"hostname": "n", "users": [{"name": "a", "groups": ["admin"]}, {"name": "b"}],
            "stages": {"boot": [{"files": [{"path": "/x", "content": "l1\nl2\n"}]}]},
            "install": {}, "env": []}
    sources = {"hostname": "cmdline", "users": "/oem/b.yaml", "users[0]": "/oem/a.yaml",
               "users[0].name": "/oem/a.yaml", "users[0].groups": "/oem/a.yaml",
               "users[1]": "/oem/b.yaml", "users[1].name": "/oem/b.yaml",
               "stages": "/oem/a.yaml", "stages.boot[0].files[0].content": "http://h/x"}
    out = render_yaml(data, sources, ["/oem/a.yaml", "/oem/b.yaml", "cmdline"])
    assert out == """#cloud-config

# Sources:
# - /oem/a.yaml
# - /oem/b.yaml
# - cmdline

hostname: n  # cmdline
users:  # /oem/b.yaml
  - name: a  # /oem/a.yaml
    groups:
      - admin
  - name: b
stages:  # /oem/a.yaml
  boot:
    - files:
        - path: /x
          content: |  # http://h/x
            l1
            l2
install: {}
env: []
"""
    assert load_yaml_text(out) == data


def test_tricky_strings_round_trip() -> None:
    data = {"a": "1e3", "b": "yes", "c": "x: y", "d": " lead", "e": "tail\n\n", "f": "a\r\nb",
            "g": "#x", "h": "-", "i": "", "j": "0755", "k": "tab\tin", "l": "é\u2028", "m": 1e20,
            "n": -0.0, "o": float("inf"), "p": "multi\n  indented\nlines", "q": "\x00",
            "x: y": 1, "": 2, "- z": 3, "<<": 4}
    assert load_yaml_text(render_yaml(data, {})) == data


def test_empty_config() -> None:
    assert load_yaml_text(render_yaml({}, {}, [])) == {}


keys = st.text(max_size=10)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(keys, c, max_size=4), max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, values, max_size=6),
       st.dictionaries(st.sampled_from(["a", "a.b", "a[0]", "x", ""]), st.text(max_size=8)))
def test_render_round_trips(data: dict[str, Any], sources: dict[str, str]) -> None:
    assert load_yaml_text(render_yaml(data, sources, list(sources.values()))) == data


@pytest.mark.parametrize(("text", "parts"), [
    ("users[0].name", ["users", 0, "name"]), ("users.0.name", ["users", "0", "name"]),
    (".install.device", ["install", "device"]), ("stages.boot[0].commands[1]",
                                                 ["stages", "boot", 0, "commands", 1]),
    ("l[0][1]", ["l", 0, 1]), ("", []),
])
def test_parse_path(text: str, parts: list[Any]) -> None:
    assert parse_path(text) == parts


@pytest.mark.parametrize("text", ["a..b", "a[x]", "a[0", "a]"])
def test_parse_path_errors(text: str) -> None:
    with pytest.raises(BadInput):
        parse_path(text)


def test_format_and_resolve() -> None:
    assert format_path(("users", 0, "name")) == "users[0].name"
    assert format_path((0, "a")) == "[0].a"
    data = {"users": [{"name": "a"}], "stages": {"boot": [{"sysctl": {"net.core.x": 1}}]}}
    assert resolve(data, parse_path("users.0.name")) == (True, "a")
    assert resolve(data, parse_path("users[0]")) == (True, {"name": "a"})
    assert resolve(data, parse_path("stages.boot[0].sysctl.net.core.x")) == (True, 1)
    assert resolve(data, parse_path("users[1]")) == (False, None)
    assert resolve(data, parse_path("users.name")) == (False, None)
    assert resolve(data, parse_path("users[0].name.x")) == (False, None)
