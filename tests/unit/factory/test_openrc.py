"""OpenRC wiring on a scratch root: scripts, runlevels, the boot-time refresh from the image,
and the scripts' own logic, run by the real /bin/sh with OpenRC's helpers stubbed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from kairos.factory import openrc
from kairos.factory.openrc import SERVICES, VENDOR_DIR, install_openrc, script

STAGES = {"cos-setup-fs": "fs", "cos-setup-boot": "boot", "cos-setup-network": "network",
          "cos-setup-reconcile": "reconcile"}
# OpenRC's shell helpers, as stubs that say what they were asked.
STUBS = """
ebegin() { echo "ebegin $*"; }
eend() { echo "eend $1"; return "$1"; }
einfo() { echo "einfo $*"; }
ewarn() { echo "ewarn $*"; }
need() { echo "need $*"; }
use() { echo "use $*"; }
after() { echo "after $*"; }
before() { echo "before $*"; }
provide() { echo "provide $*"; }
"""


def _image(tmp_path: Path) -> Path:
    root = tmp_path / "image"
    for name in ("ssh", "dhcpcd", "udev", "networking"):
        path = root / "etc/init.d" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
    (root / "etc/resolv.conf").write_text("nameserver 192.0.2.53\n")  # the build host's
    return root


def test_services_runlevels_and_base_services(tmp_path: Path) -> None:
    root = _image(tmp_path)
    install_openrc(root)
    install_openrc(root)  # again: same result, no error
    for service, runlevel in SERVICES.items():
        for base in (root / "etc", root / VENDOR_DIR):
            path = base / "init.d" / service
            assert path.read_bytes() == script(service)
            assert path.stat().st_mode & 0o777 == 0o755
            link = base / "runlevels" / runlevel / service
            assert os.readlink(link) == f"/etc/init.d/{service}"
    assert SERVICES["cos-setup-fs"] == "boot"
    for runlevel, name in (("sysinit", "udev"), ("sysinit", "networking"), ("default", "ssh"),
                           ("default", "dhcpcd")):
        assert os.readlink(root / "etc/runlevels" / runlevel / name) == f"/etc/init.d/{name}"
    assert "192.0.2.53" not in (root / "etc/resolv.conf").read_text()
    assert "iface lo inet loopback" in (root / "etc/network/interfaces").read_text()
    config = yaml.safe_load((root / "system/oem" / openrc.STAGE_CONFIG).read_text())
    assert list(config["stages"]) == ["initramfs"]


def test_missing_base_service_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _image(tmp_path)
    (root / "etc/init.d/dhcpcd").unlink()
    assert openrc.enable_base_services(root) == ["udev", "networking", "ssh"]
    assert "dhcpcd" in caplog.text


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_scripts_are_openrc_shell(service: str, tmp_path: Path) -> None:
    text = script(service).decode()
    assert text.startswith("#!/sbin/openrc-run\n")
    (tmp_path / service).write_text(text)
    proc = subprocess.run(["sh", "-n", str(tmp_path / service)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if service in STAGES:  # the interface run-stage keeps, whatever it does inside
        assert f"/usr/lib/kairos/run-stage {STAGES[service]}" in text


def _run(tmp_path: Path, service: str, call: str, *, before: str = "",
         env: dict[str, str] | None = None, cwd: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    """Source a service script in sh, with run-stage and /run redirected below tmp_path."""
    fake = tmp_path / "run-stage"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/stages-run\n')
    fake.chmod(0o755)
    text = (script(service).decode().replace("/usr/lib/kairos/run-stage", str(fake))
            .replace("/run/kairos", f"{tmp_path}/run/kairos"))
    (tmp_path / "svc").write_text(text)
    return subprocess.run(["sh", "-c", f"{STUBS}\n{before}\n. {tmp_path}/svc\n{call}"],
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          cwd=cwd)


def _stages_run(tmp_path: Path) -> list[str]:
    path = tmp_path / "stages-run"
    return path.read_text().split() if path.exists() else []


def test_dependencies(tmp_path: Path) -> None:
    # OpenRC evaluates depend() inside /etc/init.d: `after *` names every service there.
    init_d = tmp_path / "init.d"
    init_d.mkdir()
    for name in ("ssh", "dhcpcd", "cos-setup-network"):
        (init_d / name).write_text("")

    def deps(service: str) -> list[str]:
        return _run(tmp_path, service, "depend", cwd=init_d).stdout.splitlines()

    assert "after cos-setup-fs" in deps("cos-setup-boot")
    assert "before ssh sshd agetty" in deps("cos-setup-boot")
    net = deps("cos-setup-network")
    assert "use net dhcpcd networking" in net and "after cos-setup-boot" in net
    # after every other service: waiting for a slow network delays none of them
    assert "after cos-setup-network dhcpcd ssh" in net
    assert "before ssh sshd" in deps("kairos-ssh-keygen")


def test_fs_service_skips_when_early_init_ran_the_stage(tmp_path: Path) -> None:
    out = _run(tmp_path, "cos-setup-fs", "start")
    assert out.returncode == 0 and _stages_run(tmp_path) == ["fs"]
    marker = tmp_path / "run/kairos/skip-stage/fs"
    marker.parent.mkdir(parents=True)
    marker.write_text("the fs stage ran in early-init\n")
    out = _run(tmp_path, "cos-setup-fs", "start")
    assert out.returncode == 0 and "ran in early-init" in out.stdout
    assert _stages_run(tmp_path) == ["fs"], "not run a second time"


# `ip` shows a default route from its fifth call on (the third check: v4 and v6 each);
# `sleep` does not sleep.
FAKE_IP = """
sleep() { :; }
ip() {
    n=$(cat {d}/ip-calls 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > {d}/ip-calls
    if [ "$n" -ge 5 ] && [ "$ROUTE" = yes ]; then echo "default via 10.0.2.2 dev eth0"; fi
}
"""


def test_network_stage_runs_once_there_is_a_default_route(tmp_path: Path) -> None:
    fake_ip = FAKE_IP.replace("{d}", str(tmp_path))
    out = _run(tmp_path, "cos-setup-network", "start", before=fake_ip, env={"ROUTE": "yes"})
    assert out.returncode == 0, out.stderr
    assert _stages_run(tmp_path) == ["network"]
    assert int((tmp_path / "ip-calls").read_text()) >= 5  # it waited for the route
    assert "ewarn" not in out.stdout


def test_network_stage_runs_anyway_after_the_timeout(tmp_path: Path) -> None:
    fake_ip = FAKE_IP.replace("{d}", str(tmp_path))
    out = _run(tmp_path, "cos-setup-network", "start", before=fake_ip,
               env={"ROUTE": "no", "NETWORK_TIMEOUT": "3"})
    assert out.returncode == 0
    assert "ewarn No default route after 3s" in out.stdout
    assert _stages_run(tmp_path) == ["network"]


def _commands(step: int) -> list[str]:
    config = yaml.safe_load((Path(openrc.__file__).parent / "data/openrc" /
                             openrc.STAGE_CONFIG).read_text())
    commands: list[str] = config["stages"]["initramfs"][step]["commands"]
    return commands


def test_boot_refresh_brings_the_images_services_and_keeps_the_users(tmp_path: Path) -> None:
    """The persistent /etc/init.d of a device that first booted an older image: the
    initramfs step replaces Kairos's services by the new image's and keeps the user's."""
    image = _image(tmp_path)
    install_openrc(image)
    device = tmp_path / "device"
    (device / "etc/init.d").mkdir(parents=True)
    (device / "etc/runlevels/default").mkdir(parents=True)
    (device / "etc/init.d/cos-setup-boot").write_text("#!/sbin/openrc-run\n# old image\n")
    (device / "etc/init.d/myapp").write_text("#!/sbin/openrc-run\n")
    os.symlink("/etc/init.d/myapp", device / "etc/runlevels/default/myapp")
    os.symlink("/etc/init.d/old", device / "etc/runlevels/default/cos-setup-boot")
    for command in _commands(0):
        command = (command.replace("/usr/lib/kairos/openrc", f"{image}/{VENDOR_DIR}")
                   .replace(" /etc/", f" {device}/etc/"))
        subprocess.run(["sh", "-c", command], check=True)
    assert (device / "etc/init.d/cos-setup-boot").read_bytes() == script("cos-setup-boot")
    assert (device / "etc/init.d/cos-setup-network").stat().st_mode & 0o777 == 0o755
    assert os.readlink(device / "etc/runlevels/default/cos-setup-boot") == \
        "/etc/init.d/cos-setup-boot"
    assert os.readlink(device / "etc/runlevels/boot/cos-setup-fs") == "/etc/init.d/cos-setup-fs"
    assert (device / "etc/init.d/myapp").is_file()
    assert os.readlink(device / "etc/runlevels/default/myapp") == "/etc/init.d/myapp"


@pytest.mark.parametrize("mounts,mode", [
    ("/dev/loop0 / squashfs ro,relatime,errors=continue 0 0\n", "ro"),
    ("/dev/loop0 / squashfs ro,relatime 0 0\noverlay / overlay rw,relatime 0 0\n", "rw"),
])
def test_fstab_root_entry_says_what_the_root_is(mounts: str, mode: str, tmp_path: Path) -> None:
    """Debian's checkroot.sh remounts / as fstab says (rw when it says nothing)."""
    (tmp_path / "mounts").write_text("proc /proc proc rw 0 0\n" + mounts)
    fstab = tmp_path / "fstab"
    fstab.write_text("# kairos: every mount is made by early-init\n")
    config = yaml.safe_load((Path(openrc.__file__).parent / "data/openrc" /
                             openrc.STAGE_CONFIG).read_text())
    step = config["stages"]["initramfs"][1]

    def local(text: str) -> str:
        return text.replace("/proc/self/mounts", str(tmp_path / "mounts")).replace(
            "/etc/fstab", str(fstab))

    assert subprocess.run(["sh", "-c", local(step["if"])]).returncode == 0
    for command in step["commands"]:
        subprocess.run(["sh", "-c", local(command)], check=True)
    assert fstab.read_text().splitlines()[-1] == f"/dev/root / auto {mode} 0 0"
    assert subprocess.run(["sh", "-c", local(step["if"])]).returncode != 0, "only once"


def test_debian_boot_scripts_are_told_the_root_is_read_only(tmp_path: Path) -> None:
    root = _image(tmp_path)
    (root / "etc/default").mkdir()
    (root / "etc/default/tmpfs").write_text("#RAMTMP=no\n")
    (root / "etc/inittab").write_text("si::sysinit:/etc/init.d/rcS\n")
    (root / "etc/runlevels/off").mkdir(parents=True)
    os.symlink("/etc/init.d/savecache", root / "etc/runlevels/off/savecache")
    assert openrc.fit_read_only_root(root) == ["etc/default/tmpfs", "savecache", "etc/mtab",
                                               "etc/inittab.d"]
    assert openrc.fit_read_only_root(root) == []  # once
    assert (root / "etc/default/tmpfs").read_text().endswith("\nRAMTMP=yes\n")
    assert not (root / "etc/runlevels/off/savecache").is_symlink()
    assert os.readlink(root / "etc/mtab") == "../proc/self/mounts"
