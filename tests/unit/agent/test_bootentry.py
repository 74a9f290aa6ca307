from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kairos.agent.bootentry import list_entries, select
from kairos.errors import BadInput


def test_select_sets_next_entry_readable_by_grub_editenv(tmp_path: Path) -> None:
    env = tmp_path / "grubenv"
    got = select("fallback", env)
    assert got.next == "fallback"
    listed = subprocess.run(["grub-editenv", str(env), "list"], capture_output=True, text=True,
                            check=True).stdout
    assert "next_entry=fallback" in listed
    assert env.stat().st_size == 1024


def test_defaults_and_unknown_entry(tmp_path: Path) -> None:
    env = tmp_path / "grubenv"
    assert list_entries(env).default == "cos"
    subprocess.run(["grub-editenv", str(env), "set", "saved_entry=recovery"], check=True)
    assert list_entries(env).default == "recovery"
    with pytest.raises(BadInput):
        select("bogus", env)
