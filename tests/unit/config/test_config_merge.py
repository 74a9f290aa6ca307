"""Kairos's merge rules, one table row per rule, plus the sources record and properties."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kairos.config.merge import Layer, MergeConflict, merge, merge_layer, merge_layers
from kairos.errors import BadInput

RULES: list[tuple[str, Any, Any, Any]] = [
    ("maps merge deeply",
     {"install": {"auto": True, "device": "/dev/sda"}}, {"install": {"device": "/dev/vda"}},
     {"install": {"auto": True, "device": "/dev/vda"}}),
    ("new keys are added", {"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
    ("scalar: last wins", {"hostname": "a"}, {"hostname": "b"}, {"hostname": "b"}),
    ("scalar of another type: last wins", {"x": 1}, {"x": "1"}, {"x": "1"}),
    ("lists of maps concatenate",
     {"users": [{"name": "a"}]}, {"users": [{"name": "a"}, {"name": "b"}]},
     {"users": [{"name": "a"}, {"name": "a"}, {"name": "b"}]}),
    ("lists of scalars union in order",
     {"args": ["--a", "--b"]}, {"args": ["--c", "--a", "--c", "--d"]},
     {"args": ["--a", "--b", "--c", "--d"]}),
    ("union keeps 1 and true apart (Go compares types)", {"l": [1]}, {"l": [True, 1]},
     {"l": [1, True]}),
    ("empty base list takes the overlay", {"l": []}, {"l": [{"a": 1}]}, {"l": [{"a": 1}]}),
    ("a first item that is a map decides: concatenate", {"l": [{"a": 1}, 2]}, {"l": [2]},
     {"l": [{"a": 1}, 2, 2]}),
    ("a first scalar decides: union", {"l": [1, {"a": 1}]}, {"l": [{"a": 1}, 3]},
     {"l": [1, {"a": 1}, 3]}),
    ("null clears a list", {"l": [1, 2], "name": "x"}, {"l": None}, {"l": [], "name": "x"}),
    ("null clears a map", {"k3s": {"enabled": True}}, {"k3s": None}, {"k3s": {}}),
    ("null clears a string to ''", {"name": "Mario"}, {"name": None}, {"name": ""}),
    ("null clears a number and a bool", {"n": 5, "b": True}, {"n": None, "b": None},
     {"n": 0, "b": False}),
    ("null for a new key stays null", {}, {"x": None}, {"x": None}),
    ("a null base takes the overlay", {"x": None}, {"x": {"a": [1]}}, {"x": {"a": [1]}}),
    ("nested lists inside maps inside lists",
     {"stages": {"boot": [{"commands": ["a"]}]}}, {"stages": {"boot": [{"commands": ["b"]}]}},
     {"stages": {"boot": [{"commands": ["a"]}, {"commands": ["b"]}]}}),
]


@pytest.mark.parametrize(("base", "overlay", "expected"), [r[1:] for r in RULES],
                         ids=[r[0] for r in RULES])
def test_merge_rule(base: Any, overlay: Any, expected: Any) -> None:
    before = (copy.deepcopy(base), copy.deepcopy(overlay))
    assert merge(base, overlay, "a.yaml", "b.yaml") == expected
    assert (base, overlay) == before  # inputs are never changed


CONFLICTS = [
    ("map vs list", {"users": {"name": "x"}}, {"users": [{"name": "x"}]}, "users", "a map",
     "a list"),
    ("list vs scalar", {"args": ["a"]}, {"args": "a"}, "args", "a list", "a single value"),
    ("scalar vs map, nested", {"install": {"device": "x"}}, {"install": {"device": {"a": 1}}},
     "install.device", "a single value", "a map"),
    ("inside a list item", {"l": [[1]]}, {"l": [{"a": 1}]}, None, None, None),
]


@pytest.mark.parametrize(("base", "overlay", "where", "kind_a", "kind_b"),
                         [c[1:] for c in CONFLICTS], ids=[c[0] for c in CONFLICTS])
def test_type_mismatch_is_an_error_naming_both_sources(base: Any, overlay: Any, where: Any,
                                                       kind_a: Any, kind_b: Any) -> None:
    if where is None:  # a list of lists unions with a map item: no conflict, just appended
        assert merge(base, overlay, "/oem/a.yaml", "/oem/b.yaml") == {"l": [[1], {"a": 1}]}
        return
    with pytest.raises(MergeConflict) as info:
        merge(base, overlay, "/oem/a.yaml", "/oem/b.yaml")
    text = str(info.value)
    assert f"cannot merge {where}: /oem/a.yaml has {kind_a}, /oem/b.yaml has {kind_b}" in text
    assert isinstance(info.value, BadInput) and info.value.hint


def test_sources_follow_concatenation_union_and_clearing() -> None:
    data: dict[str, Any] = {}
    sources: dict[tuple[Any, ...], str] = {}
    data = merge_layer(data, sources, Layer.single(
        {"users": [{"name": "a"}], "args": ["x"], "k3s": {"env": {"A": "1"}}}, "one"))
    data = merge_layer(data, sources, Layer.single(
        {"users": [{"name": "b"}], "args": ["x", "y"], "k3s": None}, "two"))
    assert data == {"users": [{"name": "a"}, {"name": "b"}], "args": ["x", "y"], "k3s": {}}
    assert sources[("users", 0, "name")] == "one"
    assert sources[("users", 1, "name")] == "two"
    assert sources[("users",)] == "two"  # the list was last extended by "two"
    assert sources[("args", 0)] == "one" and sources[("args", 1)] == "two"
    assert sources[("k3s",)] == "two"
    assert ("k3s", "env", "A") not in sources  # cleared with its parent


def test_merge_layers_keeps_each_layers_sources() -> None:
    file_layer = Layer.single({"hostname": "a", "install": {"auto": True}}, "/oem/a.yaml")
    url_layer = Layer.single({"install": {"device": "/dev/vda"}}, "http://h/c.yaml")
    both = merge_layers(file_layer, url_layer)
    assert both.source_of(("hostname",)) == "/oem/a.yaml"
    assert both.source_of(("install", "auto")) == "/oem/a.yaml"
    assert both.source_of(("install", "device")) == "http://h/c.yaml"


def test_absurd_depth_is_bad_input_not_recursion_error() -> None:
    deep: Any = 1
    for _ in range(150):
        deep = {"a": deep}
    with pytest.raises(BadInput, match="nested more than"):
        merge(deep, deep)


# ---- properties -------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(
    max_size=8)
trees = st.recursive(scalars, lambda c: st.lists(c, max_size=4)
                     | st.dictionaries(st.sampled_from("abcde"), c, max_size=4), max_leaves=30)
anything = st.recursive(
    scalars | st.binary(max_size=3) | st.tuples(st.integers()),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.integers() | st.text(max_size=3), c,
                                                         max_size=4), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(trees, trees)
def test_merge_only_ever_raises_bad_input(base: Any, overlay: Any) -> None:
    with contextlib.suppress(BadInput):
        merge(base, overlay)


@settings(max_examples=200, deadline=None)
@given(anything, anything)
def test_merge_of_odd_python_values_only_raises_bad_input(base: Any, overlay: Any) -> None:
    with contextlib.suppress(BadInput):
        merge(base, overlay)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from("abcde"), trees, max_size=5))
def test_empty_is_neutral(doc: dict[str, Any]) -> None:
    assert merge({}, doc) == doc
    assert merge(doc, {}) == doc


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from("abcde"), trees, max_size=5),
       st.dictionaries(st.sampled_from("abcde"), trees, max_size=5))
def test_every_key_survives_and_overlay_scalars_win(a: dict[str, Any], b: dict[str, Any]) -> None:
    try:
        result = merge(a, b)
    except MergeConflict:
        return
    assert set(result) == set(a) | set(b)
    for key, value in b.items():
        if value is not None and not isinstance(value, dict | list):
            assert result[key] == value
