"""The QEMU command line, built as a pure function of the config and the VM's files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kairos.vm.config import DiskFormat, Firmware, VMConfig
from kairos.vm.netboot import NetbootWiring

QEMU = "qemu-system-x86_64"


@dataclass(frozen=True)
class Wiring:
    """The per-run facts argv needs that are not in VMConfig (resolved at start)."""

    disk_format: DiskFormat | None  # None: no boot disk (netboot)
    ssh_port: int
    serial_log: Path
    qmp_socket: Path
    events_socket: Path | None = None  # a second QMP monitor for VM's event watch (restart)
    firmware: Firmware | None = None  # set when uefi
    ovmf_vars: Path | None = None  # the VM's private, writable copy of the vars store
    cidata: Path | None = None
    extra_formats: tuple[DiskFormat, ...] = ()
    netboot: NetbootWiring | None = None


def _opt(value: Path | str) -> str:
    # QEMU option values split on commas; a doubled comma is a literal one.
    return str(value).replace(",", ",,")


def machine_args(config: VMConfig) -> list[str]:
    # Always TCG: /dev/kvm exists on these hosts but does not work, and -cpu max under TCG
    # gives the guest every feature the emulator has (x86-64-v2 for modern distributions).
    return ["-machine", "q35,accel=tcg", "-cpu", "max",
            "-m", str(config.memory), "-smp", str(config.cpus)]


def firmware_args(wiring: Wiring) -> list[str]:
    if wiring.firmware is None:
        return []  # SeaBIOS, QEMU's default
    if wiring.ovmf_vars is None:
        raise ValueError("UEFI needs a private copy of the OVMF vars store")
    return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_opt(wiring.firmware.code)}",
            "-drive", f"if=pflash,format=raw,unit=1,file={_opt(wiring.ovmf_vars)}"]


def disk_args(config: VMConfig, wiring: Wiring) -> list[str]:
    # The boot disk gets the lowest bootindex so firmware never prefers the cidata or extra
    # disks (1, not 0: a direct -kernel boot given in extra_args claims 0).
    args: list[str] = []
    if config.disk is None or wiring.disk_format is None:
        pass  # netboot without a disk
    elif wiring.disk_format == "iso":
        args += ["-drive", f"if=none,id=d0,media=cdrom,readonly=on,format=raw,"
                           f"file={_opt(config.disk)}",
                 "-device", "ide-cd,drive=d0,bootindex=1"]
    else:
        args += ["-drive", f"if=none,id=d0,format={wiring.disk_format},file={_opt(config.disk)}",
                 "-device", "virtio-blk-pci,drive=d0,bootindex=1"]
    for i, (extra, fmt) in enumerate(zip(config.extra_disks, wiring.extra_formats, strict=True)):
        kind = "raw" if fmt == "iso" else fmt
        args += ["-drive", f"if=none,id=x{i},format={kind},file={_opt(extra)}",
                 "-device", f"virtio-blk-pci,drive=x{i}"]
    if wiring.cidata is not None:
        # A read-only virtio disk rather than a CD: the guest's initrd already has virtio_blk,
        # and NoCloud finds the volume by its label on any block device.
        args += ["-drive", f"if=none,id=cidata,format=raw,readonly=on,file={_opt(wiring.cidata)}",
                 "-device", "virtio-blk-pci,drive=cidata"]
    if config.snapshot:
        args.append("-snapshot")
    return args


def net_args(wiring: Wiring) -> list[str]:
    # User-mode network; only 127.0.0.1 on the host can reach the guest's sshd. No option
    # ROM: the guest boots from its disk, and iPXE's banner costs seconds of every TCG boot.
    netdev = f"user,id=n0,hostfwd=tcp:127.0.0.1:{wiring.ssh_port}-:22"
    nb = wiring.netboot
    if nb is None:
        return ["-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,romfile="]
    # Netboot: slirp's DHCP names the boot file, its TFTP serves it, the NIC's iPXE ROM runs
    # it. The NIC comes after the boot disk (bootindex 1): an empty disk falls through to
    # the network, an installed one boots itself. QEMU's default ROM (nb.rom, checked at
    # wiring): SeaBIOS never ran the same file given as an absolute romfile= path.
    return ["-netdev", f"{netdev},tftp={_opt(nb.tftp_dir)},bootfile={_opt(nb.bootfile)}",
            "-device", "virtio-net-pci,netdev=n0,bootindex=2"]


def console_args(config: VMConfig, wiring: Wiring) -> list[str]:
    """Serial always lands in the log file; -nographic makes SeaBIOS print to serial too."""
    log = _opt(wiring.serial_log)
    args = ["-nographic"]
    if config.console == "interactive":
        # stdio with QEMU's mux: Ctrl-A X quits, Ctrl-A C toggles the monitor; signal=off so
        # Ctrl-C reaches the guest instead of killing QEMU.
        args += ["-chardev", f"stdio,id=ser0,mux=on,signal=off,logfile={log},logappend=on",
                 "-serial", "chardev:ser0", "-mon", "chardev=ser0,mode=readline"]
    elif config.console == "stdio":
        args += ["-chardev", f"stdio,id=ser0,signal=off,logfile={log},logappend=on",
                 "-serial", "chardev:ser0", "-monitor", "none"]
    else:
        args += ["-chardev", f"file,id=ser0,path={log},append=on",
                 "-serial", "chardev:ser0", "-monitor", "none"]
    # QMP for the harness: system_reset, system_powerdown, quit.
    args += ["-qmp", f"unix:{_opt(wiring.qmp_socket)},server=on,wait=off"]
    return args


def reboot_args(config: VMConfig, wiring: Wiring) -> list[str]:
    if config.reboot == "reset":
        return []
    args = ["-no-reboot"]
    if config.reboot == "restart":
        if wiring.events_socket is None:
            raise ValueError("restarting at a reboot needs the events monitor's socket")
        args += ["-qmp", f"unix:{_opt(wiring.events_socket)},server=on,wait=off"]
    return args


def build_argv(config: VMConfig, wiring: Wiring) -> list[str]:
    return [QEMU, "-name", "kairos-vm",
            *machine_args(config), *firmware_args(wiring), *disk_args(config, wiring),
            *net_args(wiring), *console_args(config, wiring), *reboot_args(config, wiring),
            *config.extra_args]
