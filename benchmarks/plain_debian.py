"""Plain Debian 12 installed the ordinary way, as the boot benchmark's reference disk.

What a person gets from Debian's installer on a whole disk, as near as a script gets without
the installer: a GPT disk with a BIOS boot partition, an ESP and one ext4 root; Debian's own
initramfs-tools initrd made in the root by `update-initramfs`; `/etc/fstab` with the root by
UUID; ifupdown with DHCP on the NIC (what the installer's netcfg sets up); no systemd-resolved
(not installed by the installer); GRUB 2.06 from the host's Debian packages, installed as
`grub-install` does it (a small core image that loads its modules from `/boot/grub`, a
`grub-mkconfig`-style `/boot/grub/grub.cfg` booting `/boot/vmlinuz-…` with `root=UUID=… ro
quiet`). Nothing of kairos is in it.

The root starts as a copy of the debootstrap base step that `kairos build` cached (the cache
is only read), so the kernel package is byte for byte the one in our image; that is checked.
grub-install cannot write to image files here (DESIGN.md §3), so the BIOS boot sectors are
written with kairos' own GRUB installer functions, and the ESP is filled with mtools.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kairos.boot.grubinstall import GRUB_LIB, install_efi, write_bios_boot
from kairos.disk.blockdev import reread_partitions
from kairos.disk.filesystems import FsTarget, mkfs_vfat
from kairos.disk.gpt import write_gpt
from kairos.disk.layout import GUID_BIOS_BOOT, GUID_ESP, GUID_LINUX_FS, DiskLayout, PartitionSpec
from kairos.disk.loop import loop_device
from kairos.disk.mounts import chroot_mounts, mount
from kairos.errors import KairosError
from kairos.run import run

# The installer's guided partitioning: ESP of ~512 MB, the root takes the rest (its swap
# partition is left out: nothing here swaps, and it would only add a swapon to the boot).
ESP_MIB = 512
# What the installer adds for networking and what it does not install.
NET_PACKAGES = ("ifupdown", "isc-dhcp-client")
NOT_INSTALLED = ("systemd-resolved",)
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}


@dataclass(frozen=True)
class PlainDisk:
    path: Path
    kver: str
    root_uuid: str
    cmdline: str  # the kernel command line its grub.cfg boots


def find_base_tree(kernel: Path, caches: Sequence[Path]) -> Path:
    """The cached debootstrap base tree whose kernel is byte for byte `kernel`."""
    want = kernel.read_bytes()
    for cache in caches:
        for tree in sorted(cache.glob("steps/base-*/tree")):
            for vmlinuz in (tree / "boot").glob("vmlinuz-*"):
                if vmlinuz.read_bytes() == want:
                    return tree
    raise KairosError(f"no cached base tree under {', '.join(map(str, caches))} has the kernel "
                      f"{kernel}", "build the image with `kairos build` first, or pass --base-tree")


@contextlib.contextmanager
def _apt_session(root: Path) -> Iterator[None]:
    """The chroot's API filesystems, the host's resolver and no service starts."""
    resolv = root / "etc/resolv.conf"
    policy = root / "usr/sbin/policy-rc.d"
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    try:
        with chroot_mounts(root):
            yield
    finally:
        policy.unlink(missing_ok=True)
        # The installer leaves the resolv.conf it used; dhclient rewrites it at every lease.
        resolv.write_text("")


def _chroot(root: Path, *argv: str) -> None:
    run(["chroot", str(root), *argv], env=APT_ENV)


def missing_recommends(root: Path) -> list[str]:
    """The first choice of every Recommends of the installed packages, if not installed."""
    out = run(["chroot", str(root), "dpkg-query", "-W", "-f",
               "${Package}\t${db:Status-Status}\t${Recommends}\n"]).stdout
    installed: set[str] = set()
    wanted: set[str] = set()
    for line in out.splitlines():
        package, status, recommends = [*line.split("\t"), "", ""][:3]
        if status == "installed":
            installed.add(package)
            for group in filter(None, (g.strip() for g in recommends.split(","))):
                wanted.add(group.split("|")[0].split("(")[0].split(":")[0].strip())
    return sorted(wanted - installed)


def _grub_cfg(kver: str, root_uuid: str, cmdline: str, timeout: int) -> str:
    """What grub-mkconfig writes on Debian 12 with GRUB_TERMINAL="console serial" and
    GRUB_TIMEOUT=`timeout` (00_header, 05_debian_theme, 10_linux, 30_uefi-firmware as on
    firmware that has a setup menu, 41_custom), with the recovery entry of the "Advanced
    options" submenu."""
    def body(args: str) -> str:
        return ("\tload_video\n\tinsmod gzio\n"
                "\tif [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi\n"
                "\tinsmod part_gpt\n\tinsmod ext2\n"
                f"\tsearch --no-floppy --fs-uuid --set=root {root_uuid}\n"
                f"\techo\t'Loading Linux {kver} ...'\n"
                f"\tlinux\t/boot/vmlinuz-{kver} root=UUID={root_uuid} ro {args}\n"
                "\techo\t'Loading initial ramdisk ...'\n"
                f"\tinitrd\t/boot/initrd.img-{kver}\n")

    simple, recovery = body(cmdline), body("single")
    return f"""\
#
# DO NOT EDIT THIS FILE
#
# It is automatically generated by grub-mkconfig using templates
# from /etc/grub.d and settings from /etc/default/grub
#

### BEGIN /etc/grub.d/00_header ###
if [ -s $prefix/grubenv ]; then
  set have_grubenv=true
  load_env
fi
if [ "${{next_entry}}" ] ; then
   set default="${{next_entry}}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="0"
fi

if [ x"${{feature_menuentry_id}}" = xy ]; then
  menuentry_id_option="--id"
else
  menuentry_id_option=""
fi

export menuentry_id_option

if [ "${{prev_saved_entry}}" ]; then
  set saved_entry="${{prev_saved_entry}}"
  save_env saved_entry
  set prev_saved_entry=
  save_env prev_saved_entry
  set boot_once=true
fi

function savedefault {{
  if [ -z "${{boot_once}}" ]; then
    saved_entry="${{chosen}}"
    save_env saved_entry
  fi
}}
function load_video {{
  if [ x$feature_all_video_module = xy ]; then
    insmod all_video
  else
    insmod efi_gop
    insmod efi_uga
    insmod ieee1275_fb
    insmod vbe
    insmod vga
    insmod video_bochs
    insmod video_cirrus
  fi
}}

serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
if [ "${{recordfail}}" = 1 ] ; then
  set timeout=30
else
  if [ x$feature_timeout_style = xy ] ; then
    set timeout_style=menu
    set timeout={timeout}
  # Fallback normal timeout code in case the timeout_style feature is
  # unavailable.
  else
    set timeout={timeout}
  fi
fi
### END /etc/grub.d/00_header ###

### BEGIN /etc/grub.d/05_debian_theme ###
set menu_color_normal=cyan/blue
set menu_color_highlight=white/blue
### END /etc/grub.d/05_debian_theme ###

### BEGIN /etc/grub.d/10_linux ###
function gfxmode {{
\tset gfxpayload="${{1}}"
}}
set linux_gfx_mode=
export linux_gfx_mode
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os \
$menuentry_id_option 'gnulinux-simple-{root_uuid}' {{
{simple}}}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option \
'gnulinux-advanced-{root_uuid}' {{
\tmenuentry 'Debian GNU/Linux, with Linux {kver} (recovery mode)' --class debian \
--class gnu-linux --class gnu --class os $menuentry_id_option \
'gnulinux-{kver}-recovery-{root_uuid}' {{
{recovery}\t}}
}}
### END /etc/grub.d/10_linux ###

### BEGIN /etc/grub.d/30_uefi-firmware ###
menuentry 'UEFI Firmware Settings' $menuentry_id_option 'uefi-firmware' {{
\tfwsetup
}}
### END /etc/grub.d/30_uefi-firmware ###

### BEGIN /etc/grub.d/41_custom ###
if [ -f  ${{config_directory}}/custom.cfg ]; then
  source ${{config_directory}}/custom.cfg
elif [ -z "${{config_directory}}" -a -f  $prefix/custom.cfg ]; then
  source $prefix/custom.cfg
fi
### END /etc/grub.d/41_custom ###
"""


def install_root(base: Path, target: Path, pubkey: Path, root_uuid: str, nic: str,
                 console: str, timeout: int) -> tuple[str, str]:
    """Copy `base` onto the mounted root `target` and finish it as the installer would;
    returns (kernel version, kernel command line of its grub.cfg)."""
    run(["cp", "-a", f"{base}/.", str(target)])
    kvers = sorted(p.name for p in (target / "lib/modules").iterdir())
    if len(kvers) != 1:
        raise KairosError(f"the base tree has {len(kvers)} kernels ({', '.join(kvers)})",
                          "expected exactly one")
    kver = kvers[0]
    (target / "etc/fstab").write_text(
        "# /etc/fstab: static file system information.\n"
        "# <file system> <mount point>   <type>  <options>       <dump>  <pass>\n"
        f"UUID={root_uuid} /               ext4    errors=remount-ro 0       1\n")
    (target / "etc/hostname").write_text("debian\n")
    (target / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n\n"
                                      "::1     localhost ip6-localhost ip6-loopback\n")
    with _apt_session(target):
        _chroot(target, "apt-get", "update", "-qq")
        _chroot(target, "apt-get", "install", "-y", "-qq", *NET_PACKAGES)
        # The base was bootstrapped without Recommends; apt (and the installer) installs them
        # by default: zstd and busybox for the initramfs, apparmor for the kernel, …
        recommends = missing_recommends(target)
        if recommends:
            _chroot(target, "apt-get", "install", "-y", "-qq", *recommends)
        _chroot(target, "apt-get", "purge", "-y", "-qq", *NOT_INSTALLED)
        _chroot(target, "apt-get", "clean")
        # Debian's own initramfs for the installed system (initramfs.conf as packaged),
        # made with the root device present, so its fsck hook finds the root's type.
        _chroot(target, "update-initramfs", "-u", "-k", kver)
    (target / "etc/network/interfaces").write_text(
        "# This file describes the network interfaces available on your system\n"
        "# and how to activate them. For more information, see interfaces(5).\n\n"
        "source /etc/network/interfaces.d/*\n\n"
        "# The loopback network interface\nauto lo\niface lo inet loopback\n\n"
        f"# The primary network interface\nallow-hotplug {nic}\niface {nic} inet dhcp\n")
    ssh = target / "root/.ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    shutil.copyfile(pubkey, ssh / "authorized_keys")
    (ssh / "authorized_keys").chmod(0o600)
    # grub-install's part: modules beside grub.cfg; grub-mkconfig's part: grub.cfg.
    grub = target / "boot/grub"
    grub.mkdir(parents=True, exist_ok=True)
    for fmt in ("i386-pc", "x86_64-efi"):
        dest = grub / fmt
        dest.mkdir()
        for src in (GRUB_LIB / fmt).iterdir():
            if src.suffix in (".mod", ".lst", ".img", ".o"):
                shutil.copyfile(src, dest / src.name)
    run(["grub-editenv", str(grub / "grubenv"), "create"])
    cmdline = f"{console} quiet"
    (grub / "grub.cfg").write_text(_grub_cfg(kver, root_uuid, cmdline, timeout))
    return kver, f"root=UUID={root_uuid} ro {cmdline}"


def _core_img(work: Path, root_partition: int) -> Path:
    """What grub-install builds for i386-pc on a GPT disk with /boot on ext4: the disk, the
    partition table and the filesystem module; the rest is loaded from the prefix."""
    out = work / "core.img"
    run(["grub-mkimage", "-O", "i386-pc", "-d", str(GRUB_LIB / "i386-pc"), "-o", str(out),
         "-p", f"(,gpt{root_partition})/boot/grub", "biosdisk", "part_gpt", "ext2"])
    return out


def _efi_img(work: Path, root_uuid: str) -> Path:
    """What grub-install builds for x86_64-efi: the ESP is not /boot, so the image carries a
    config that finds the root by UUID."""
    cfg = work / "load.cfg"
    cfg.write_text(f"search.fs_uuid {root_uuid} root\nset prefix=($root)'/boot/grub'\n")
    out = work / "grubx64.efi"
    run(["grub-mkimage", "-O", "x86_64-efi", "-d", str(GRUB_LIB / "x86_64-efi"), "-o", str(out),
         "-c", str(cfg), "-p", "/boot/grub", "part_gpt", "ext2", "search_fs_uuid"])
    return out


def make_plain_disk(base: Path, out: Path, size: int, pubkey: Path, *, nic: str, console: str,
                    timeout: int) -> PlainDisk:
    """Write the plain Debian disk to `out` (a sparse image file of `size` bytes)."""
    specs = [
        PartitionSpec("", "", "none", 1, GUID_BIOS_BOOT),
        PartitionSpec("", "", "vfat", ESP_MIB, GUID_ESP),
        PartitionSpec("", "", "ext4", 0, GUID_LINUX_FS),
    ]
    layout = DiskLayout.compute(specs, size)
    bios, esp, root = layout.partitions
    root_uuid = str(uuid.uuid4())
    work = out.with_name(out.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        out.unlink(missing_ok=True)
        with open(out, "wb") as fh:
            fh.truncate(size)
        write_gpt(out, layout, disk_guid=str(uuid.uuid4()).upper(), zap=False)
        # As the installer: make the filesystems, mount the root, install into it. Inode
        # tables are zeroed now, so no lazy-init thread writes behind the measured boots.
        run(["mkfs.ext4", "-F", "-q", "-U", root_uuid, "-E",
             f"offset={root.offset},nodiscard,lazy_itable_init=0",
             str(out), f"{root.size // 1024}k"])
        mkfs_vfat(FsTarget(out, esp.offset, esp.size), "EFI")
        with loop_device(out) as dev:
            nodes = reread_partitions(dev, len(layout.partitions))
            with mount(nodes[root.number], work / "target") as target:
                kver, cmdline = install_root(base, target, pubkey, root_uuid, nic, console,
                                             timeout)
        install_efi(FsTarget(out, esp.offset, esp.size), _efi_img(work, root_uuid))
        write_bios_boot(out, bios.start_lba, bios.sectors, _core_img(work, root.number))
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return PlainDisk(out, kver, root_uuid, cmdline)
