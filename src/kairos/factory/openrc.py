"""Kairos's stages wired into OpenRC, for bases without systemd (`kairos build --init openrc`).

The services (data/openrc/init.d/) run `/usr/lib/kairos/run-stage STAGE` as the systemd
units do: cos-setup-fs in the `boot` runlevel (it does nothing when early-init ran the fs
stage), cos-setup-boot, cos-setup-network and the periodic cos-setup-reconcile in `default`,
with kairos-ssh-keygen before sshd, and kairos-boot-assessment (`kairos assess`) in
`default`, once the network stage has started; kairos-installer (`kairos install --auto`)
in `default`, which only acts on a live boot.

/etc/init.d and /etc/runlevels are Kairos persistent paths: a device fills them from the
image on its first boot and keeps them. So the image carries a vendor copy of these services
and their runlevel links in /usr/lib/kairos/openrc/, and /system/oem/09_openrc_services.yaml
copies it over /etc at every boot (initramfs stage, after the persistent binds): an upgraded
image's services replace the old ones, and services a user added stay.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from kairos.factory import treefs

log = logging.getLogger("kairos.factory")

VENDOR_DIR = "usr/lib/kairos/openrc"
# Our services and the runlevel each belongs to.
SERVICES = {"cos-setup-fs": "boot", "cos-setup-boot": "default",
            "cos-setup-network": "default", "cos-setup-reconcile": "default",
            "kairos-ssh-keygen": "default", "kairos-boot-assessment": "default",
            "kairos-reset": "default", "kairos-installer": "default"}
# The base's own services an image needs started, by runlevel: the first name the base has
# wins (Debian's name, then Alpine's). Debian's packages add theirs already; this makes sure.
BASE_SERVICES = (("sysinit", ("udev",)), ("sysinit", ("networking",)),
                 ("default", ("ssh", "sshd")), ("default", ("dhcpcd",)))
STAGE_CONFIG = "09_openrc_services.yaml"
# dhcpcd writes it at boot; what the build host had there has no place in an image.
RESOLV_CONF = "# written at boot by the DHCP client (dhcpcd)\n"
# ifupdown brings up the loopback; dhcpcd every other interface. ifupdown's own default file
# does not name lo.
INTERFACES = """\
# ifup(8) brings up what is configured here; dhcpcd brings up every other interface with
# DHCP. dhcpcd does not start at all once an interface here uses `inet dhcp`.
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback
"""


def _data(rel: str) -> bytes:
    return resources.files("kairos.factory").joinpath("data", "openrc", rel).read_bytes()


def script(name: str) -> bytes:
    """The OpenRC service script shipped for `name` (one of SERVICES)."""
    return _data(f"init.d/{name}")


def _write_script(root: Path, rel: str, data: bytes) -> None:
    treefs.write(root, rel, data, mode=0o755)


def add_to_runlevel(root: Path, runlevel: str, service: str, *,
                    runlevels: str = "etc/runlevels") -> None:
    """What `rc-update add SERVICE RUNLEVEL` makes: a link to /etc/init.d/SERVICE."""
    treefs.symlink(root, f"{runlevels}/{runlevel}/{service}", f"/etc/init.d/{service}")


def enable_base_services(root: Path) -> list[str]:
    """Put the base's udev, sshd and DHCP client in their runlevels; returns the names."""
    enabled = []
    for runlevel, names in BASE_SERVICES:
        found = next((n for n in names if treefs.is_file(root, f"etc/init.d/{n}")), None)
        if found is None:
            log.warning("the base has none of the OpenRC services %s", ", ".join(names))
            continue
        add_to_runlevel(root, runlevel, found)
        enabled.append(found)
    return enabled


def fit_read_only_root(root: Path) -> list[str]:
    """Debian's sysv boot scripts expect a writable root: tell them what early-init made.
    Returns what was changed."""
    done = []
    tmpfs = treefs.read(root, "etc/default/tmpfs") if treefs.is_file(root, "etc/default/tmpfs") \
        else None
    if tmpfs is not None and b"\nRAMTMP=yes" not in tmpfs:
        # /tmp is early-init's tmpfs: said so, mountall.sh neither warns nor cleans it
        treefs.write(root, "etc/default/tmpfs",
                     tmpfs + b"\n# kairos: /tmp is a tmpfs, mounted by early-init\nRAMTMP=yes\n")
        done.append("etc/default/tmpfs")
    if treefs.inside(root, "etc/runlevels/off/savecache", follow_last=False).is_symlink():
        # it writes OpenRC's dependency cache into /lib/rc
        treefs.remove(root, "etc/runlevels/off/savecache")
        done.append("savecache")
    if not treefs.exists(root, "etc/mtab", follow_last=False):  # shutdown scripts read it
        treefs.symlink(root, "etc/mtab", "../proc/self/mounts")
        done.append("etc/mtab")
    if treefs.is_file(root, "etc/inittab") and not treefs.is_dir(root, "etc/inittab.d"):
        treefs.mkdirs(root, "etc/inittab.d")  # sysvinit looks for it at every boot
        done.append("etc/inittab.d")
    return done


def install_openrc(root: Path) -> None:
    """Services, runlevels and the boot-time refresh of both, into an image tree."""
    for service, runlevel in SERVICES.items():
        data = script(service)
        for base in (VENDOR_DIR, "etc"):
            _write_script(root, f"{base}/init.d/{service}", data)
            add_to_runlevel(root, runlevel, service, runlevels=f"{base}/runlevels")
    enable_base_services(root)
    fit_read_only_root(root)
    treefs.write(root, f"system/oem/{STAGE_CONFIG}", _data(STAGE_CONFIG))
    for rel, text in (("etc/resolv.conf", RESOLV_CONF), ("etc/network/interfaces", INTERFACES)):
        treefs.remove(root, rel)  # a link (resolv.conf -> ../run/…) becomes a file
        treefs.write(root, rel, text)
