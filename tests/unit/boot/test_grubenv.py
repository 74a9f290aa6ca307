"""The grubenv codec against its format and against the real grub-editenv, both directions."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kairos.boot import grubenv
from kairos.run import run

needs_editenv = pytest.mark.skipif(shutil.which("grub-editenv") is None,
                                   reason="grub-editenv (grub-common) not installed")

names = st.text(st.characters(blacklist_characters="=\n\0", blacklist_categories=("Cs",)),
                min_size=1, max_size=12).filter(lambda n: not n.startswith("#"))
values = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                 max_size=40)


def editenv(path: Path, *args: str) -> str:
    return run(["grub-editenv", str(path), *args]).stdout


def test_empty_block_is_header_and_padding() -> None:
    block = grubenv.encode({})
    assert len(block) == 1024
    assert block.startswith(b"# GRUB Environment Block\n")
    assert block[len(grubenv.HEADER):] == b"#" * (1024 - len(grubenv.HEADER))


def test_escaping_of_backslash_and_newline() -> None:
    block = grubenv.encode({"a": "x\\y", "b": "l1\nl2", "c": "k=v"})
    assert b"a=x\\\\y\nb=l1\\\nl2\nc=k=v\n" in block
    assert grubenv.decode(block) == {"a": "x\\y", "b": "l1\nl2", "c": "k=v"}


@given(st.dictionaries(names, values, max_size=6))
def test_round_trip(env: dict[str, str]) -> None:
    try:
        block = grubenv.encode(env)
    except grubenv.EnvBlockError:
        return  # too large for 1024 bytes: covered by the overflow test
    assert len(block) == 1024
    assert grubenv.decode(block) == env


def test_overflow_is_a_clear_error() -> None:
    with pytest.raises(grubenv.EnvBlockError, match="does not fit in 1024 bytes"):
        grubenv.encode({"extra_cmdline": "x" * 1000})


@pytest.mark.parametrize("name", ["", "a=b", "a\nb", "#x"])
def test_bad_names_are_rejected(name: str) -> None:
    with pytest.raises(grubenv.EnvBlockError, match="invalid GRUB environment variable"):
        grubenv.encode({name: "1"})


def test_decode_rejects_a_foreign_file() -> None:
    with pytest.raises(grubenv.EnvBlockError, match="not a GRUB environment block"):
        grubenv.decode(b"hello")


def test_write_is_exactly_1024_bytes_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "grubenv"
    grubenv.write(path, {"saved_entry": "cos"})
    grubenv.set_vars(path, {"next_entry": "recovery", "saved_entry": "fallback"})
    assert path.stat().st_size == 1024
    assert os.listdir(tmp_path) == ["grubenv"]
    # Existing names keep their place; new ones are appended, as grub-editenv does.
    assert list(grubenv.read(path).items()) == [("saved_entry", "fallback"),
                                               ("next_entry", "recovery")]
    assert grubenv.unset_vars(path, ["saved_entry", "missing"]) == {"next_entry": "recovery"}


def test_overflowing_set_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "grubenv"
    grubenv.write(path, {"a": "1"})
    before = path.read_bytes()
    with pytest.raises(grubenv.EnvBlockError):
        grubenv.set_vars(path, {"b": "y" * 2000})
    assert path.read_bytes() == before


def test_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert grubenv.read(tmp_path / "nothing") == {}


@needs_editenv
def test_grub_editenv_reads_what_we_write(tmp_path: Path) -> None:
    path = tmp_path / "grubenv"
    grubenv.create(path)
    assert editenv(path, "list") == ""
    grubenv.set_vars(path, {"next_entry": "recovery", "extra_cmdline": "a\\b\nc"})
    assert editenv(path, "list") == "next_entry=recovery\nextra_cmdline=a\\b\nc\n"
    grubenv.unset_vars(path, ["next_entry"])
    assert editenv(path, "list") == "extra_cmdline=a\\b\nc\n"
    # ... and grub-editenv can keep editing our file in place.
    editenv(path, "set", "saved_entry=fallback")
    assert grubenv.read(path) == {"extra_cmdline": "a\\b\nc", "saved_entry": "fallback"}


@needs_editenv
def test_we_read_what_grub_editenv_writes(tmp_path: Path) -> None:
    path = tmp_path / "grubenv"
    editenv(path, "create")
    assert grubenv.read(path) == {}
    editenv(path, "set", "saved_entry=cos", "extra_cmdline=x\\y", "multi=1\n2", "empty=")
    assert grubenv.read(path) == {"saved_entry": "cos", "extra_cmdline": "x\\y",
                                  "multi": "1\n2", "empty": ""}
    editenv(path, "unset", "saved_entry")
    assert "saved_entry" not in grubenv.read(path)
    grubenv.set_vars(path, {"next_entry": "recovery"})
    assert path.stat().st_size == 1024
    assert editenv(path, "list").splitlines() == [
        "extra_cmdline=x\\y", "multi=1", "2", "empty=", "next_entry=recovery"]


@needs_editenv
@given(st.dictionaries(st.sampled_from(["a", "b", "extra_cmdline", "n.x"]),
                       st.text(st.characters(min_codepoint=32, max_codepoint=126,
                                             blacklist_characters="\\"), max_size=20),
                       max_size=4))
def test_grub_editenv_lists_our_blocks(env: dict[str, str]) -> None:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grubenv"
        grubenv.write(path, env)
        listed = editenv(path, "list")
    assert listed == "".join(f"{k}={v}\n" for k, v in env.items())
