"""`kairos netboot` without root: the iPXE script and the kernel command line it gives (read
back by the config collector, early-init and `kairos state`), Kairos's file names, the files
written from a small real image directory, and bad input refused before anything is written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kairos.agent.state import LIVECD, boot_from_cmdline
from kairos.artifacts import netboot
from kairos.artifacts.iso import IsoInputs
from kairos.cli import main
from kairos.config.cmdline import parse_cmdline as config_from_cmdline
from kairos.early.plan import parse_cmdline as boot_params
from kairos.errors import BadInput
from kairos.run import run

CONFIG = "#cloud-config\nusers:\n  - name: kairos\n    groups: [admin]\n"
RELEASE = ('KAIROS_FLAVOR="debian"\nKAIROS_FLAVOR_RELEASE="12"\nKAIROS_VARIANT="core"\n'
           'KAIROS_ARCH="amd64"\nKAIROS_MODEL="generic"\nKAIROS_VERSION="v0.1.0"\n')
needs_squashfs = pytest.mark.skipif(shutil.which("mksquashfs") is None,
                                    reason="needs squashfs-tools")


def plan(name: str = "kairos-x", url: str | None = None, config: bool = False
         ) -> netboot.NetbootPlan:
    inputs = IsoInputs(Path("/i/rootfs.squashfs"), Path("/i/vmlinuz"), Path("/i/initrd"),
                       Path("/i/cc.yaml") if config else None)
    return netboot.NetbootPlan(name, url, inputs)


def lines_of(script: str, command: str) -> list[list[str]]:
    return [line.split() for line in script.splitlines() if line.split()[:1] == [command]]


def expand(text: str, base: str) -> str:
    """What iPXE hands the kernel once ${base-url} is set."""
    return text.replace("${base-url}", base)


def test_the_script_boots_the_kernel_live_from_base_url() -> None:
    script = netboot.render_ipxe(plan())
    assert script.startswith("#!ipxe\n")
    assert lines_of(script, "set") == []  # whoever chains the script sets base-url
    assert lines_of(script, "isset") == [["isset", "${base-url}", "||", "goto", "no_base_url"]]
    (kernel,) = lines_of(script, "kernel")
    assert kernel[1] == "${base-url}/kairos-x-kernel"
    args = kernel[2:]
    assert args[:5] == ["initrd=kairos-x-initrd", "root=live:${base-url}/kairos-x.squashfs",
                        "rd.neednet=1", "ip=dhcp", "netboot"]
    assert "console=ttyS0,115200" in args and "console=tty1" in args and "panic=5" in args
    assert not [a for a in args if a.startswith(("config_url=", "rd.cos.oemlabel"))]
    assert lines_of(script, "initrd") == [["initrd", "${base-url}/kairos-x-initrd"]]
    body = script.splitlines()
    assert body.index("boot") < body.index(":no_base_url") < body.index("exit 1")


def test_a_fixed_url_and_a_config() -> None:
    script = netboot.render_ipxe(plan(url="http://192.168.1.5:8080/kairos", config=True))
    assert "isset ${base-url} || set base-url http://192.168.1.5:8080/kairos\n" in script
    (kernel,) = lines_of(script, "kernel")
    assert "config_url=${base-url}/config.yaml" in kernel


@pytest.mark.parametrize("config", [False, True])
def test_the_command_line_is_a_live_boot_everywhere_it_is_read(config: bool) -> None:
    base = "http://10.0.2.2:4321"
    cmdline = expand(netboot.kernel_cmdline(plan(config=config)), base)
    # the initrd fetches this (its own parser, run by a shell: test_netboot_initrd.py)
    assert f"root=live:{base}/kairos-x.squashfs" in cmdline.split()
    assert boot_params(cmdline).mode == "live"
    assert boot_from_cmdline(cmdline) == LIVECD
    # the collector sees the config_url and no other Kairos key
    assert config_from_cmdline(cmdline) == ({"config_url": f"{base}/config.yaml"} if config
                                            else {})


def test_names_follow_kairos_releases(tmp_path: Path) -> None:
    assert netboot.image_name(tmp_path) == "kairos"  # no kairos-release beside
    (tmp_path / "kairos-release").write_text(RELEASE)
    name = netboot.image_name(tmp_path)
    assert name == "kairos-debian-12-core-amd64-generic-v0.1.0"
    p = plan(name)
    assert (p.kernel, p.initrd, p.rootfs, p.script) == (
        f"{name}-kernel", f"{name}-initrd", f"{name}.squashfs", f"{name}.ipxe")
    assert netboot.check_name("edge-1.0+x") == "edge-1.0+x"
    for bad in ("../x", "a b", "", "-x", "a/b"):
        with pytest.raises(BadInput, match="not a plain file name"):
            netboot.check_name(bad)


def test_urls() -> None:
    assert netboot.check_url("http://10.0.0.1/k/") == "http://10.0.0.1/k"
    assert netboot.check_url("http://${next-server}:8080") == "http://${next-server}:8080"
    with pytest.raises(BadInput, match="not an http:// URL"):
        netboot.check_url("https://example.invalid/k")
    with pytest.raises(BadInput, match="not an http:// URL"):
        netboot.check_url("tftp://10.0.0.1/k")
    for bad in ("http://a b", 'http://a"b', "http://a;reboot"):
        with pytest.raises(BadInput, match="spaces, quotes"):
            netboot.check_url(bad)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """A small real build output: a squashfs slot with /boot/vmlinuz and /boot/initrd."""
    tree = tmp_path / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot/vmlinuz").write_bytes(b"kernel")
    (tree / "boot/initrd").write_bytes(b"initrd")
    image = tmp_path / "image"
    image.mkdir()
    run(["mksquashfs", str(tree), str(image / "rootfs.squashfs"), "-comp", "xz", "-noappend",
         "-quiet"])
    (image / "vmlinuz").write_bytes(b"kernel")
    (image / "initrd").write_bytes(b"initrd")
    (image / "kairos-release").write_text(RELEASE)
    return image


@needs_squashfs
def test_make_netboot_writes_the_set(image_dir: Path, tmp_path: Path) -> None:
    cc = tmp_path / "cc.yaml"
    cc.write_text(CONFIG)
    out = tmp_path / "netboot"
    result = netboot.make_netboot(image_dir, out, cloud_config=cc)
    name = "kairos-debian-12-core-amd64-generic-v0.1.0"
    assert sorted(p.name for p in out.iterdir()) == sorted([
        f"{name}-kernel", f"{name}-initrd", f"{name}.squashfs", f"{name}.ipxe", "config.yaml",
        "netboot.json"])
    assert (out / f"{name}.squashfs").read_bytes() == (image_dir / "rootfs.squashfs").read_bytes()
    assert (out / f"{name}-kernel").read_bytes() == b"kernel"
    assert (out / f"{name}-initrd").read_bytes() == b"initrd"
    assert (out / "config.yaml").read_text() == CONFIG
    assert (out / f"{name}.ipxe").read_text() == netboot.render_ipxe(
        netboot.NetbootPlan(name, None, netboot.check_inputs(image_dir, cloud_config=cc)))
    record = json.loads((out / "netboot.json").read_text())
    assert record == result.summary() and record["config"] == "config.yaml"
    # an earlier output is replaced whole: no config this time, a fixed URL
    result = netboot.make_netboot(image_dir, out, url="http://10.1.1.1/nb", name="edge")
    assert sorted(p.name for p in out.iterdir()) == [
        "edge-initrd", "edge-kernel", "edge.ipxe", "edge.squashfs", "netboot.json"]
    assert "set base-url http://10.1.1.1/nb" in (out / "edge.ipxe").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".netboot.")]


@needs_squashfs
def test_a_foreign_directory_is_never_replaced(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(BadInput, match="not empty and was not written by 'kairos netboot'"):
        netboot.make_netboot(image_dir, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput, match="is not a directory"):
        netboot.make_netboot(image_dir, tmp_path / "file")


def _refused(args: list[str], out: Path, capsys: pytest.CaptureFixture[str], what: str) -> None:
    assert main(["netboot", *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("kairos: error:") and what in err[0], err
    assert len(err) == 2 and "hint:" in err[1]
    assert not out.exists()


@needs_squashfs
def test_cli_refuses_bad_input_with_exit_2_and_writes_nothing(
        image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    _refused([str(tmp_path / "missing")], out, capsys, "does not exist")
    broken = tmp_path / "broken"
    broken.mkdir()
    _refused([str(broken)], out, capsys, "has no rootfs.squashfs")
    (broken / "rootfs.squashfs").write_bytes(b"not a squashfs image" * 10)
    _refused([str(broken)], out, capsys, "is not a squashfs image")
    (image_dir / "vmlinuz").unlink()
    _refused([str(image_dir)], out, capsys, "has no vmlinuz")
    (image_dir / "vmlinuz").write_bytes(b"kernel")
    bad = tmp_path / "bad.yaml"
    bad.write_text("#cloud-config\nusers: [\n")
    _refused([str(image_dir), "--cloud-config", str(bad)], out, capsys, "bad.yaml")
    _refused([str(image_dir), "--url", "https://x.invalid/"], out, capsys, "http://")
    _refused([str(image_dir), "--name", "../up"], out, capsys, "plain file name")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_the_verb_is_registered_in_the_entry_point(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "kairos", "netboot", str(tmp_path / "nope"),
                           "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert err[0].startswith("kairos: error: image directory") and len(err) == 2, err
    assert not out.exists()
