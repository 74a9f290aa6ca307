"""QEMU argv: TCG only, OVMF pflash, SSH on 127.0.0.1, snapshot, cidata, console wiring."""

from __future__ import annotations

from pathlib import Path

import pytest

from kairos.errors import BadInput
from kairos.vm.argv import Wiring, build_argv
from kairos.vm.config import Firmware, VMConfig


def wiring(base: Path, **kw: object) -> Wiring:
    values: dict[str, object] = {
        "disk_format": "raw", "ssh_port": 2222, "serial_log": base / "serial.log",
        "qmp_socket": base / "qmp.sock",
    }
    values.update(kw)
    return Wiring(**values)  # type: ignore[arg-type]


@pytest.fixture
def vmdir() -> Path:
    # A fixed path: pytest's tmp_path holds the test's name, which may contain "kvm".
    return Path("/srv/vm")


def pairs(argv: list[str], flag: str) -> list[str]:
    """Every value given to `flag` in argv."""
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_always_tcg_never_kvm(vmdir: Path) -> None:
    argv = build_argv(VMConfig(disk=vmdir / "d.raw"), wiring(vmdir))
    assert argv[0] == "qemu-system-x86_64"
    assert pairs(argv, "-machine") == ["q35,accel=tcg"]
    assert pairs(argv, "-cpu") == ["max"]
    assert "-enable-kvm" not in argv
    assert not any("kvm" in a for a in argv)


def test_memory_and_cpus(vmdir: Path) -> None:
    argv = build_argv(VMConfig(disk=vmdir / "d.raw"), wiring(vmdir))
    assert pairs(argv, "-m") == ["2048"] and pairs(argv, "-smp") == ["2"]
    argv = build_argv(VMConfig(disk=vmdir / "d.raw", memory=512, cpus=1), wiring(vmdir))
    assert pairs(argv, "-m") == ["512"] and pairs(argv, "-smp") == ["1"]


def test_bios_has_no_pflash(vmdir: Path) -> None:
    argv = build_argv(VMConfig(disk=vmdir / "d.raw"), wiring(vmdir))
    assert not any("pflash" in a for a in argv)


def test_uefi_pflash_code_readonly_vars_private(vmdir: Path) -> None:
    fw = Firmware(Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd"))
    vars_copy = vmdir / "OVMF_VARS.fd"
    argv = build_argv(VMConfig(disk=vmdir / "d.raw", uefi=True),
                      wiring(vmdir, firmware=fw, ovmf_vars=vars_copy))
    drives = [d for d in pairs(argv, "-drive") if "pflash" in d]
    assert drives == [
        "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        f"if=pflash,format=raw,unit=1,file={vars_copy}",
    ]
    # The shared template is never handed to QEMU writable.
    assert not any("OVMF_VARS_4M" in a for a in argv)


def test_uefi_without_vars_copy_is_a_bug(vmdir: Path) -> None:
    fw = Firmware(Path("/c.fd"), Path("/v.fd"))
    with pytest.raises(ValueError):
        build_argv(VMConfig(disk=vmdir / "d.raw", uefi=True), wiring(vmdir, firmware=fw))


def test_ssh_forward_only_on_localhost(vmdir: Path) -> None:
    argv = build_argv(VMConfig(disk=vmdir / "d.raw"), wiring(vmdir, ssh_port=40022))
    assert pairs(argv, "-netdev") == ["user,id=n0,hostfwd=tcp:127.0.0.1:40022-:22"]
    assert pairs(argv, "-device").count("virtio-net-pci,netdev=n0,romfile=") == 1


def test_boot_disk_virtio_blk_first_in_boot_order(vmdir: Path) -> None:
    disk = vmdir / "d.qcow2"
    argv = build_argv(VMConfig(disk=disk), wiring(vmdir, disk_format="qcow2"))
    assert f"if=none,id=d0,format=qcow2,file={disk}" in pairs(argv, "-drive")
    assert "virtio-blk-pci,drive=d0,bootindex=1" in pairs(argv, "-device")


def test_iso_is_a_cdrom(vmdir: Path) -> None:
    iso = vmdir / "live.iso"
    argv = build_argv(VMConfig(disk=iso), wiring(vmdir, disk_format="iso"))
    assert f"if=none,id=d0,media=cdrom,readonly=on,format=raw,file={iso}" in pairs(argv, "-drive")
    assert "ide-cd,drive=d0,bootindex=1" in pairs(argv, "-device")


def test_snapshot_flag(vmdir: Path) -> None:
    assert "-snapshot" not in build_argv(VMConfig(disk=vmdir / "d"), wiring(vmdir))
    assert "-snapshot" in build_argv(VMConfig(disk=vmdir / "d", snapshot=True),
                                     wiring(vmdir))


def test_cidata_attached_read_only(vmdir: Path) -> None:
    iso = vmdir / "cidata.iso"
    argv = build_argv(VMConfig(disk=vmdir / "d"), wiring(vmdir, cidata=iso))
    assert f"if=none,id=cidata,format=raw,readonly=on,file={iso}" in pairs(argv, "-drive")
    assert "virtio-blk-pci,drive=cidata" in pairs(argv, "-device")
    assert not any("cidata" in a for a in build_argv(VMConfig(disk=vmdir / "d"),
                                                     wiring(vmdir)))


def test_extra_disks(vmdir: Path) -> None:
    target = vmdir / "target.qcow2"
    argv = build_argv(VMConfig(disk=vmdir / "d", extra_disks=(target,)),
                      wiring(vmdir, extra_formats=("qcow2",)))
    assert f"if=none,id=x0,format=qcow2,file={target}" in pairs(argv, "-drive")
    assert "virtio-blk-pci,drive=x0" in pairs(argv, "-device")


def test_commas_in_paths_are_escaped(vmdir: Path) -> None:
    disk = vmdir / "a,b.raw"
    argv = build_argv(VMConfig(disk=disk), wiring(vmdir))
    assert f"if=none,id=d0,format=raw,file={vmdir}/a,,b.raw" in pairs(argv, "-drive")


def test_serial_to_log_file_and_qmp(vmdir: Path) -> None:
    w = wiring(vmdir)
    argv = build_argv(VMConfig(disk=vmdir / "d"), w)
    assert "-nographic" in argv  # makes SeaBIOS print to serial
    assert pairs(argv, "-chardev") == [f"file,id=ser0,path={w.serial_log},append=on"]
    assert pairs(argv, "-serial") == ["chardev:ser0"]
    assert pairs(argv, "-monitor") == ["none"]
    assert pairs(argv, "-qmp") == [f"unix:{w.qmp_socket},server=on,wait=off"]


def test_interactive_console_muxes_monitor_and_logs(vmdir: Path) -> None:
    w = wiring(vmdir)
    argv = build_argv(VMConfig(disk=vmdir / "d", console="interactive"), w)
    (chardev,) = pairs(argv, "-chardev")
    assert chardev.startswith("stdio,id=ser0,mux=on,signal=off,")
    assert f"logfile={w.serial_log}" in chardev
    assert pairs(argv, "-mon") == ["chardev=ser0,mode=readline"]
    assert "-monitor" not in argv


def test_stdio_console_plain(vmdir: Path) -> None:
    w = wiring(vmdir)
    argv = build_argv(VMConfig(disk=vmdir / "d", console="stdio"), w)
    (chardev,) = pairs(argv, "-chardev")
    assert chardev.startswith("stdio,id=ser0,signal=off,") and "mux" not in chardev
    assert pairs(argv, "-monitor") == ["none"]


def test_extra_args_come_last(vmdir: Path) -> None:
    argv = build_argv(VMConfig(disk=vmdir / "d", extra_args=("-rtc", "base=utc")),
                      wiring(vmdir))
    assert argv[-2:] == ["-rtc", "base=utc"]


@pytest.mark.parametrize("kw", [{"memory": 10}, {"cpus": 0}, {"ssh_port": 70000}])
def test_config_rejects_nonsense(vmdir: Path, kw: dict[str, int]) -> None:
    with pytest.raises(BadInput):
        VMConfig(disk=vmdir / "d", **kw)  # type: ignore[arg-type]


def test_reboot_modes(vmdir: Path) -> None:
    # reset: QEMU resets in place; exit: the reboot ends QEMU; restart: ends it too, and a
    # second monitor tells the harness it was a reset (so it starts a fresh QEMU)
    assert "-no-reboot" not in build_argv(VMConfig(disk=vmdir / "d"), wiring(vmdir))
    argv = build_argv(VMConfig(disk=vmdir / "d", reboot="exit"), wiring(vmdir))
    assert "-no-reboot" in argv and pairs(argv, "-qmp") == [
        "unix:/srv/vm/qmp.sock,server=on,wait=off"]
    argv = build_argv(VMConfig(disk=vmdir / "d", reboot="restart"),
                      wiring(vmdir, events_socket=vmdir / "events.sock"))
    assert "-no-reboot" in argv and pairs(argv, "-qmp") == [
        "unix:/srv/vm/qmp.sock,server=on,wait=off", "unix:/srv/vm/events.sock,server=on,wait=off"]
    with pytest.raises(ValueError):
        build_argv(VMConfig(disk=vmdir / "d", reboot="restart"), wiring(vmdir))


def test_snapshot_cannot_restart(vmdir: Path) -> None:
    with pytest.raises(BadInput, match="snapshot"):
        VMConfig(disk=vmdir / "d", snapshot=True, reboot="restart")
