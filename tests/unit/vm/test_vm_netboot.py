"""`kairos vm --netboot DIR` without starting QEMU: QEMU's argv (slirp TFTP + boot file, the
NIC's iPXE ROM, boot order), the TFTP chain script, the HTTP server on 127.0.0.1 only, the
memory a netbooted guest needs, and the refusals."""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kairos.cli import vm_cmd
from kairos.errors import BadInput
from kairos.vm import VM, VMConfig
from kairos.vm import netboot as vmnet
from kairos.vm.argv import Wiring, build_argv

ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")


def pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


@pytest.fixture
def nbdir(tmp_path: Path) -> Path:
    d = tmp_path / "nb"
    d.mkdir()
    (d / "kairos-x.ipxe").write_text("#!ipxe\n")
    (d / "kairos-x-kernel").write_bytes(b"kernel")
    with open(d / "kairos-x.squashfs", "wb") as fh:
        fh.truncate(1000 << 20)  # sparse
    return d


def wiring(tmp: Path, disk_format: str | None = None) -> Wiring:
    nb = vmnet.NetbootWiring(tmp / "tftp", "kairos-chain.ipxe", ROM, 4321)
    return Wiring(disk_format=disk_format, ssh_port=2222,  # type: ignore[arg-type]
                  serial_log=tmp / "s.log", qmp_socket=tmp / "q.sock", netboot=nb)


def test_argv_boots_the_nic_through_slirps_tftp(tmp_path: Path, nbdir: Path) -> None:
    argv = build_argv(VMConfig(netboot=nbdir), wiring(tmp_path))
    assert pairs(argv, "-netdev") == [
        f"user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22,tftp={tmp_path}/tftp,"
        "bootfile=kairos-chain.ipxe"]
    # QEMU's own default ROM (ipxe-qemu's): an explicit romfile= path was never run by SeaBIOS
    assert pairs(argv, "-device") == ["virtio-net-pci,netdev=n0,bootindex=2"]
    assert "-drive" not in argv  # no disk at all


def test_a_disk_beside_netboot_is_tried_first(tmp_path: Path, nbdir: Path) -> None:
    argv = build_argv(VMConfig(disk=tmp_path / "empty.raw", netboot=nbdir),
                      wiring(tmp_path, "raw"))
    devices = pairs(argv, "-device")
    assert devices[0] == "virtio-blk-pci,drive=d0,bootindex=1"
    assert "bootindex=2" in devices[1] and "virtio-net-pci" in devices[1]


def test_a_plain_boot_keeps_its_nic_without_rom(tmp_path: Path) -> None:
    w = Wiring(disk_format="raw", ssh_port=2222, serial_log=tmp_path / "s",
               qmp_socket=tmp_path / "q")
    argv = build_argv(VMConfig(disk=tmp_path / "d.raw"), w)
    assert pairs(argv, "-device")[-1] == "virtio-net-pci,netdev=n0,romfile="


def test_something_to_boot_is_required() -> None:
    with pytest.raises(BadInput, match="nothing to boot"):
        VMConfig()


def test_the_script_is_found_or_refused(tmp_path: Path, nbdir: Path) -> None:
    assert vmnet.find_script(nbdir) == nbdir / "kairos-x.ipxe"
    with pytest.raises(BadInput, match="does not exist") as err:
        vmnet.find_script(tmp_path / "missing")
    assert "kairos netboot" in err.value.hint
    with pytest.raises(BadInput, match=r"has no \*\.ipxe"):
        vmnet.find_script(tmp_path)
    (nbdir / "other.ipxe").write_text("#!ipxe\n")
    with pytest.raises(BadInput, match=r"has 2 \*\.ipxe"):
        vmnet.find_script(nbdir)


def test_the_chain_script_points_at_the_host_loopback() -> None:
    assert vmnet.chain_script(4321, "kairos-x.ipxe") == (
        "#!ipxe\nset base-url http://10.0.2.2:4321\nchain ${base-url}/kairos-x.ipxe\n")


def test_memory_holds_the_image_twice(nbdir: Path) -> None:
    assert vmnet.min_memory(nbdir) == 2 * 1000 + 512


def test_missing_rom_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="iPXE ROM") as err:
        vmnet.check_rom(tmp_path / "efi-virtio.rom")
    assert "ipxe-qemu" in err.value.hint


def test_http_serves_the_directory_on_loopback_only(nbdir: Path) -> None:
    with vmnet.DirServer(nbdir) as server:
        assert server.httpd.server_address[0] == "127.0.0.1"
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/kairos-x-kernel", timeout=10) as resp:
            assert resp.read() == b"kernel"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/", timeout=10)
        assert err.value.code == 403  # no listings
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/../etc/passwd", timeout=10)


@pytest.mark.skipif(not ROM.is_file(), reason="ipxe-qemu not installed")
def test_prepare_serves_dir_and_writes_the_chain_script(nbdir: Path) -> None:
    vm = VM(VMConfig(netboot=nbdir))
    try:
        argv = vm.prepare()
        assert vm.wiring is not None and vm.wiring.netboot is not None
        nb = vm.wiring.netboot
        chain = (nb.tftp_dir / nb.bootfile).read_text()
        assert f"http://10.0.2.2:{nb.http_port}" in chain and "kairos-x.ipxe" in chain
        assert f"tftp={nb.tftp_dir}" in " ".join(argv)
        with urllib.request.urlopen(f"http://127.0.0.1:{nb.http_port}/kairos-x.ipxe",
                                    timeout=10) as resp:
            assert resp.read() == b"#!ipxe\n"
    finally:
        vm.close()
    with pytest.raises(OSError):  # the server is gone with the VM
        urllib.request.urlopen(f"http://127.0.0.1:{nb.http_port}/kairos-x.ipxe", timeout=5)


# -- the CLI -------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kairos")
    vm_cmd.register(parser.add_subparsers(dest="verb"))
    return parser.parse_args(["vm", *argv])


def test_cli_netboot_options(nbdir: Path) -> None:
    args = parse("--netboot", str(nbdir))
    assert args.artifact is None and args.netboot == nbdir and args.memory is None
    assert vm_cmd._memory(args) == 2 * 1000 + 512  # over the default 2048
    assert vm_cmd._memory(parse("--netboot", str(nbdir), "--memory", "4096")) == 4096
    assert vm_cmd._memory(parse("disk.raw")) == vm_cmd.DEFAULT_MEMORY
    args = parse("target.raw", "--netboot", str(nbdir))
    assert args.artifact == Path("target.raw")


def test_cli_refusals(tmp_path: Path, nbdir: Path) -> None:
    with pytest.raises(BadInput, match="nothing to boot"):
        vm_cmd.run_vm(parse())
    with pytest.raises(BadInput, match="does not exist"):
        vm_cmd.run_vm(parse("--netboot", str(tmp_path / "missing")))
    with pytest.raises(BadInput, match="too small to netboot") as err:
        vm_cmd.run_vm(parse("--netboot", str(nbdir), "--memory", "1024"))
    assert err.value.exit_code == 2 and "--memory 2512" in err.value.hint
    with pytest.raises(BadInput, match="artifact"):
        vm_cmd.run_vm(parse(str(tmp_path / "nope.raw"), "--netboot", str(nbdir)))
