"""`kairos build --init openrc`: a Debian 12 image with sysvinit + OpenRC and no systemd,
Kairos's stages wired as OpenRC services, cached apart from the systemd image."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from kairos.factory.openrc import SERVICES, VENDOR_DIR, script
from tests.helpers import kairos

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def openrc_image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    if os.geteuid() != 0:
        pytest.skip("needs root (run the suite with scripts/test as root)")
    out = tmp_path_factory.mktemp("openrc") / "image"
    result: dict[str, object] = json.loads(
        kairos("build", "--init", "openrc", "--output", str(out), "--json").stdout)
    return result


def _listing(image: dict[str, object]) -> set[str]:
    out = subprocess.run(["unsquashfs", "-lls", "-d", "", str(image["rootfs"])],
                         capture_output=True, text=True, check=True).stdout
    # "lrwxrwxrwx root/root 20 2023-11-14 22:13 /etc/runlevels/boot/x -> /etc/init.d/x"
    return {" ".join(line.split()[5:]) for line in out.splitlines() if line[:1] in "-dl"}


def test_build_reports_openrc(openrc_image: dict[str, object]) -> None:
    assert openrc_image["init"] == "openrc"
    build_json = json.loads((Path(str(openrc_image["output"])) / "build.json").read_text())
    assert build_json["init"] == "openrc"


def test_slot_image_has_openrc_and_no_systemd(openrc_image: dict[str, object]) -> None:
    entries = _listing(openrc_image)
    paths = {e.split(" -> ")[0] for e in entries}
    for want in ("/usr/sbin/openrc", "/usr/sbin/openrc-run", "/usr/sbin/init",
                 "/etc/init.d/ssh", "/etc/init.d/dhcpcd", "/etc/init.d/udev",
                 "/etc/init.d/networking", "/system/oem/09_openrc_services.yaml",
                 "/usr/lib/kairos/run-stage", "/usr/lib/kairos/early-init"):
        assert want in paths, want
    assert not [p for p in paths if p.endswith("/systemctl") or p.endswith("/systemd/systemd")]
    assert not [p for p in paths if p.startswith("/etc/ssh/ssh_host_")], "host keys baked in"
    units = [p for p in paths if p.startswith(("/usr/lib/systemd/system/", "/etc/systemd/"))]
    assert not [p for p in units if "cos-setup" in p or "kairos" in p], "no systemd wiring"
    for service, runlevel in SERVICES.items():
        for base in ("/etc", f"/{VENDOR_DIR}"):
            assert f"{base}/init.d/{service}" in paths
            assert f"{base}/runlevels/{runlevel}/{service} -> /etc/init.d/{service}" in entries
    for runlevel, service in (("default", "ssh"), ("default", "dhcpcd"), ("sysinit", "udev"),
                              ("sysinit", "networking")):
        assert f"/etc/runlevels/{runlevel}/{service} -> /etc/init.d/{service}" in entries
    assert "/etc/runlevels/off/savecache -> /etc/init.d/savecache" not in entries


def test_slot_image_files(openrc_image: dict[str, object], tmp_path: Path) -> None:
    subprocess.run(["unsquashfs", "-d", str(tmp_path / "x"), str(openrc_image["rootfs"]),
                    "/etc/init.d/cos-setup-network", "/etc/network/interfaces",
                    "/etc/resolv.conf", "/etc/default/tmpfs", "/etc/kairos-release"],
                   check=True, capture_output=True)
    x = tmp_path / "x"
    assert (x / "etc/init.d/cos-setup-network").read_bytes() == script("cos-setup-network")
    assert (x / "etc/init.d/cos-setup-network").stat().st_mode & 0o777 == 0o755
    assert "iface lo inet loopback" in (x / "etc/network/interfaces").read_text()
    assert "nameserver" not in (x / "etc/resolv.conf").read_text()  # not the build host's
    assert "RAMTMP=yes" in (x / "etc/default/tmpfs").read_text()
    assert 'KAIROS_FLAVOR="debian"' in (x / "etc/kairos-release").read_text()


def _build(tmp_path: Path, *args: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(
        kairos("build", *args, "--output", str(tmp_path / "out"), "--json").stdout)
    return result


def test_rebuilding_one_init_is_reproducible_and_keeps_the_other_cached(
        default_image: dict[str, object], openrc_image: dict[str, object],
        tmp_path: Path) -> None:
    """Same base, two inits, two images; rebuilding one (its steps re-run and prune older
    outputs) gives the same bytes and never evicts the other's cached steps."""
    assert default_image["rootfs_sha256"] != openrc_image["rootfs_sha256"]
    openrc, systemd = ["--init", "openrc"], ["--init", "systemd"]
    for (args, image), (other_args, other) in (((openrc, openrc_image), ([], default_image)),
                                               ((systemd, default_image), (openrc, openrc_image))):
        rebuilt = _build(tmp_path, *args, "--rebuild", "--no-oci")
        assert rebuilt["steps"]["kairosify"] == "built"  # type: ignore[index]
        assert rebuilt["rootfs_sha256"] == image["rootfs_sha256"]
        warm = _build(tmp_path, *other_args)
        assert set(warm["steps"].values()) <= {"cached", "none needed"}, warm  # type: ignore[attr-defined]
        assert warm["rootfs_sha256"] == other["rootfs_sha256"]
        assert warm["init"] == other["init"]
