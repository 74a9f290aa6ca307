"""The NoCloud cidata volume: label, file names, user-data bytes untouched, stable id."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kairos.errors import BadInput
from kairos.vm.cidata import build_cidata, meta_data

USER_DATA = b"#cloud-config\nusers:\n  - name: kairos\n    passwd: kairos\n"


def xorriso(*args: str) -> str:
    proc = subprocess.run(["xorriso", *args], capture_output=True, text=True, check=True)
    return proc.stdout + proc.stderr


@pytest.fixture
def iso(tmp_path: Path) -> Path:
    cc = tmp_path / "config.yaml"
    cc.write_bytes(USER_DATA)
    return build_cidata(cc, tmp_path / "cidata.iso", hostname="node1")


def test_volume_label_is_cidata(iso: Path) -> None:
    out = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True,
                         check=True).stdout
    assert "Volume id: cidata" in out
    assert "Joliet" in out and "Rock Ridge" in out


def test_files_are_user_data_and_meta_data(iso: Path) -> None:
    listing = xorriso("-indev", str(iso), "-find", "/", "-type", "f")
    files = sorted(line.strip().strip("'") for line in listing.splitlines()
                   if line.strip().startswith("'/"))
    assert files == ["/meta-data", "/user-data"]


def test_user_data_is_the_file_as_is(iso: Path, tmp_path: Path) -> None:
    out = tmp_path / "extracted"
    xorriso("-osirrox", "on", "-indev", str(iso), "-extract", "/user-data", str(out))
    assert out.read_bytes() == USER_DATA
    meta = tmp_path / "meta"
    xorriso("-osirrox", "on", "-indev", str(iso), "-extract", "/meta-data", str(meta))
    assert meta.read_text() == meta_data(USER_DATA, "node1")


def test_meta_data_instance_id_stable_per_content() -> None:
    a = meta_data(USER_DATA, "h")
    assert a == meta_data(USER_DATA, "h")
    assert a != meta_data(USER_DATA + b"# changed\n", "h")
    assert a.startswith("instance-id: iid-") and "local-hostname: h\n" in a


def test_missing_cloud_config(tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        build_cidata(tmp_path / "nope.yaml", tmp_path / "x.iso")
