"""The initrd's side of netboot, run by a real shell with stub commands: the command line it
reads, DHCP on the first interface that answers, the download with its retries, the lease
applied by udhcpc's event script, and what the initrd carries for it."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from kairos.artifacts.initrd import APPLETS, UDHCPC_SCRIPT, WANTED_MODULES, build_initrd
from kairos.vm.netboot import DirServer
from tests.unit.factory.test_initrd import _fake_kernel

DATA = Path(__file__).resolve().parents[3] / "src/kairos/artifacts/data"
INIT = DATA / "initrd-init.sh"
UDHCPC = DATA / "initrd-udhcpc.sh"

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")


def stub(bindir: Path, name: str, body: str) -> None:
    path = bindir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def lib(script: str, bindir: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run `script` after sourcing the init's functions; `say` goes to stderr here."""
    full = f'. "{INIT}"; say() {{ echo "say: $*" >&2; }}; {script}'
    return subprocess.run(["sh", "-c", full, "sh", *args], capture_output=True, text=True,
                          env={"KAIROS_INITRD_LIB": "1", "PATH": f"{bindir}:/usr/bin:/bin",
                               **(env or {})})


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    stub(path, "sleep", ":")  # retries without waiting
    return path


def test_the_initrd_carries_what_netboot_needs() -> None:
    assert {"udhcpc", "ifconfig", "route", "wget"} <= set(APPLETS)
    assert {"virtio_net", "e1000", "e1000e"} <= set(WANTED_MODULES)


@pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="busybox-static not installed")
def test_the_udhcpc_script_is_in_the_initrd_and_executable(tmp_path: Path) -> None:
    _fake_kernel(tmp_path)
    build_initrd(tmp_path, tmp_path / "initrd", mtime=1000)
    raw = gzip.decompress((tmp_path / "initrd").read_bytes())
    listing = subprocess.run(["cpio", "-tv"], input=raw, capture_output=True, check=True
                             ).stdout.decode().splitlines()
    (line,) = [x for x in listing if x.endswith(f" {UDHCPC_SCRIPT}")]
    assert line.startswith("-rwxr-xr-x")
    for applet in ("udhcpc", "wget"):
        assert any(x.endswith(f" bin/{applet} -> busybox") for x in listing), applet
    # the init passes it by that path
    assert f"-s /{UDHCPC_SCRIPT}" in INIT.read_text()


@pytest.mark.parametrize(("cmdline", "url", "bad"), [
    ("root=live:http://10.0.2.2:8080/k.squashfs netboot", "http://10.0.2.2:8080/k.squashfs", "0"),
    ("console=ttyS0 root=live:https://h/k.squashfs", "https://h/k.squashfs", "1"),
    ("root=live:CDLABEL=COS_LIVE rd.live.dir=/", "", "0"),
])
def test_the_command_line(bindir: Path, cmdline: str, url: str, bad: str) -> None:
    out = lib('read_cmdline $1; echo "$live_url|$live_bad|$live"', bindir, cmdline).stdout
    live = "COS_LIVE" if "CDLABEL" in cmdline else ""
    assert out.strip() == f"{url}|{bad}|{live}"


def test_dhcp_on_the_first_interface_that_answers(bindir: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    stub(bindir, "ifconfig", f'echo "ifconfig $*" >> {calls}')
    # eth0 never gets a lease, eth1 does
    stub(bindir, "udhcpc", f'echo "udhcpc $*" >> {calls}; case "$*" in *eth1*) exit 0;; esac; exit 1')
    res = lib('net_ifaces() { echo eth0; echo eth1; }; net_up 10 && echo "up:$net_if"', bindir)
    assert res.stdout.strip() == "up:eth1", res.stderr
    log = calls.read_text().splitlines()
    assert log[:2] == ["ifconfig eth0 up", "udhcpc -i eth0 -s /etc/udhcpc.script -n -q -t 3 -T 2"]
    assert log[-1].startswith("udhcpc -i eth1 ")


def test_no_lease_gives_up(bindir: Path, tmp_path: Path) -> None:
    stub(bindir, "ifconfig", ":")
    stub(bindir, "udhcpc", "exit 1")
    res = lib('net_ifaces() { echo eth0; }; net_up 12 || echo "no lease"', bindir)
    assert res.stdout.strip() == "no lease"
    # and with no interface at all
    res = lib('net_ifaces() { :; }; net_up 3 || echo "no lease"', bindir)
    assert res.stdout.strip() == "no lease"


@pytest.mark.parametrize(("fails", "tries", "ok"), [(0, 5, True), (2, 5, True), (5, 5, False),
                                                    (1, 1, False)])
def test_download_retries(bindir: Path, tmp_path: Path, fails: int, tries: int, ok: bool) -> None:
    count = tmp_path / "count"
    count.write_text("0")
    # fails the first `fails` times (once with an empty file, which counts as a failure too)
    stub(bindir, "wget", f"""n=$(($(cat {count}) + 1)); echo $n > {count}
out=""; while [ $# -gt 0 ]; do [ "$1" = -O ] && out=$2; shift; done
if [ $n -le {fails} ]; then : > "$out"; [ $n = 1 ] && exit 0; exit 1; fi
echo image > "$out\"""")
    target = tmp_path / "rootfs.squashfs"
    res = lib(f'fetch http://h/k.squashfs {target} {tries} && echo fetched', bindir)
    assert ("fetched" in res.stdout) == ok, res.stderr
    assert int(count.read_text()) == (fails + 1 if ok else tries)
    if ok:
        assert target.read_text() == "image\n"
        assert res.stderr.count("retrying") == fails
    else:
        assert res.stderr.count("retrying") == tries - 1


@pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="busybox-static not installed")
def test_download_with_the_real_busybox(tmp_path: Path) -> None:
    """The initrd's busybox (the host's busybox-static) fetches from an HTTP server with the
    options the init uses: a crash of an applet on some option shows here, not in a VM."""
    bindir = tmp_path / "bb"
    bindir.mkdir()
    (bindir / "wget").symlink_to("/bin/busybox")
    served = tmp_path / "srv"
    served.mkdir()
    (served / "k.squashfs").write_bytes(bytes(range(256)) * 4096)
    target = tmp_path / "rootfs.squashfs"
    with DirServer(served) as server:
        url = f"http://127.0.0.1:{server.port}/k.squashfs"
        res = lib(f"fetch {url} {target} 1 && echo fetched", bindir)
        assert res.stdout.strip() == "fetched", res.stderr
        assert target.read_bytes() == (served / "k.squashfs").read_bytes()
        res = lib(f"fetch {url}.missing {tmp_path / 'none'} 1 || echo failed", bindir)
        assert res.stdout.strip() == "failed" and "Segmentation" not in res.stderr


def test_the_lease_is_applied(bindir: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    resolv = tmp_path / "resolv.conf"
    stub(bindir, "ifconfig", f'echo "ifconfig $*" >> {calls}')
    stub(bindir, "route", f'echo "route $*" >> {calls}')
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "KAIROS_RESOLV_CONF": str(resolv),
           "interface": "eth0", "ip": "10.0.2.15", "subnet": "255.255.255.0",
           "router": "10.0.2.2", "dns": "10.0.2.3 10.0.2.4", "domain": "lan"}
    subprocess.run(["sh", str(UDHCPC), "bound"], env=env, check=True)
    assert calls.read_text().splitlines() == [
        "ifconfig eth0 10.0.2.15 netmask 255.255.255.0",
        "route add default gw 10.0.2.2 dev eth0"]
    assert resolv.read_text() == "search lan\nnameserver 10.0.2.3\nnameserver 10.0.2.4\n"
    calls.unlink()
    subprocess.run(["sh", str(UDHCPC), "deconfig"], env=env, check=True)
    assert calls.read_text().splitlines() == ["ifconfig eth0 0.0.0.0"]
    assert os.stat(UDHCPC).st_mode & stat.S_IRUSR
