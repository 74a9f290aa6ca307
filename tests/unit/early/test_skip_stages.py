from __future__ import annotations

from pathlib import Path

from kairos.early.main import mark_empty_stages


def _root(tmp_path: Path, oem_text: str | None) -> Path:
    (tmp_path / "system/oem").mkdir(parents=True)
    (tmp_path / "system/oem/00_x.yaml").write_text(
        "name: x\nstages:\n  boot:\n    - commands: [true]\n")
    if oem_text is not None:
        (tmp_path / "oem").mkdir()
        (tmp_path / "oem/90_custom.yaml").write_text(oem_text)
    return tmp_path


def test_fs_is_skipped_only_when_no_file_has_fs_steps(tmp_path: Path) -> None:
    root = _root(tmp_path / "a", None)
    assert mark_empty_stages("quiet", root, str(tmp_path / "skip-a")) == ["fs"]
    assert (tmp_path / "skip-a/fs").exists()
    root = _root(tmp_path / "b", "#cloud-config\nstages:\n  fs.after:\n    - commands: [true]\n")
    assert mark_empty_stages("quiet", root, str(tmp_path / "skip-b")) == []
    assert not (tmp_path / "skip-b/fs").exists()


def test_kernel_cmdline_config_disables_skipping(tmp_path: Path) -> None:
    root = _root(tmp_path / "a", None)
    assert mark_empty_stages("config_url=http://127.0.0.1/x", root, str(tmp_path / "s")) == []
    assert mark_empty_stages("stages.fs[0].commands[0]=true", root, str(tmp_path / "s")) == []
