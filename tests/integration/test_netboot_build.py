"""`kairos netboot` on the session's default image: the build's own kernel, initrd and slot
image under Kairos's names, an iPXE script naming exactly those files, the config beside, an
initrd that can bring a NIC up and download (from the image's real kernel), and the whole
set served to a client by `kairos vm --netboot`'s HTTP server."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from kairos.artifacts.initrd import UDHCPC_SCRIPT
from kairos.vm.netboot import DirServer, find_script
from tests.helpers import kairos

pytestmark = pytest.mark.integration

CONFIG = "#cloud-config\nhostname: netboot-test\nusers:\n  - name: kairos\n    groups: [admin]\n"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def built(default_image: dict[str, object], tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, object]:
    work = tmp_path_factory.mktemp("netboot")
    cc = work / "cloud-config.yaml"
    cc.write_text(CONFIG)
    out = work / "netboot"
    proc = kairos("netboot", str(default_image["output"]), "-o", str(out), "--cloud-config",
                  str(cc), "--json")
    return {"out": out, "image": Path(str(default_image["output"])), "build": default_image,
            "result": json.loads(proc.stdout)}


def test_the_builds_files_under_kairos_names(built: dict[str, object]) -> None:
    out, image, result = Path(str(built["out"])), Path(str(built["image"])), built["result"]
    assert isinstance(result, dict)
    release = (image / "kairos-release").read_text()
    assert 'KAIROS_FLAVOR="debian"' in release or "KAIROS_FLAVOR=debian" in release
    name = result["name"]
    assert name.startswith("kairos-debian-12-") and name.endswith(
        str(built["build"]["version"]))  # type: ignore[index]
    assert sorted(p.name for p in out.iterdir()) == sorted([
        f"{name}-kernel", f"{name}-initrd", f"{name}.squashfs", f"{name}.ipxe", "config.yaml",
        "netboot.json"])
    # the very slot image the build made (and the ISO and disks carry), its kernel and initrd
    assert sha256(out / f"{name}.squashfs") == built["build"]["rootfs_sha256"]  # type: ignore[index]
    assert (out / f"{name}-kernel").read_bytes() == (image / "vmlinuz").read_bytes()
    assert (out / f"{name}-initrd").read_bytes() == (image / "initrd").read_bytes()
    assert (out / "config.yaml").read_text() == CONFIG
    assert find_script(out) == out / f"{name}.ipxe"


def test_the_script_names_the_files_beside_it(built: dict[str, object]) -> None:
    out = Path(str(built["out"]))
    script = find_script(out).read_text()
    urls = [w for line in script.splitlines() for w in line.split()
            if "${base-url}/" in w]
    files = {w.split("${base-url}/", 1)[1] for w in urls}
    assert files == {p.name for p in out.iterdir()} - {"netboot.json", find_script(out).name}
    assert "root=live:${base-url}/" in script and " netboot " in script


def test_the_initrd_can_netboot(built: dict[str, object]) -> None:
    out, result = Path(str(built["out"])), built["result"]
    assert isinstance(result, dict)
    raw = gzip.decompress((out / result["initrd"]).read_bytes())
    names = subprocess.run(["cpio", "-t"], input=raw, capture_output=True, check=True
                           ).stdout.decode().split()
    assert UDHCPC_SCRIPT in names
    for applet in ("udhcpc", "wget", "ifconfig", "route"):
        assert f"bin/{applet}" in names, applet
    modules = {n.split("-", 1)[1] for n in names if n.startswith("lib/modules/")
               and n.endswith(".ko")}
    assert {"virtio_net.ko", "e1000.ko", "e1000e.ko"} <= modules
    # small still: busybox and a few dozen modules
    assert (out / result["initrd"]).stat().st_size < 5 * 2**20


def test_the_set_is_served_over_http(built: dict[str, object]) -> None:
    out, result = Path(str(built["out"])), built["result"]
    assert isinstance(result, dict)
    with DirServer(out) as server:
        base = f"http://127.0.0.1:{server.port}"
        for name in (result["script"], result["kernel"], "config.yaml"):
            with urllib.request.urlopen(f"{base}/{name}", timeout=30) as resp:
                assert resp.read() == (out / name).read_bytes(), name
        req = urllib.request.Request(f"{base}/{result['rootfs']}", method="HEAD")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert int(resp.headers["Content-Length"]) == (out / result["rootfs"]).stat().st_size


def test_a_rerun_replaces_the_set_and_bad_input_writes_nothing(
        built: dict[str, object], tmp_path: Path) -> None:
    image = str(built["image"])
    out = tmp_path / "nb"
    kairos("netboot", image, "-o", str(out), "--name", "edge", "--url", "http://10.0.0.9/nb")
    kairos("netboot", image, "-o", str(out), "--name", "edge2")
    assert sorted(p.name for p in out.iterdir()) == [
        "edge2-initrd", "edge2-kernel", "edge2.ipxe", "edge2.squashfs", "netboot.json"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("#cloud-config\nusers: [\n")
    fresh = tmp_path / "fresh"
    proc = kairos("netboot", image, "-o", str(fresh), "--cloud-config", str(bad), check=False)
    assert proc.returncode == 2 and "bad.yaml" in proc.stderr.splitlines()[0]
    assert not fresh.exists()
