"""Turn a base tree into a Kairos image tree: agent, early-init, initrd, stage configs,
units, release file; then strip what would make two builds differ."""

from __future__ import annotations

import logging
import os
import shutil
from importlib import resources
from pathlib import Path

import kairos
from kairos.artifacts.bootid import write_boot_cfg
from kairos.artifacts.initrd import build_initrd, kernel_version
from kairos.errors import KairosError
from kairos.factory import treefs
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
         "cos-setup-reconcile.service", "cos-setup-reconcile.timer", "kairos-ssh-keygen.service",
         "kairos-boot-assessment.service", "kairos-reset.service",
         "kairos-installer.service", "kairos-provider.service")
ENABLE = {"sysinit.target": ("cos-setup-fs.service",),
          "multi-user.target": ("cos-setup-boot.service", "cos-setup-network.service",
                                "kairos-ssh-keygen.service", "kairos-boot-assessment.service",
                                "kairos-reset.service", "kairos-installer.service",
                                "kairos-provider.service", "ssh.service",
                                "systemd-networkd.service", "systemd-resolved.service"),
          "timers.target": ("cos-setup-reconcile.timer",)}
# Units a distribution enables that have no work on an image-based device: apt and dpkg
# cannot change the read-only root (and apt's daily update would spend a metered link for
# nothing), and e2scrub checks LVM snapshots the layout never has. Each costs seconds of
# CPU at boot or daily on a small machine.
DISABLE = ("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer",
           "e2scrub_all.timer", "e2scrub_reap.service")
# Prebuilt EFI images grub-efi-amd64-bin ships for grub-install (monolithic, netboot): the
# installer builds its own from the modules with grub-mkimage. 16 MB in every slot.
UNUSED_DIRS = ("usr/lib/grub/x86_64-efi/monolithic",)
# Paths that must exist on the read-only root: mount points and persistent bind targets.
MOUNT_POINTS = ("oem", "usr/local", "system", "home", "root", "opt", "srv", "usr/libexec",
                "run/cos", "var/lib/kairos")


def _data(rel: str) -> resources.abc.Traversable:
    return resources.files("kairos.factory").joinpath("data", rel)


def install_agent(root: Path) -> None:
    """This project, installed so the agent and early-init run on the image's python3."""
    treefs.copy_in(PKG_DIR, root, f"{AGENT_LIB}/kairos", ignore=("__pycache__", "*.pyc"))
    for name in ("kairos", "kairos-agent"):
        treefs.write(root, f"usr/bin/{name}", WRAPPER, mode=0o755)
    for name, text in (("early-init", EARLY_INIT), ("run-stage", RUN_STAGE)):
        treefs.write(root, f"usr/lib/kairos/{name}", text, mode=0o755)
    compile_python(root)


def python_dirs(root: Path) -> list[str]:
    """Every directory of Python modules in the image: the agent's and the distribution's."""
    found = [f"/{AGENT_LIB}"]
    for pattern in ("usr/lib/python3*", "usr/lib/python3/dist-packages"):
        found += sorted(f"/{p.relative_to(root)}" for p in treefs.glob(root, pattern)
                        if p.is_dir() and not p.is_symlink() and p.name != "python3")
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
    for item in _data("system-oem").iterdir():
        treefs.write(root, f"system/oem/{item.name}", item.read_bytes())


def install_configs(root: Path) -> None:
    install_system_oem(root)
    unitdir = "usr/lib/systemd/system"
    for unit in UNITS:
        treefs.write(root, f"{unitdir}/{unit}", _data(f"systemd/{unit}").read_bytes())
    # Enable at the vendor level: /etc/systemd is persistent, so links there would outlive
    # the image that made them.
    for target, units in ENABLE.items():
        treefs.mkdirs(root, f"{unitdir}/{target}.wants")
        for unit in units:
            if treefs.exists(root, f"{unitdir}/{unit}"):
                treefs.symlink(root, f"{unitdir}/{target}.wants/{unit}", f"../{unit}")
    treefs.write(root, "usr/lib/systemd/network/20-kairos-dhcp.network",
                 _data("network/20-kairos-dhcp.network").read_bytes())
    disable_units(root)


def disable_units(root: Path) -> None:
    """Drop the base's enablement links of DISABLE (only links: a file of that name in a
    .wants dir is not ours to judge). The units stay installed, so a user can enable them."""
    for unit in DISABLE:
        for wants in ("etc/systemd/system/*.wants", "usr/lib/systemd/system/*.wants"):
            for link in treefs.glob(root, f"{wants}/{unit}"):
                if link.is_symlink():
                    link.unlink()


def remove_unused(root: Path) -> None:
    """UNUSED_DIRS, if they are real directories of the tree (a link is left alone)."""
    for rel in UNUSED_DIRS:
        path = treefs.inside(root, rel, follow_last=False)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)


def write_release(root: Path, release: Release) -> None:
    treefs.write(root, "etc/kairos-release", release.render())


def install_boot(root: Path, mtime: int) -> None:
    """Our initrd and stable kernel/initrd names inside the image (GRUB boots them from it),
    and /boot/kairos-boot.cfg naming them (artifacts/bootid.py: the initrd boots the slot
    file whose boot files the kernel came from)."""
    kver = kernel_version(root)
    for old in treefs.glob(root, "boot/initrd.img-*"):
        old.unlink()
    boot = treefs.mkdirs(root, "boot")
    build_initrd(root, boot / "initrd", mtime=mtime)
    kernel = treefs.inside(root, f"boot/vmlinuz-{kver}")
    if not kernel.is_file() or kernel.is_symlink():
        raise KairosError(f"the kernel image /boot/vmlinuz-{kver} is missing",
                          "reinstall the kernel package in the base")
    treefs.remove(root, "boot/vmlinuz")
    os.link(kernel, boot / "vmlinuz")
    for link in ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"):
        if treefs.inside(root, link, follow_last=False).is_symlink():
            treefs.remove(root, link)
    # Always rewritten: a base made from an earlier image carries that image's id.
    write_boot_cfg(root)


def _shadow_day(root: Path, rel: str, day: int) -> None:
    # Field 3 (last password change, in days) makes every build differ by its date.
    if not treefs.is_file(root, rel):
        return
    data = treefs.read(root, rel) or b""
    lines = []
    for line in data.decode().splitlines():
        parts = line.split(":")
        if len(parts) > 2 and parts[2]:
            parts[2] = str(day)
        lines.append(":".join(parts))
    treefs.write(root, rel, "\n".join(lines) + "\n")


def normalize(root: Path, mtime: int) -> None:
    """Remove per-build and per-machine state: logs, caches, ids, host keys."""
    for pattern in ("var/log/**/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                    "var/lib/apt/lists/*", "var/cache/ldconfig/aux-cache",
                    "var/cache/debconf/*-old", "var/lib/dpkg/*-old", "etc/*-",
                    "etc/ssh/ssh_host_*", "tmp/*", "var/tmp/*", "run/*",
                    "var/lib/systemd/random-seed", "var/lib/systemd/catalog/database",
                    "var/lib/dbus/machine-id", "etc/.pwd.lock", "root/.bash_history",
                    "var/lib/systemd/deb-systemd-*/**/*"):
        for p in sorted(treefs.glob(root, pattern), key=lambda x: len(x.parts), reverse=True):
            if p.is_symlink() or p.is_file():
                p.unlink()
            elif p.is_dir() and pattern.startswith(("tmp", "var/tmp", "run")):
                shutil.rmtree(p)
    treefs.write(root, "etc/machine-id", "")  # early-init fills it from the persistent copy
    if treefs.is_dir(root, "var/lib/dbus"):
        treefs.symlink(root, "var/lib/dbus/machine-id", "/etc/machine-id")
    for name in ("shadow", "gshadow"):
        _shadow_day(root, f"etc/{name}", mtime // 86400)
    treefs.write(root, "etc/fstab", "# kairos: every mount is made by early-init\n")
    treefs.write(root, "etc/hostname", "localhost\n")
    for rel in MOUNT_POINTS:
        treefs.mkdirs(root, rel)


def kairosify(root: Path, release: Release, mtime: int, init: str = "systemd") -> None:
    install_agent(root)
    if init == "openrc":
        from kairos.factory.openrc import install_openrc
        install_system_oem(root)
        install_openrc(root)
    else:
        install_configs(root)
    write_release(root, release)
    remove_unused(root)
    install_boot(root, mtime)
    normalize(root, mtime)
