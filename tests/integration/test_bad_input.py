"""Bad input to `kairos disk` and `kairos build` gets one line with a hint, exit 2, and
leaves no artifact."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import kairos

pytestmark = pytest.mark.integration

CASES = {
    "yaml syntax error": ("#cloud-config\nusers:\n  - name: kairos\n    groups: [admin\n", ":4:13:"),
    "wrong type": ("#cloud-config\nusers:\n  - name: kairos\n    groups: admin\n", "groups"),
    "missing header": ("users:\n  - name: kairos\n", "#cloud-config"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_cloud_config_is_refused_before_writing(case: str, default_image: dict[str, object],
                                                        tmp_path: Path) -> None:
    text, needle = CASES[case]
    cc = tmp_path / "bad.yaml"
    cc.write_text(text)
    out = tmp_path / "disk.raw"
    proc = kairos("disk", str(default_image["output"]), "-o", str(out), "--cloud-config", str(cc),
                  check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr
    assert "bad.yaml" in proc.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [cc], "no temp file left behind"


def test_missing_image_dir_and_too_small_size(tmp_path: Path, default_image: dict[str, object]) -> None:
    proc = kairos("disk", str(tmp_path / "nope"), "-o", str(tmp_path / "d.raw"), check=False)
    assert proc.returncode == 2 and "hint:" in proc.stderr
    proc = kairos("disk", str(default_image["output"]), "-o", str(tmp_path / "d.raw"),
                  "--size", "200M", check=False)
    assert proc.returncode == 2 and "too small" in proc.stderr
    assert not (tmp_path / "d.raw").exists()


@pytest.mark.parametrize("epoch", ["abc", "-1", "1.5"])
def test_bad_source_date_epoch_is_one_line_exit_2(epoch: str, tmp_path: Path) -> None:
    proc = kairos("build", "--output", str(tmp_path / "out"), check=False,
                  env={"SOURCE_DATE_EPOCH": epoch})
    assert proc.returncode == 2, proc.stderr
    assert "SOURCE_DATE_EPOCH" in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
