"""kairosify drops the base's enablement of units with no work on an image-based device
(apt's timers, e2scrub), and only their links, only inside the tree."""

from __future__ import annotations

import os
from pathlib import Path

from kairos.factory.kairosify import DISABLE, disable_units, remove_unused


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def test_apt_and_e2scrub_are_disabled_and_the_rest_kept(tmp_path: Path) -> None:
    root = tmp_path / "root"
    system = root / "etc/systemd/system"
    _link(system / "timers.target.wants/apt-daily.timer", "/lib/systemd/system/apt-daily.timer")
    _link(system / "timers.target.wants/apt-daily-upgrade.timer", "/x")
    _link(system / "timers.target.wants/fstrim.timer", "/lib/systemd/system/fstrim.timer")
    _link(system / "multi-user.target.wants/e2scrub_reap.service", "/x")
    _link(system / "multi-user.target.wants/ssh.service", "/lib/systemd/system/ssh.service")
    disable_units(root)
    left = sorted(str(p.relative_to(system)) for p in system.rglob("*") if p.is_symlink())
    assert left == ["multi-user.target.wants/ssh.service", "timers.target.wants/fstrim.timer"]
    assert "apt-daily.timer" in DISABLE


def test_a_file_of_that_name_and_links_to_the_host_are_left(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "timers.target.wants").mkdir(parents=True)
    planted = host / "timers.target.wants/apt-daily.timer"
    planted.write_text("host's\n")
    root = tmp_path / "root"
    system = root / "etc/systemd/system"
    system.mkdir(parents=True)
    # A .wants dir that is a link out of the tree: a wildcard never leads through it.
    os.symlink(host / "timers.target.wants", system / "timers.target.wants")
    (system / "multi-user.target.wants").mkdir()
    (system / "multi-user.target.wants/e2scrub_reap.service").write_text("[Unit]\n")
    disable_units(root)
    assert planted.read_text() == "host's\n"
    assert (system / "multi-user.target.wants/e2scrub_reap.service").is_file()


def test_grubs_prebuilt_efi_images_are_removed_only_inside_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    efi = root / "usr/lib/grub/x86_64-efi"
    (efi / "monolithic").mkdir(parents=True)
    (efi / "monolithic/grubx64.efi").write_bytes(b"x" * 100)
    (efi / "normal.mod").write_bytes(b"mod")  # what the installer builds from: kept
    remove_unused(root)
    assert not (efi / "monolithic").exists() and (efi / "normal.mod").exists()
    # a planted link at that path is left alone, and what it points to untouched
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    (efi / "monolithic").symlink_to(outside)
    remove_unused(root)
    assert (outside / "keep").read_text() == "keep"
