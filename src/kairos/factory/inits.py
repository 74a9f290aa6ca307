"""Which service manager an image gets: `--init systemd|openrc`, or `auto` (the default):
systemd for debootstrapped bases, and for bases given as a tree, what that tree already runs."""

from __future__ import annotations

import os
from pathlib import Path

from kairos.errors import BadInput
from kairos.factory.bases import BaseSpec
from kairos.stages.fsutil import resolve_in_root

INITS = ("systemd", "openrc")
CHOICES = ("auto", *INITS)
OPENRC_BINARIES = ("sbin/openrc", "usr/sbin/openrc", "sbin/openrc-run", "usr/sbin/openrc-run",
                   "bin/openrc", "usr/bin/openrc")
SYSTEMD_BINARIES = ("usr/lib/systemd/systemd", "lib/systemd/systemd")


def check_choice(init: str) -> str:
    if init not in CHOICES:
        raise BadInput(f"unknown init '{init}'", f"use one of: {', '.join(CHOICES)}")
    return init


def _exists(root: Path, rel: str) -> bool:
    # Symlinks inside the tree (usr-merge's /sbin -> usr/sbin, even absolute ones) are
    # followed inside it, never on the build host.
    return os.path.lexists(resolve_in_root(root, rel))


def _init_target(root: Path) -> str:
    """Where the tree's /sbin/init points ("" when it is a plain file or missing)."""
    for rel in ("sbin/init", "usr/sbin/init"):
        path = resolve_in_root(root, rel, follow_last=False)
        if path.is_symlink():
            return os.readlink(path)
    return ""


def detect_init(root: Path) -> str | None:
    """The service manager a root tree runs: systemd when /sbin/init is systemd, openrc when
    OpenRC is installed, systemd when only systemd is, else None (a bare tree)."""
    target = _init_target(root)
    if "systemd" in target:
        return "systemd"
    if "openrc" in target or any(_exists(root, rel) for rel in OPENRC_BINARIES):
        return "openrc"
    if any(_exists(root, rel) for rel in SYSTEMD_BINARIES):
        return "systemd"
    return None


def static_init(requested: str, spec: BaseSpec) -> str | None:
    """The init known before the base exists: given, or systemd for debootstrap; None when
    it must be read from the base tree."""
    if requested != "auto":
        return requested
    return "systemd" if spec.kind == "debian" else None


def resolve_init(requested: str, spec: BaseSpec, tree: Path) -> str:
    """The init for a build once the base tree is there; a tree without any is given systemd
    (what Kairos defaults to)."""
    return static_init(requested, spec) or detect_init(tree) or "systemd"
