from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kairos.envfile import parse_env, parse_value, quote, render_env


@pytest.mark.parametrize("text,want", [
    ("", {}),
    ("\n\n   \n", {}),
    ("# A=1\n  # B=2\n", {}),
    ("A=1\nB=two\n", {"A": "1", "B": "two"}),
    ('A="x y"\nB=\'z\'\nC=plain\n# D=no\nE="a \\"q\\""\nbroken line\n',
     {"A": "x y", "B": "z", "C": "plain", "E": 'a "q"'}),
    ("export A=1\nexport\tB='2'\nexporter=3\n", {"A": "1", "B": "2", "exporter": "3"}),
    ("A = spaced \n", {"A": "spaced"}),
    ("A=\nB=''\nC=\"\"\n", {"A": "", "B": "", "C": ""}),
    ("A=1\nA=2\n", {"A": "2"}),  # the later line wins, as when sh sources it
    ("A=x # a comment\nB=y#not\nC=#not\nD= # empty\n",
     {"A": "x", "B": "y#not", "C": "#not", "D": ""}),
    ('A="value # kept"\nB=\'v # kept\'  # dropped\n', {"A": "value # kept", "B": "v # kept"}),
    ("A=LABEL=COS_PERSISTENT:/usr/local\n", {"A": "LABEL=COS_PERSISTENT:/usr/local"}),
    ('A="\\$HOME \\`x\\` \\\\ \\!"\n', {"A": "$HOME `x` \\ !"}),
    ('A="line1\\nline2\\r"\n', {"A": "line1\nline2\r"}),  # godotenv's escapes
    ('A="C:\\temp"\n', {"A": "C:\\temp"}),  # an unknown escape keeps its backslash, as in sh
    ("A='no \\n escapes'\n", {"A": "no \\n escapes"}),
    ("A=un\\ quoted\n", {"A": "un quoted"}),
    ("A=\"mixed\"'parts'tail\n", {"A": "mixedpartstail"}),
    ("A=x   y\n", {"A": "x   y"}),  # inner unquoted white space is kept
    ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),  # CRLF files
    ('A="unterminated\nB=\'also\n', {"A": "unterminated", "B": "also"}),  # junk: no error
    ("=nokey\nA B=1\n'A'=1\nVALID=1\n", {"VALID": "1"}),
    ('NAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
     'HOME_URL="https://www.debian.org/"\n',
     {"NAME": "Debian GNU/Linux", "VERSION_ID": "12", "ID": "debian",
      "HOME_URL": "https://www.debian.org/"}),
])
def test_parse_env(text: str, want: dict[str, str]) -> None:
    assert parse_env(text) == want


@pytest.mark.parametrize("raw,want", [
    ('"a"', "a"), ("  'b'  ", "b"), ('"\\""', '"'), ("", ""), ("   ", ""), ("\\", "\\"),
])
def test_parse_value(raw: str, want: str) -> None:
    assert parse_value(raw) == want


@pytest.mark.parametrize("value,want", [
    ("plain", '"plain"'), ("", '""'), ('a "q"', '"a \\"q\\""'), ("$HOME", '"\\$HOME"'),
    ("`x`", '"\\`x\\`"'), ("back\\slash", '"back\\\\slash"'), ("two\nlines", '"two\\nlines"'),
])
def test_quote(value: str, want: str) -> None:
    assert quote(value) == want


def test_render_keeps_the_mapping_order() -> None:
    assert render_env({"B": "2", "A": "1"}) == 'B="2"\nA="1"\n'
    assert render_env({}) == ""


def test_rendered_file_reads_back_the_same_in_sh(tmp_path: Path) -> None:
    values = {"VOLUMES": "LABEL=COS_PERSISTENT:/usr/local LABEL=DATA:/data",
              "TRICKY": 'a "quoted" $HOME `x` \\ back! #not-a-comment', "EMPTY": ""}
    path = tmp_path / "test.env"
    path.write_text(render_env(values))
    for key, value in values.items():
        out = subprocess.run(["sh", "-c", f'. "{path}"; printf %s "${key}"'],
                             capture_output=True, text=True, check=True).stdout
        assert out == value


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_never_raises(text: str) -> None:
    result = parse_env(text)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in result.items())


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="=\"'\\#$` \t\nexport AB\r"))
def test_parse_never_raises_on_quote_soup(text: str) -> None:
    parse_env(text)


KEYS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, st.text()))
def test_render_then_parse_round_trips(env: dict[str, str]) -> None:
    assert parse_env(render_env(env)) == env
