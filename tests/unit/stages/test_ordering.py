from __future__ import annotations

from typing import Any

from kairos.stages.graph import build_ops, order
from kairos.stages.model import StageDoc, parse_doc


def doc(source: str, steps: list[dict[str, Any]], name: str = "") -> StageDoc:
    data: dict[str, Any] = {"stages": {"boot": steps}}
    if name:
        data["name"] = name
    return parse_doc(data, source, cloud_config=False)


def names(docs: list[StageDoc], stage: str = "boot") -> list[str]:
    ordered, _ = order(build_ops(stage, docs))
    return [op.name for op in ordered]


def test_files_in_order_steps_in_order() -> None:
    docs = [doc("/oem/01.yaml", [{"name": "a"}, {"name": "b"}], name="first"),
            doc("/oem/02.yaml", [{"name": "c"}, {}])]
    assert names(docs) == ["first.a", "first.b", "/oem/02.yaml.c", "/oem/02.yaml.1"]


def test_after_moves_a_step_behind_another_file() -> None:
    docs = [doc("/oem/01.yaml", [{"name": "a", "after": [{"name": "second.x"}]},
                                 {"name": "b"}], name="first"),
            doc("/oem/02.yaml", [{"name": "x"}, {"name": "y"}], name="second")]
    # a waits for second.x; b follows a (its file predecessor); y follows x. The file order
    # (second after first) conflicts with `after` and gives way.
    assert names(docs) == ["second.x", "first.a", "first.b", "second.y"]


def test_after_wins_over_file_order() -> None:
    docs = [doc("f", [{"name": "a"}, {"name": "b", "after": [{"name": "n.c"}]}, {"name": "c"}],
                name="n")]
    # b waits for c; c's implicit "after b" gives way; a keeps its place
    assert names(docs) == ["n.a", "n.c", "n.b"]


def test_duplicate_step_names_get_indexes_and_duplicate_docs_get_suffixes() -> None:
    docs = [doc("a", [{"name": "same"}, {"name": "same"}], name="Default config"),
            doc("b", [{"name": "same"}, {"name": "other"}], name="Default config")]
    assert names(docs) == ["Default config.same.0", "Default config.same.1",
                           "Default config.same", "Default config.other"]
    docs = [doc("a", [{"name": "x"}], name="D"), doc("b", [{"name": "x"}], name="D"),
            doc("c", [{"name": "x"}], name="D")]
    assert names(docs) == ["D.x", "D.x.1", "D.x.2"]


def test_unknown_after_and_cycles_warn_but_keep_every_step() -> None:
    docs = [doc("f", [{"name": "a", "after": [{"name": "n.b"}]},
                      {"name": "b", "after": [{"name": "n.a"}]},
                      {"name": "c", "after": [{"name": "nowhere.z"}]}], name="n")]
    ordered, warnings = order(build_ops("boot", docs))
    assert sorted(op.name for op in ordered) == ["n.a", "n.b", "n.c"]
    assert any("nowhere.z" in w for w in warnings)
    assert any("circular" in w for w in warnings)


def test_other_stages_are_separate() -> None:
    docs = [doc("f", [{"name": "a"}])]
    assert names(docs, "network") == []


def test_after_an_earlier_file_keeps_everything_else_in_place() -> None:
    docs = [doc("a", [{"name": "1"}, {"name": "2"}], name="A"),
            doc("b", [{"name": "1"}, {"name": "2", "after": [{"name": "A.1"}]}], name="B"),
            doc("c", [{"name": "1"}], name="C")]
    assert names(docs) == ["A.1", "A.2", "B.1", "B.2", "C.1"]
