"""Which service manager a build gets, and what it installs for it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kairos.errors import BadInput
from kairos.factory.base import (
    OPENRC_PACKAGES,
    REQUIRED_PACKAGES,
    debootstrap_argv,
    required_packages,
)
from kairos.factory.bases import BaseSpec
from kairos.factory.inits import check_choice, detect_init, resolve_init, static_init


def _tree(root: Path, *, usr_merge: str = "") -> Path:
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "etc").mkdir()
    if usr_merge:
        os.symlink(usr_merge, root / "sbin")  # "usr/sbin" or the absolute "/usr/sbin"
    else:
        (root / "sbin").mkdir()
    return root


def _systemd(root: Path) -> None:
    (root / "usr/lib/systemd").mkdir(parents=True)
    (root / "usr/lib/systemd/systemd").write_text("")
    os.symlink("/lib/systemd/systemd", root / "usr/sbin/init")


def test_systemd_tree_with_absolute_usr_merge_link(tmp_path: Path) -> None:
    # An absolute /sbin -> /usr/sbin must be followed inside the tree, not on the host.
    root = _tree(tmp_path / "r", usr_merge="/usr/sbin")
    _systemd(root)
    assert detect_init(root) == "systemd"


def test_sysvinit_with_openrc_is_openrc(tmp_path: Path) -> None:
    root = _tree(tmp_path / "r", usr_merge="usr/sbin")
    (root / "usr/sbin/init").write_text("sysvinit")
    (root / "usr/sbin/openrc").write_text("")
    assert detect_init(root) == "openrc"


def test_busybox_init_with_openrc_run_is_openrc(tmp_path: Path) -> None:
    """Alpine's shape: /sbin/init is busybox, OpenRC is only there as openrc-run."""
    root = _tree(tmp_path / "r")
    os.symlink("/bin/busybox", root / "sbin/init")
    (root / "sbin/openrc-run").write_text("")
    assert detect_init(root) == "openrc"


def test_systemd_as_init_wins_over_an_installed_openrc(tmp_path: Path) -> None:
    root = _tree(tmp_path / "r", usr_merge="usr/sbin")
    _systemd(root)
    (root / "usr/sbin/openrc").write_text("")
    assert detect_init(root) == "systemd"


def test_systemd_installed_without_init_link_and_bare_tree(tmp_path: Path) -> None:
    root = _tree(tmp_path / "r")
    assert detect_init(root) is None
    (root / "usr/lib/systemd").mkdir()
    (root / "usr/lib/systemd/systemd").write_text("")
    assert detect_init(root) == "systemd"


def test_resolution(tmp_path: Path) -> None:
    openrc_tree = _tree(tmp_path / "o")
    (openrc_tree / "sbin/openrc").write_text("")
    debian = BaseSpec("debian", "bookworm")
    tree = BaseSpec("dir", str(openrc_tree))
    assert static_init("auto", debian) == "systemd"  # known before debootstrap runs
    assert static_init("auto", tree) is None  # must be read from the tree
    assert static_init("openrc", debian) == "openrc"
    assert resolve_init("auto", tree, openrc_tree) == "openrc"
    assert resolve_init("systemd", tree, openrc_tree) == "systemd"  # asked for wins
    assert resolve_init("auto", tree, _tree(tmp_path / "bare")) == "systemd"


def test_unknown_choice_is_bad_input() -> None:
    assert check_choice("openrc") == "openrc"
    with pytest.raises(BadInput) as err:
        check_choice("runit")
    assert "auto, systemd, openrc" in err.value.hint


def test_openrc_packages_have_no_systemd() -> None:
    pkgs = required_packages("openrc")
    assert pkgs == OPENRC_PACKAGES
    assert not [p for p in pkgs if p.startswith("systemd")]
    for needed in ("sysvinit-core", "openrc", "udev", "dhcpcd", "openssh-server", "python3",
                   "python3-yaml", "python3-jsonschema"):
        assert needed in pkgs
    assert required_packages("systemd") == REQUIRED_PACKAGES
    assert "systemd-sysv" in REQUIRED_PACKAGES


def test_debootstrap_leaves_sysvinit_core_to_apt(tmp_path: Path) -> None:
    """debootstrap resolves sysvinit-core's `sysv-rc | file-rc | openrc` with sysv-rc,
    which conflicts with openrc: it is installed by apt in the packages step instead."""
    argv = debootstrap_argv("bookworm", tmp_path, "file:///mirror", list(OPENRC_PACKAGES))
    include = next(a for a in argv if a.startswith("--include="))
    names = include.removeprefix("--include=").split(",")
    assert "sysvinit-core" not in names and "openrc" in names
    systemd_argv = debootstrap_argv("bookworm", tmp_path, "file:///m", list(REQUIRED_PACKAGES))
    assert f"--include={','.join(REQUIRED_PACKAGES)}" in systemd_argv  # unchanged
