from __future__ import annotations

from pathlib import Path

from kairos.stages.fields import DecimalInt
from kairos.stages.loader import is_cloud_config, load_docs, parse_yaml, stage_files


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_default_dirs_in_order_files_lexical_recursive(tmp_path: Path) -> None:
    write(tmp_path / "oem/10_b.yaml", "stages: {}")
    write(tmp_path / "oem/02_a.yml", "stages: {}")
    write(tmp_path / "oem/sub/01_c.yaml", "stages: {}")
    write(tmp_path / "oem/notes.txt", "ignored")
    write(tmp_path / "system/oem/99_last.yaml", "stages: {}")
    write(tmp_path / "usr/local/cloud-config/00_first.yaml", "stages: {}")
    found = [device for _, device in stage_files(tmp_path, ("/system/oem", "/oem",
                                                            "/usr/local/cloud-config"))]
    assert found == ["/system/oem/99_last.yaml", "/oem/02_a.yml", "/oem/10_b.yaml",
                     "/oem/sub/01_c.yaml", "/usr/local/cloud-config/00_first.yaml"]


def test_explicit_file_and_missing_sources(tmp_path: Path) -> None:
    write(tmp_path / "cfg/only.conf", "stages: {}")
    found = stage_files(tmp_path, ["/cfg/only.conf", "/does/not/exist"])
    assert [d for _, d in found] == ["/cfg/only.conf"]


def test_stages_are_additive_across_files(tmp_path: Path) -> None:
    write(tmp_path / "oem/01.yaml", "stages:\n  boot:\n  - commands: [a]\n")
    write(tmp_path / "oem/02.yaml", "#cloud-config\nstages:\n  boot:\n  - commands: [b]\n")
    loaded = load_docs(tmp_path, ["/oem"], [("extra", {"stages": {"boot": [{"name": "e"}]}})])
    assert [d.source for d in loaded.docs] == ["/oem/01.yaml", "/oem/02.yaml", "extra"]
    assert [len(d.stages.get("boot", [])) for d in loaded.docs] == [1, 2, 2]


def test_invalid_yaml_is_a_warning_with_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "oem/bad.yaml", "stages:\n  boot:\n    - name: x\n   commands: [a\n")
    write(tmp_path / "oem/good.yaml", "stages:\n  boot:\n  - commands: [ok]\n")
    loaded = load_docs(tmp_path, ["/oem"])
    assert len(loaded.errors) == 1
    assert loaded.errors[0].startswith("/oem/bad.yaml:4: invalid YAML")
    assert loaded.docs[1].stages["boot"][0].payloads == {"commands": ["ok"]}


def test_header_detection() -> None:
    assert is_cloud_config("#cloud-config\nfoo: 1")
    assert is_cloud_config("# a comment\n\n#cloud-config  \n")
    assert not is_cloud_config("name: x\n#cloud-config\n")
    assert not is_cloud_config("#kairos-config\n")


def test_decimal_ints_are_marked() -> None:
    data, problem = parse_yaml("a: 644\nb: 0644\nc: '644'\nd: 0\n", "x")
    assert problem is None
    assert isinstance(data["a"], DecimalInt) and data["a"] == 644
    assert not isinstance(data["b"], DecimalInt) and data["b"] == 0o644
    assert data["c"] == "644"
    assert isinstance(data["d"], DecimalInt)


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    text = ("stages:\n  a:\n  - &s\n    name: one\n    commands: [x]\n"
            "  b:\n  - <<: *s\n    name: two\n")
    write(tmp_path / "oem/x.yaml", text)
    doc = load_docs(tmp_path, ["/oem"]).docs[0]
    assert doc.stages["b"][0].name == "two"
    assert doc.stages["b"][0].payloads == {"commands": ["x"]}
