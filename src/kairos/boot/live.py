"""The live ISO's contract, shared by its builder (artifacts/iso.py), the initrd, early-init,
the stage runner and the installer: where the live medium is mounted and what is on it.

Kairos's names: the ISO9660 volume id `COS_LIVE`, the slot image `rootfs.squashfs` at the
ISO's root, the medium mounted at `/run/initramfs/live` (also a config directory), and the
kernel command line `root=live:CDLABEL=COS_LIVE rd.live.dir=/ rd.live.squashimg=…`.
Netboot (artifacts/netboot.py) is a live boot too: `root=live:http://…/X.squashfs` plus
Kairos's `netboot` marker; the initrd downloads the image into a tmpfs that becomes
`/run/initramfs/live`, as `rootfs.squashfs`, so LIVE_SLOT_IMAGE holds there as well.
No imports beyond pathlib: early-init imports this at boot.
"""

from __future__ import annotations

from pathlib import Path

LIVE_LABEL = "COS_LIVE"
# Where the initrd mounts the live medium (read-only) before handing over.
LIVE_DIR = Path("/run/initramfs/live")
SLOT_NAME = "rootfs.squashfs"
# The slot image the live system runs, and the one the installer writes to disk.
LIVE_SLOT_IMAGE = LIVE_DIR / SLOT_NAME
# The ISO's cloud-config (`kairos iso --cloud-config`) and its oem/ directory, as Kairos
# places them; both are read by the config collector and run by the stages in live mode.
CONFIG_NAME = "config.yaml"
OEM_DIR_NAME = "oem"
LIVE_CONFIG = LIVE_DIR / CONFIG_NAME
LIVE_OEM_DIR = LIVE_DIR / OEM_DIR_NAME
# Written by early-init on a live boot (immucore's name).
LIVE_SENTINEL = Path("/run/cos/live_mode")

LIVE_CMDLINE = f"root=live:CDLABEL={LIVE_LABEL} rd.live.dir=/ rd.live.squashimg={SLOT_NAME}"

# Netboot: the root image's URL follows this prefix (dracut's livenet key, as Kairos uses it);
# only plain HTTP, which the initrd's busybox wget fetches.
LIVE_URL_PREFIX = "root=live:"
NETBOOT_SCHEMES = ("http://",)
# Kairos's netboot marker: early-init (early/plan.py) and `kairos state` take it for a live
# boot. rd.neednet/ip=dhcp are dracut's spelling of "bring the network up in the initrd".
NETBOOT_ARGS = "rd.neednet=1 ip=dhcp netboot"
# The config beside the netboot files (`kairos netboot --cloud-config`), read via config_url.
NETBOOT_CONFIG_NAME = CONFIG_NAME


def live_label(cmdline: str) -> str | None:
    """The label of the live medium the command line boots (`root=live:CDLABEL=X` or
    `root=live:LABEL=X`), or None when this is no live boot."""
    for token in cmdline.split():
        for prefix in ("root=live:CDLABEL=", "root=live:LABEL="):
            if token.startswith(prefix):
                return token[len(prefix):]
    return None
