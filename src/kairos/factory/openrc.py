"""Kairos's stages wired into OpenRC, for bases without systemd (`kairos build --init openrc`).

The services (data/openrc/init.d/) run `/usr/lib/kairos/run-stage STAGE` as the systemd
units do: cos-setup-fs in the `boot` runlevel (it does nothing when early-init ran the fs
stage), cos-setup-boot, cos-setup-network and the periodic cos-setup-reconcile in `default`,
with kairos-ssh-keygen before sshd.

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

log = logging.getLogger("kairos.factory")

VENDOR_DIR = "usr/lib/kairos/openrc"
# Our services and the runlevel each belongs to.
SERVICES = {"cos-setup-fs": "boot", "cos-setup-boot": "default",
            "cos-setup-network": "default", "cos-setup-reconcile": "default",
            "kairos-ssh-keygen": "default"}
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


def _write_script(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o755)


def add_to_runlevel(runlevels: Path, runlevel: str, service: str) -> None:
    """What `rc-update add SERVICE RUNLEVEL` makes: a link to /etc/init.d/SERVICE."""
    link = runlevels / runlevel / service
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(f"/etc/init.d/{service}")


def enable_base_services(root: Path) -> list[str]:
    """Put the base's udev, sshd and DHCP client in their runlevels; returns the names."""
    enabled = []
    for runlevel, names in BASE_SERVICES:
        found = next((n for n in names if (root / "etc/init.d" / n).is_file()), None)
        if found is None:
            log.warning("the base has none of the OpenRC services %s", ", ".join(names))
            continue
        add_to_runlevel(root / "etc/runlevels", runlevel, found)
        enabled.append(found)
    return enabled


def fit_read_only_root(root: Path) -> list[str]:
    """Debian's sysv boot scripts expect a writable root: tell them what early-init made.
    Returns what was changed."""
    done = []
    tmpfs = root / "etc/default/tmpfs"
    if tmpfs.is_file() and "\nRAMTMP=yes" not in tmpfs.read_text():
        # /tmp is early-init's tmpfs: said so, mountall.sh neither warns nor cleans it
        with tmpfs.open("a") as fh:
            fh.write("\n# kairos: /tmp is a tmpfs, mounted by early-init\nRAMTMP=yes\n")
        done.append("etc/default/tmpfs")
    savecache = root / "etc/runlevels/off/savecache"
    if savecache.is_symlink():  # it writes OpenRC's dependency cache into /lib/rc
        savecache.unlink()
        done.append("savecache")
    mtab = root / "etc/mtab"
    if not (mtab.is_symlink() or mtab.exists()):  # shutdown scripts read it
        mtab.symlink_to("../proc/self/mounts")
        done.append("etc/mtab")
    if (root / "etc/inittab").is_file() and not (root / "etc/inittab.d").is_dir():
        (root / "etc/inittab.d").mkdir()  # sysvinit looks for it at every boot
        done.append("etc/inittab.d")
    return done


def install_openrc(root: Path) -> None:
    """Services, runlevels and the boot-time refresh of both, into an image tree."""
    vendor = root / VENDOR_DIR
    for service, runlevel in SERVICES.items():
        data = script(service)
        for base in (vendor, root / "etc"):
            _write_script(base / "init.d" / service, data)
            add_to_runlevel(base / "runlevels", runlevel, service)
    enable_base_services(root)
    fit_read_only_root(root)
    oem = root / "system/oem"
    oem.mkdir(parents=True, exist_ok=True)
    (oem / STAGE_CONFIG).write_bytes(_data(STAGE_CONFIG))
    for rel, text in (("etc/resolv.conf", RESOLV_CONF), ("etc/network/interfaces", INTERFACES)):
        path = root / rel
        if path.is_symlink() or path.exists():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
