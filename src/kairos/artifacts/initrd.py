"""Our tiny initrd: static busybox, the few kernel modules needed to reach the slot, and an
`init` that mounts the slot image read-only and switch_roots into the image's early-init."""

from __future__ import annotations

import gzip
import io
import lzma
import re
import shutil
import stat
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kairos.artifacts.cpio import Entry, write_cpio
from kairos.errors import KairosError
from kairos.run import which
from kairos.safefs import resolve_in_root, write_file_atomic

# Storage and filesystems a slot can sit on, plus what the boot path mounts. Missing ones
# (built in, or absent from this kernel) are skipped. The live ISO adds a CD (sr_mod and
# cdrom behind an AHCI or legacy IDE controller, isofs); written to a USB stick, it is a disk.
# Netboot adds NICs: virtio, and the Intel ones QEMU gives by default (e1000 on `pc`,
# e1000e on `q35`) and most hypervisors emulate.
WANTED_MODULES = (
    "virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "e1000", "e1000e",
    "ahci", "ata_piix", "sd_mod", "sr_mod", "cdrom", "nvme", "mmc_block", "sdhci_pci",
    "xhci_pci", "ehci_pci", "usb_storage", "uas",
    "crc32c_generic", "crc32c_intel", "ext4", "loop", "squashfs", "erofs", "overlay", "isofs",
)
APPLETS = (
    "sh", "mount", "umount", "mkdir", "switch_root", "insmod", "sleep", "cat", "echo",
    "findfs", "losetup", "reboot", "ls", "grep", "sed", "blkid", "mdev", "poweroff",
    # netboot: DHCP, the lease applied (initrd-udhcpc.sh), the image downloaded
    "udhcpc", "ifconfig", "route", "wget",
)
# udhcpc's event script, where the init passes it (-s)
UDHCPC_SCRIPT = "etc/udhcpc.script"


@dataclass(frozen=True)
class InitrdInfo:
    path: Path
    kernel_version: str
    modules: tuple[str, ...]
    size: int


def kernel_version(root: Path) -> str:
    """The newest kernel installed in the tree (by /lib/modules)."""
    mods = resolve_in_root(root, "lib/modules")
    versions = sorted((p.name for p in mods.iterdir()
                       if _is_file(root, f"lib/modules/{p.name}/modules.dep")),
                      key=_version_key) if mods.is_dir() else []
    if not versions:
        raise KairosError("no kernel modules found under /lib/modules in the image tree",
                          "the image needs a kernel package (e.g. linux-image-amd64)")
    return versions[-1]


def _is_file(root: Path, rel: str) -> bool:
    path = resolve_in_root(root, rel)
    return path.is_file() and not path.is_symlink()


def _version_key(v: str) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"[.\-+~]", v)]


def module_index(moddir: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Map module name → relative path, and relative path → its dependency paths."""
    deps: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    index = moddir / "modules.dep"
    if index.is_symlink():  # it could point anywhere on the build host
        raise KairosError(f"{index.name} of kernel {moddir.name} is a symbolic link",
                          "reinstall the kernel package in the base")
    for line in index.read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        base = Path(mod).name
        for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                break
        names[base.replace("-", "_")] = mod
    return names, deps


def resolve_modules(moddir: Path, wanted: tuple[str, ...] = WANTED_MODULES) -> list[str]:
    """Module paths in load order (each after its dependencies), skipping unknown names."""
    names, deps = module_index(moddir)
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for dep in reversed(deps.get(mod, [])):
            visit(dep)
        order.append(mod)

    for name in wanted:
        mod = names.get(name.replace("-", "_"))
        if mod:
            visit(mod)
    return order


def _module_bytes(path: Path) -> bytes:
    # busybox insmod may lack xz/zstd support: ship every module uncompressed.
    if path.is_symlink() or not path.is_file():
        raise KairosError(f"kernel module {path.name} is not a regular file in the image tree",
                          "reinstall the kernel package")
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        raise KairosError(f"zstd-compressed kernel module {path.name} is not supported yet",
                          "use a kernel whose modules are uncompressed or xz-compressed")
    return data


def _data(name: str) -> bytes:
    return resources.files("kairos.artifacts").joinpath(f"data/{name}").read_bytes()


def _init_script() -> bytes:
    return _data("initrd-init.sh")


def build_initrd(root: Path, out: Path, *, mtime: int, busybox: Path | None = None) -> InitrdInfo:
    """Build the initrd for the kernel in `root` and write it (gzip, reproducible) to `out`."""
    kver = kernel_version(root)
    moddir = resolve_in_root(root, f"lib/modules/{kver}")
    mods = resolve_modules(moddir)
    bb = busybox or Path(which("busybox"))
    d = stat.S_IFDIR | 0o755
    entries = [Entry(p, d) for p in (
        "bin", "dev", "etc", "lib", "lib/modules", "mnt", "proc", "run", "sys", "sysroot",
        "state", "lower", "rw", "sbin", "tmp")]
    entries.append(Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(Entry("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3)))
    entries.append(Entry("bin/busybox", stat.S_IFREG | 0o755, bb.read_bytes()))
    for applet in APPLETS:
        entries.append(Entry(f"bin/{applet}", stat.S_IFLNK | 0o777, b"busybox"))
    entries.append(Entry("init", stat.S_IFREG | 0o755, _init_script()))
    entries.append(Entry(UDHCPC_SCRIPT, stat.S_IFREG | 0o755, _data("initrd-udhcpc.sh")))
    load_list: list[str] = []
    for i, mod in enumerate(mods):
        name = Path(mod).name.split(".ko")[0] + ".ko"
        rel = f"lib/modules/{i:02d}-{name}"
        data = _module_bytes(resolve_in_root(root, f"lib/modules/{kver}/{mod}"))
        entries.append(Entry(rel, stat.S_IFREG | 0o644, data))
        load_list.append("/" + rel)
    entries.append(Entry("etc/modules", stat.S_IFREG | 0o644, ("\n".join(load_list) + "\n").encode()))
    buf = io.BytesIO()
    write_cpio(entries, buf, mtime)
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=packed, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(buf.getvalue())
    out.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(out, packed.getvalue())  # a link planted at `out` is replaced
    return InitrdInfo(out, kver, tuple(Path(m).name for m in mods), out.stat().st_size)


def copy_kernel(root: Path, out: Path) -> Path:
    """Copy the tree's kernel image for the version the initrd was built for."""
    src = resolve_in_root(root, f"boot/vmlinuz-{kernel_version(root)}")
    if not src.is_file():
        raise KairosError(f"kernel image {src} is missing", "reinstall the kernel package")
    shutil.copyfile(src, out)
    return out
