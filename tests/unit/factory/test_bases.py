from __future__ import annotations

import pytest

from kairos.errors import BadInput
from kairos.factory.bases import parse_base


def test_debian_suites() -> None:
    assert parse_base("debian:bookworm").value == "bookworm"
    assert parse_base("debian:trixie").kind == "debian"


@pytest.mark.parametrize("text", ["ubuntu:jammy", "bookworm", "debian:", "debian:sid", "oci:x"])
def test_bad_bases_are_bad_input(text: str) -> None:
    with pytest.raises(BadInput) as err:
        parse_base(text)
    assert err.value.exit_code == 2
    assert err.value.hint


def test_paths_must_exist(tmp_path) -> None:
    assert parse_base(f"dir:{tmp_path}").path == tmp_path
    with pytest.raises(BadInput):
        parse_base(f"dir:{tmp_path}/missing")
    (tmp_path / "root.tar").write_bytes(b"")
    assert parse_base(f"tar:{tmp_path}/root.tar").kind == "tar"
    with pytest.raises(BadInput):
        parse_base(f"ocifile:{tmp_path}")  # a directory is not an archive
    assert parse_base(f"oci-layout:{tmp_path}").kind == "oci-layout"
