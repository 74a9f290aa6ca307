"""YAML read the way Kairos reads it, errors with file:line:column, positions of keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kairos.config.yamlsrc import (
    YamlError,
    check_tree,
    has_header,
    load_yaml_document,
    load_yaml_file,
    load_yaml_text,
)
from kairos.errors import BadInput

VALUES: list[tuple[str, Any]] = [
    ("true", True), ("False", False), ("yes", "yes"), ("on", "on"), ("no", "no"),
    ("0755", 0o755), ("0644", 420), ("42", 42), ("-7", -7), ("0x1F", 31), ("1_000", 1000),
    ("1.5", 1.5), ("1e3", 1000.0), ("1:20", "1:20"), ("2001-12-14", "2001-12-14"),
    ("~", None), ("null", None), ("", None), ("=", "="), ("0o17", "0o17"),
    ("!!binary aGk=", "aGk="), ("!custom x", "x"), ("!!str 12", "12"),
]


@pytest.mark.parametrize(("text", "value"), VALUES, ids=[v[0] or "empty" for v in VALUES])
def test_values_read_like_yaml_v3(text: str, value: Any) -> None:
    got = load_yaml_text(f"k: {text}\n")["k"]
    assert got == value and type(got) is type(value)


def test_keys_are_their_text_and_merge_keys_work() -> None:
    data = load_yaml_text("1: a\non: b\nnull: c\nbase: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n")
    assert data == {"1": "a", "on": "b", "null": "c", "base": {"x": 1, "y": 2},
                    "other": {"x": 1, "y": 3}}


def test_odd_tags_become_plain_values() -> None:
    data = load_yaml_text("s: !!set {a, b}\no: !!omap [{a: 1}, {b: 2}]\nt: !local {k: v}\n")
    assert data == {"s": {"a": None, "b": None}, "o": [{"a": 1}, {"b": 2}], "t": {"k": "v"}}


ERRORS: list[tuple[str, str, int, int, str, str]] = [
    ("unclosed quote", 'a:\n  b: "x\n  c: d\n', 2, 6, "never closed", "closing quote"),
    ("tab indent", "a:\n\tb: 1\n", 2, 1, "'\\t'", "spaces"),
    ("duplicate key", "a: 1\nb: 2\na: 3\n", 3, 1, "key 'a' is defined twice (first at line 1)",
     "keep one"),
    ("bad indentation", "a:\n  b: 1\n c: 2\n", 3, 2, "expected <block end>", "indentation"),
    ("colon in value", "a: b: c\n", 1, 5, "mapping values are not allowed", "quoted"),
    ("quote ends early", 'a:\n  source: "oci:{{< OCI v="s" >}}"\n', 2, 27, "expected <block end>",
     "single quotes"),
    ("undefined alias", "a: *nope\n", 1, 4, "undefined alias", "anchor"),
    ("list as key", "? [a]\n: 1\n", 1, 3, "a key must be a plain value", "text"),
    ("bad explicit int", "a: !!int abc\n", 1, 4, "'abc' is not a number", "YAML"),
    ("recursive alias", "a: &x [1, *x]\n", 1, 4, "contains itself", "anchor"),
    ("control character", "a: b\x07\n", 1, 5, "not allowed in YAML", "YAML"),
]


@pytest.mark.parametrize(("text", "line", "col", "problem", "hint"), [e[1:] for e in ERRORS],
                         ids=[e[0] for e in ERRORS])
def test_errors_name_file_line_column_and_hint(text: str, line: int, col: int, problem: str,
                                               hint: str) -> None:
    with pytest.raises(YamlError) as info:
        load_yaml_text(text, "oem/90_custom.yaml")
    err = info.value
    assert (err.file, err.line, err.column) == ("oem/90_custom.yaml", line, col)
    assert problem in err.problem
    assert hint in err.hint
    assert str(err).startswith(f"oem/90_custom.yaml:{line}:{col}: ")
    assert isinstance(err, BadInput)


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(YamlError, match="after expanding aliases"):
        load_yaml_text("\n".join(lines))


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(YamlError, match="nested"):
        load_yaml_text("[" * 3000 + "]" * 3000)
    with pytest.raises(YamlError, match="nested more than"):
        load_yaml_text("[" * 150 + "]" * 150)


def test_positions_of_keys_and_items() -> None:
    doc = load_yaml_document("#cloud-config\nusers:\n- name: kairos\n  groups: admin\n", "f")
    assert doc.position(("users",)) == (2, 1)
    assert doc.position(("users", 0)) == (3, 3)
    assert doc.position(("users", 0, "groups")) == (4, 3)
    assert doc.position(("users", 0, "missing")) == (4 - 1, 3)  # nearest ancestor
    assert doc.raw(("users", 0, "groups")) == "admin"
    assert doc.raw(("users", 0)) is None  # not a scalar


def test_merge_key_positions_after_flattening() -> None:
    doc = load_yaml_document("base: &b\n  x: 1\nother:\n  <<: *b\n  y: 2\n", "f")
    assert doc.position(("other", "x")) == (2, 3)  # where the merged key is written
    assert doc.position(("other", "y")) == (5, 3)


def test_only_the_first_document_is_read() -> None:
    doc = load_yaml_document("a: 1\n---\nb: 2\n", "f")
    assert doc.data == {"a": 1} and doc.extra_documents
    assert load_yaml_text("") is None


def test_files(tmp_path: Path) -> None:
    good = tmp_path / "a.yaml"
    good.write_text("\ufeff#cloud-config\nhostname: x\n")
    assert load_yaml_file(good) == {"hostname": "x"}
    bad = tmp_path / "b.yaml"
    bad.write_bytes(b"#cloud-config\nhostname: \xff\n")
    with pytest.raises(YamlError, match=r"b.yaml:2:11: the file is not UTF-8"):
        load_yaml_file(bad)
    with pytest.raises(BadInput, match="cannot read"):
        load_yaml_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize(("text", "ok"), [
    ("#cloud-config\na: 1", True), ("#kairos-config\n", True), ("#node-config  \n", True),
    ("\n" * 9 + "#cloud-config", True), ("\n" * 10 + "#cloud-config", False),
    ("# cloud-config", False), ("a: 1 #cloud-config", False), ("  #cloud-config", False),
    ("\ufeff#cloud-config", True),
])
def test_header_rule(text: str, ok: bool) -> None:
    assert has_header(text) is ok


def test_check_tree_refuses_what_yaml_cannot_hold() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    for bad, message in ((cyclic, "contains itself"), ({1: "a"}, "not a string"),
                         ({"a": b"x"}, "holds a bytes"), ({"a": (1,)}, "holds a tuple")):
        with pytest.raises(BadInput, match=message):
            check_tree(bad)
    check_tree({"a": [1, 2.5, None, True, {"b": "c"}]})


TOKENS = ["a", "b:", ": ", "- ", "-", "\n", "  ", "\t", "&x ", "*x", "<<: ", "{", "}", "[", "]",
          ",", "'", '"', "|", ">", "#", "?", "---", "...", "!!int ", "!!binary ", "!x ", "%YAML 1.1",
          "0755", "true", "~", "\\", "\x00", "\ufeff", "é"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(TOKENS) | st.text(max_size=4), max_size=40).map("".join)
       | st.text(max_size=200))
def test_random_text_never_raises_anything_but_bad_input(text: str) -> None:
    try:
        doc = load_yaml_document(text, "random.yaml")
    except YamlError as exc:
        assert exc.file == "random.yaml" and exc.hint
    else:
        check_tree(doc.data)  # whatever loads is a plain tree
