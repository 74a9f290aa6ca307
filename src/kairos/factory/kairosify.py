"""Turn a base tree into a Kairos image tree: agent, early-init, initrd, stage configs,
units, release file; then strip what would make two builds differ."""

from __future__ import annotations

import logging
import os
import shutil
from importlib import resources
from pathlib import Path

import kairos
from kairos.artifacts.initrd import build_initrd, kernel_version
from kairos.factory.release import Release
from kairos.run import run

log = logging.getLogger("kairos.factory")

PKG_DIR = Path(kairos.__file__).resolve().parent
AGENT_LIB = "usr/lib/kairos/python"
EARLY_INIT = """#!/usr/bin/python3 -S
# kairos early-init: PID 1 after the initrd (see kairos/early/main.py)
import sys
sys.path[:0] = ["/usr/lib/kairos/python"]
sys.path.append("/usr/lib/python3/dist-packages")
from kairos.early.main import main
main()
"""
WRAPPER = """#!/usr/bin/python3 -S
import sys
sys.path[:0] = ["/usr/lib/kairos/python"]
sys.path.append("/usr/lib/python3/dist-packages")  # -S: no site scan, just what we use
from kairos.cli import main
sys.exit(main())
"""
RUN_STAGE = """#!/usr/bin/python3 -S
import sys
sys.path[:0] = ["/usr/lib/kairos/python"]
sys.path.append("/usr/lib/python3/dist-packages")
from kairos.early.stage import main
sys.exit(main())
"""
UNITS = ("cos-setup-fs.service", "cos-setup-boot.service", "cos-setup-network.service",
         "cos-setup-reconcile.service", "cos-setup-reconcile.timer", "kairos-ssh-keygen.service")
ENABLE = {"sysinit.target": ("cos-setup-fs.service",),
          "multi-user.target": ("cos-setup-boot.service", "cos-setup-network.service",
                                "kairos-ssh-keygen.service", "ssh.service",
                                "systemd-networkd.service", "systemd-resolved.service"),
          "timers.target": ("cos-setup-reconcile.timer",)}
# Paths that must exist on the read-only root: mount points and persistent bind targets.
MOUNT_POINTS = ("oem", "usr/local", "system", "home", "root", "opt", "srv", "usr/libexec",
                "run/cos", "var/lib/kairos")


def _data(rel: str) -> resources.abc.Traversable:
    return resources.files("kairos.factory").joinpath("data", rel)


def install_agent(root: Path) -> None:
    """This project, installed so the agent and early-init run on the image's python3."""
    dest = root / AGENT_LIB / "kairos"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(PKG_DIR, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    bindir = root / "usr/bin"
    for name in ("kairos", "kairos-agent"):
        (bindir / name).write_text(WRAPPER)
        (bindir / name).chmod(0o755)
    for name, text in (("early-init", EARLY_INIT), ("run-stage", RUN_STAGE)):
        script = root / "usr/lib/kairos" / name
        script.write_text(text)
        script.chmod(0o755)
    compile_python(root)


def python_dirs(root: Path) -> list[str]:
    """Every directory of Python modules in the image: the agent's and the distribution's."""
    found = [f"/{AGENT_LIB}"]
    for pattern in ("usr/lib/python3*", "usr/lib/python3/dist-packages"):
        found += sorted(f"/{p.relative_to(root)}" for p in root.glob(pattern)
                        if p.is_dir() and p.name != "python3")
    return found


def compile_python(root: Path) -> None:
    """Byte-compile every module once, with hash-based pycs.

    The slot image clamps every mtime to SOURCE_DATE_EPOCH, which makes the distribution's
    timestamp pycs stale: on the read-only root Python would then recompile each module it
    imports, at every boot (several seconds under emulation). Unchecked-hash pycs never look
    at mtimes, and the root never changes under them. One process (no -j) compiles in a
    fixed order, so the bytes are the same on every build.
    """
    run(["chroot", str(root), "python3", "-m", "compileall", "-q", "-f",
         "--invalidation-mode", "unchecked-hash", *python_dirs(root)])


def install_system_oem(root: Path) -> None:
    """The default stage configs in /system/oem (every image, whatever its init)."""
    oem = root / "system/oem"
    oem.mkdir(parents=True, exist_ok=True)
    for item in _data("system-oem").iterdir():
        (oem / item.name).write_bytes(item.read_bytes())


def install_configs(root: Path) -> None:
    install_system_oem(root)
    unitdir = root / "usr/lib/systemd/system"
    for unit in UNITS:
        (unitdir / unit).write_bytes(_data(f"systemd/{unit}").read_bytes())
    # Enable at the vendor level: /etc/systemd is persistent, so links there would outlive
    # the image that made them.
    for target, units in ENABLE.items():
        wants = unitdir / f"{target}.wants"
        wants.mkdir(exist_ok=True)
        for unit in units:
            if (unitdir / unit).exists():
                link = wants / unit
                link.unlink(missing_ok=True)
                link.symlink_to(f"../{unit}")
    netdir = root / "usr/lib/systemd/network"
    netdir.mkdir(parents=True, exist_ok=True)
    (netdir / "20-kairos-dhcp.network").write_bytes(
        _data("network/20-kairos-dhcp.network").read_bytes())


def write_release(root: Path, release: Release) -> None:
    (root / "etc/kairos-release").write_text(release.render())


def install_boot(root: Path, mtime: int) -> None:
    """Our initrd and stable kernel/initrd names inside the image (GRUB boots them from it)."""
    kver = kernel_version(root)
    boot = root / "boot"
    for old in boot.glob("initrd.img-*"):
        old.unlink()
    build_initrd(root, boot / "initrd", mtime=mtime)
    vmlinuz = boot / "vmlinuz"
    vmlinuz.unlink(missing_ok=True)
    os.link(boot / f"vmlinuz-{kver}", vmlinuz)
    for link in ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"):
        p = root / link
        if p.is_symlink():
            p.unlink()


def _shadow_day(path: Path, day: int) -> None:
    # Field 3 (last password change, in days) makes every build differ by its date.
    if not path.is_file():
        return
    lines = []
    for line in path.read_text().splitlines():
        parts = line.split(":")
        if len(parts) > 2 and parts[2]:
            parts[2] = str(day)
        lines.append(":".join(parts))
    path.write_text("\n".join(lines) + "\n")


def normalize(root: Path, mtime: int) -> None:
    """Remove per-build and per-machine state: logs, caches, ids, host keys."""
    for pattern in ("var/log/**/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                    "var/lib/apt/lists/*", "var/cache/ldconfig/aux-cache",
                    "var/cache/debconf/*-old", "var/lib/dpkg/*-old", "etc/*-",
                    "etc/ssh/ssh_host_*", "tmp/*", "var/tmp/*", "run/*",
                    "var/lib/systemd/random-seed", "var/lib/systemd/catalog/database",
                    "var/lib/dbus/machine-id", "etc/.pwd.lock", "root/.bash_history",
                    "var/lib/systemd/deb-systemd-*/**/*"):
        for p in sorted(root.glob(pattern), key=lambda x: len(x.parts), reverse=True):
            if p.is_file() or p.is_symlink():
                p.unlink()
            elif p.is_dir() and pattern.startswith(("tmp", "var/tmp", "run")):
                shutil.rmtree(p)
    (root / "etc/machine-id").write_text("")  # early-init fills it from the persistent copy
    dbus = root / "var/lib/dbus"
    if dbus.is_dir():
        (dbus / "machine-id").symlink_to("/etc/machine-id")
    for name in ("shadow", "gshadow"):
        _shadow_day(root / "etc" / name, mtime // 86400)
    fstab = root / "etc/fstab"
    fstab.write_text("# kairos: every mount is made by early-init\n")
    (root / "etc/hostname").write_text("localhost\n")
    for rel in MOUNT_POINTS:
        (root / rel).mkdir(parents=True, exist_ok=True)


def kairosify(root: Path, release: Release, mtime: int, init: str = "systemd") -> None:
    install_agent(root)
    if init == "openrc":
        from kairos.factory.openrc import install_openrc
        install_system_oem(root)
        install_openrc(root)
    else:
        install_configs(root)
    write_release(root, release)
    install_boot(root, mtime)
    normalize(root, mtime)
