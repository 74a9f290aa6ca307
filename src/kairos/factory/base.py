"""Bring a base root filesystem into a directory: debootstrap, a dir, a tar, or an OCI image."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from kairos.disk.mounts import chroot_mounts
from kairos.errors import BadInput
from kairos.factory import treefs
from kairos.factory.bases import BaseSpec
from kairos.run import require, run
from kairos.stages.sysinfo import os_release as os_release  # re-exported for build.py

log = logging.getLogger("kairos.factory")

# What `kairos install` runs on a live system (agent/install.py TOOLS): partitions (gdisk),
# the EFI system partition (dosfstools, mtools: no vfat mount needed), GRUB's images built
# from its modules for BIOS and UEFI (grub-common's grub-mkimage, grub-pc-bin,
# grub-efi-amd64-bin). Every image can be booted from an ISO to install itself.
INSTALLER_PACKAGES = ("gdisk", "dosfstools", "mtools", "grub-common", "grub-pc-bin",
                      "grub-efi-amd64-bin")
# What every image needs on top of a minimal base: init, device manager, SSH, the agent's
# Python with the two libraries it uses, the tools early boot calls, what an upgrade runs on
# the device (squashfs-tools makes the slot, openssl checks image signatures) and what an
# install runs.
REQUIRED_PACKAGES = (
    "systemd", "systemd-sysv", "udev", "dbus", "systemd-timesyncd", "systemd-resolved",
    "openssh-server", "python3", "python3-yaml", "python3-jsonschema", "sudo", "iproute2",
    "kmod", "util-linux", "e2fsprogs", "ca-certificates", "less", "procps",
    "squashfs-tools", "openssl", *INSTALLER_PACKAGES,
)
# The same without systemd: sysvinit as PID 1 with OpenRC as service manager, Debian's udev
# (it ships a sysv script), dhcpcd, which brings up every interface with DHCP by itself (no
# interface names to write down), and ifupdown for the loopback (systemd does that itself;
# without it nothing would) and for users' static interfaces.
OPENRC_PACKAGES = (
    "sysvinit-core", "openrc", "udev", "dhcpcd", "ifupdown", "openssh-server", "python3",
    "python3-yaml", "python3-jsonschema", "sudo", "iproute2", "kmod", "util-linux",
    "e2fsprogs", "ca-certificates", "less", "procps", "squashfs-tools", "openssl",
    *INSTALLER_PACKAGES,
)
# debootstrap resolves sysvinit-core's `sysv-rc | file-rc | openrc` with the first choice,
# which conflicts with openrc, and fails; apt picks right in the packages step.
DEBOOTSTRAP_LATER = frozenset({"sysvinit-core"})


def required_packages(init: str) -> tuple[str, ...]:
    """What an image with this service manager ("systemd" or "openrc") needs installed."""
    return OPENRC_PACKAGES if init == "openrc" else REQUIRED_PACKAGES


def debootstrap_argv(suite: str, dest: Path, mirror: str, packages: list[str]) -> list[str]:
    include = [p for p in packages if p not in DEBOOTSTRAP_LATER]
    return ["debootstrap", "--variant=minbase", "--components=main",
            f"--include={','.join(include)}", suite, str(dest), mirror]


def debootstrap(suite: str, dest: Path, mirror: str, packages: list[str]) -> None:
    require("debootstrap")
    run(debootstrap_argv(suite, dest, mirror, packages), capture=True)


def copy_dir(src: Path, dest: Path) -> None:
    run(["cp", "-a", "--", f"{src}/.", str(dest)])


def extract_tar(src: Path, dest: Path) -> None:
    res = run(["tar", "-xpf", str(src), "--numeric-owner", "--xattrs", "-C", str(dest)],
              check=False)
    if res.returncode != 0:
        raise BadInput(f"cannot extract base tar {src}: {res.stderr.strip()[-200:]}",
                       "give a tar archive of a root filesystem")


def unpack_oci(src: Path, dest: Path) -> None:
    from kairos.oci.unpack import unpack_image
    unpack_image(src, dest)


def acquire(spec: BaseSpec, dest: Path, *, mirror: str | None, packages: list[str]) -> None:
    """Fill `dest` with the base tree described by `spec`."""
    if spec.kind == "debian":
        from kairos.factory.mirror import debian_mirror
        debootstrap(spec.value, dest, mirror or debian_mirror(), packages)
    elif spec.kind == "dir":
        copy_dir(spec.path, dest)
    elif spec.kind == "tar":
        extract_tar(spec.path, dest)
    else:
        unpack_oci(spec.path, dest)
    if not treefs.is_dir(dest, "etc") or not treefs.is_dir(dest, "usr"):
        raise BadInput(f"base {spec} does not look like a root filesystem (no /etc or /usr)",
                       "give the root of a Linux distribution tree")


def missing_packages(root: Path, packages: list[str]) -> list[str]:
    if not treefs.exists(root, "usr/bin/dpkg-query"):
        return list(packages)
    res = run(["chroot", str(root), "dpkg-query", "-W", "-f", "${Package} ${Status}\\n"],
              check=False)
    installed = {line.split()[0] for line in res.stdout.splitlines()
                 if line.endswith("install ok installed")}
    return [p for p in packages if p not in installed]


def install_packages(root: Path, packages: list[str]) -> None:
    """Install missing packages with the base's own package manager (Debian family only)."""
    missing = missing_packages(root, packages)
    if not missing:
        return
    rel = os_release(root)
    family = f"{rel.get('ID', '')} {rel.get('ID_LIKE', '')}"
    if "debian" not in family and "ubuntu" not in family:
        raise BadInput(f"base distribution '{rel.get('ID', 'unknown')}' is not supported yet "
                       f"(it lacks {', '.join(missing[:5])})",
                       "use a Debian or Ubuntu base, or one that already has these packages")
    env = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    with host_resolv_conf(root), no_service_starts(root), chroot_mounts(root):
        run(["chroot", str(root), "apt-get", "update", "-qq"], env=env)
        run(["chroot", str(root), "apt-get", "install", "-y", "-qq",
             "--no-install-recommends", *missing], env=env)
        run(["chroot", str(root), "apt-get", "clean"], env=env)


@contextlib.contextmanager
def host_resolv_conf(root: Path) -> Iterator[None]:
    """The build host's resolv.conf in the tree (apt needs DNS), the tree's own put back
    after: a file or a link (a link is never followed, even inside the tree)."""
    rel = "etc/resolv.conf"
    entry = treefs.inside(root, rel, follow_last=False)
    link = os.readlink(entry) if entry.is_symlink() else None
    saved = treefs.read(root, rel) if link is None and treefs.is_file(root, rel) else None
    host = Path("/etc/resolv.conf").read_bytes() if Path("/etc/resolv.conf").is_file() else b""
    treefs.remove(root, rel)
    treefs.write(root, rel, host)
    try:
        yield
    finally:
        treefs.remove(root, rel)
        if link is not None:
            treefs.symlink(root, rel, link)
        elif saved is not None:
            treefs.write(root, rel, saved)


@contextlib.contextmanager
def no_service_starts(root: Path) -> Iterator[None]:
    """policy-rc.d saying no: package scripts never start services in the chroot."""
    rel = "usr/sbin/policy-rc.d"
    treefs.remove(root, rel)  # a planted link goes: we write our own file, never through it
    treefs.write(root, rel, "#!/bin/sh\nexit 101\n", mode=0o755)
    try:
        yield
    finally:
        treefs.remove(root, rel)
