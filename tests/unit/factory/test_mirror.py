from __future__ import annotations

import pytest

from kairos.errors import BadInput
from kairos.factory.mirror import debian_mirror, host_sources

DEB822 = """Types: deb
URIs: http://mirror.example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_deb822(tmp_path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(DEB822)
    assert debian_mirror(tmp_path) == "http://mirror.example.org/debian"
    assert len(host_sources(tmp_path)) == 2


def test_one_line_format_with_options(tmp_path) -> None:
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb-src http://src.example.org/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example.org/debian/ bookworm main contrib\n")
    assert debian_mirror(tmp_path) == "http://one.example.org/debian"


def test_no_debian_source_is_bad_input(tmp_path) -> None:
    (tmp_path / "sources.list").write_text("deb http://x.example.org/foo stable-updates main\n")
    with pytest.raises(BadInput) as err:
        debian_mirror(tmp_path)
    assert "--mirror" in err.value.hint
