"""`kairos upgrade` on a booted guest, from every kind of source, each followed by a reboot.

One guest for the module (a qcow2 overlay on the session's v1 disk, plus a second virtual
disk holding upgrade media), driven in order:

1. v1 boots; marker files go into /usr/local and /home/kairos; the SSH host key and every
   file of /oem are hashed.
2. `oci:` from a registry that demands token auth (a token server on the host issues JWTs;
   the registry checks them; Debian's docker-registry on the host's 127.0.0.1, which the
   guest reaches only as 10.0.2.2 through QEMU's user network, plain HTTP with
   `--allow-insecure-registries`; v2 pushed there with `skopeo copy`): refused without
   credentials, then pulled with the credentials in /root/.docker/config.json. Reboot: v2
   active, v1 passive.
3. `ocifile:` (v1's `image.oci.tar`) from the second disk, with no network at all (the
   upgrade runs in a network namespace of its own). Reboot: v1 active, v2 passive.
4. `file:` (v2's `rootfs.squashfs`) from the second disk, no network, `--reboot`: v2
   active, v1 passive.

The anonymous registry is the power-cut matrix's source (test_upgrade_powercut.py): its
last cut, after `done`, is that upgrade's reboot, checked the same way.

After every reboot: `kairos state` says active_boot, which version and digest each slot
holds (and their sha256, which must be the bytes `kairos build` made: the device squashes an
unpacked image into the same slot image), the running system's /etc/kairos-release is the
new one, the markers, the host key and /oem are unchanged, no unit and no stage step failed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kairos.vm.machine import BOOT_MARKER, VM
from kairos.vm.serial import tail
from tests.helpers import BOOT_TIMEOUT, state
from tests.registry import Registry, TokenServer, push, registry, write_auth_file
from tests.vm.conftest import assert_no_failed_steps
from tests.vm.upgrade_images import media_disk, overlay_guest

pytestmark = pytest.mark.vm

GUEST_HOST = "10.0.2.2"  # the host's 127.0.0.1, as QEMU's user network shows it to the guest
REPO = "kairos/core"
MEDIA_LABEL = "KAIROS_MEDIA"
MEDIA = "/run/kairos-media"  # where the guest mounts the second disk (/ and /mnt are read-only)
USER, PASSWORD = "kairos-test", secrets.token_hex(8)
UPGRADE_TIMEOUT = 1800.0
OCI_MT = "application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True)
class Image:
    """What a slot must hold after an upgrade to this image."""

    version: str
    sha256: str  # of the slot image `kairos build` made
    digest: str = ""  # OCI manifest digest, "" when the source has none (file:)


@dataclass
class Run:
    """What the module's tests share: the guest's baseline and how far it got."""

    baseline: str = ""
    host_key: str = ""
    active: Image | None = None
    broken: str = ""  # why the guest is in no known state (later tests are skipped)
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)


RUN = Run()


class GuestTokenServer(TokenServer):
    """The token server as the guest sees it: the registry's realm names 10.0.2.2."""

    @property
    def realm(self) -> str:
        return f"http://{GUEST_HOST}:{self.port}/token"


def _manifest_digest(host: str, repo: str, tag: str) -> str:
    conn = http.client.HTTPConnection(host, timeout=30)
    conn.request("HEAD", f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MT})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 200, f"{host}/{repo}:{tag}: HTTP {resp.status}"
    return str(resp.getheader("Docker-Content-Digest"))


def _layer_size(layout: Path, digest: str) -> int:
    manifest = json.loads((layout / "blobs/sha256" / digest.split(":", 1)[1]).read_bytes())
    return sum(int(layer["size"]) for layer in manifest["layers"])


def _guest_ref(reg: Registry, tag: str) -> str:
    return f"{GUEST_HOST}:{reg.host.rsplit(':', 1)[1]}/{REPO}:{tag}"


# ------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def v1(v1_image: dict[str, Any]) -> Image:
    return Image(str(v1_image["version"]), str(v1_image["rootfs_sha256"]),
                 str(v1_image["oci_digest"]))


@pytest.fixture(scope="module")
def v2(v2_image: dict[str, Any]) -> Image:
    return Image(str(v2_image["version"]), str(v2_image["rootfs_sha256"]),
                 str(v2_image["oci_digest"]))


@pytest.fixture(scope="module")
def media(v1_image: dict[str, Any], v2_image: dict[str, Any],
          tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The second disk: ext4 (made by mkfs.ext4 -d, no mount) with v1's OCI archive and
    v2's slot image."""
    work = tmp_path_factory.mktemp("upgrade-media")
    return media_disk({"v1.oci.tar": Path(str(v1_image["oci_archive"])),
                       "v2.squashfs": Path(str(v2_image["rootfs"]))},
                      work / "media.img", label=MEDIA_LABEL)


@pytest.fixture(scope="module")
def token_registry(v2_image: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[Registry, GuestTokenServer, str]]:
    """A registry that demands a bearer token from the token server, holding v2; yields
    it, the token server and v2's digest there. v2 is pushed into the registry's storage
    while it runs without auth: the realm the registry names is the guest's address of the
    token server, which the host cannot reach."""
    work = tmp_path_factory.mktemp("upgrade-token-registry")
    with registry(work / "reg") as seed:
        push(work, f"oci-archive:{v2_image['oci_archive']}", f"{seed.host}/{REPO}:v2")
        digest = _manifest_digest(seed.host, REPO, "v2")
    ts = GuestTokenServer(work / "token", {USER: PASSWORD})
    ts.start()
    try:
        with registry(work / "reg", auth=ts.registry_auth()) as reg:
            yield reg, ts, digest
    finally:
        ts.stop()


@pytest.fixture(scope="module")
def guest(v1_disk: Path, media: Path, keypair: tuple[Path, Path],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[VM]:
    """v1 booted from a qcow2 overlay on the session's disk, the media disk attached."""
    with overlay_guest(v1_disk, media, keypair[0],
                       tmp_path_factory.mktemp("upgrade-vm")) as machine:
        try:
            RUN.timings["boot v1"] = {"to_ssh_s": round(machine.wait_for_ssh(BOOT_TIMEOUT), 1)}
            yield machine
        finally:
            print(_timing_table())


# ------------------------------------------------------------------------------ helpers

@contextlib.contextmanager
def _chained(what: str) -> Iterator[None]:
    """A step the later tests build on: if it fails, they are skipped (the guest's state
    is unknown), and say why."""
    if RUN.broken:
        pytest.skip(f"an earlier step left the guest in no known state: {RUN.broken}")
    try:
        yield
    except Exception as exc:
        RUN.broken = f"{what}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        raise


def _fingerprint(vm: VM) -> str:
    """What an upgrade must not change: the markers, the SSH host key, every file of /oem."""
    return vm.ssh(
        "sudo -n sh -c 'cat /usr/local/upgrade-marker.txt /home/kairos/upgrade-marker.txt; "
        "sha256sum /etc/ssh/ssh_host_ed25519_key.pub; "
        "cd /oem && find . -type f -print0 | sort -z | xargs -0 sha256sum'").stdout


def _upgrade(vm: VM, name: str, source: str, *flags: str, env: str = "", netns: bool = False,
             check: bool = True) -> tuple[dict[str, Any], str, int]:
    """`kairos upgrade --source SOURCE --json FLAGS` as root in the guest; returns the JSON
    result, stderr and the exit code (a failure raises unless check=False)."""
    wrap = "unshare --net " if netns else ""
    cmd = (f"sudo -n {'env ' + env + ' ' if env else ''}{wrap}kairos upgrade "
           f"--source {shlex.quote(source)} --json {' '.join(flags)}")
    mark = vm.serial_mark()
    begin = time.monotonic()
    res = vm.ssh(cmd, check=False, timeout=UPGRADE_TIMEOUT)
    took = time.monotonic() - begin
    if not check:
        return {}, res.stderr, res.returncode
    assert res.returncode == 0, (
        f"{cmd} exited {res.returncode}:\n{res.stderr[-4000:]}\n{res.stdout[-1000:]}\n"
        f"serial:\n{tail(vm.serial_text(mark), 30)}")
    result: dict[str, Any] = json.loads(res.stdout)
    RUN.timings[name] = {"upgrade_s": round(took, 1), "phases": result.get("phases", {}),
                         "bytes_downloaded": result.get("bytes_downloaded"),
                         "layer_bytes_downloaded": result.get("layer_bytes_downloaded")}
    # Every phase marker reached the kernel log, hence the serial console.
    serial = vm.serial_text(mark)
    for phase in ("start", "preflight", "slot-written", "slot-synced", "flipped", "done"):
        assert f"kairos-upgrade: phase {phase}" in serial, f"no marker of phase {phase}"
    return result, res.stderr, res.returncode


def _reboot(vm: VM, name: str) -> None:
    RUN.timings.setdefault(name, {})["reboot_s"] = round(vm.reboot(timeout=BOOT_TIMEOUT), 1)


def _check_result(result: dict[str, Any], new: Image, source: str) -> None:
    assert result["source"] == source
    assert result["slot"] == "active"
    assert result["version"] == new.version
    assert result["digest"] == new.digest
    assert result["slot_sha256"] == new.sha256, (
        "the device's slot image is not the bytes `kairos build` made of the same image")


def _check_booted(vm: VM, new: Image, old: Image) -> dict[str, Any]:
    """After the reboot: the new image runs from the active slot, the old one is passive,
    and nothing the upgrade must keep changed."""
    st = state(vm)
    assert st["boot"] == "active_boot", st["boot"]
    images: dict[str, Any] = st["images"]  # type: ignore[assignment]
    active, passive = images["active"], images["passive"]
    assert active["running"], f"the running root is not active.img: {active}"
    for role, img, want in (("active", active, new), ("passive", passive, old)):
        assert img["found"] and img["recorded"], f"{role}: {img}"
        got = {k: img[k] for k in ("version", "digest", "sha256")}
        assert got == {"version": want.version, "digest": want.digest, "sha256": want.sha256}, (
            f"{role} slot holds {got}, expected {want}")
    release = vm.ssh("grep ^KAIROS_VERSION= /etc/kairos-release").stdout.strip()
    assert release == f'KAIROS_VERSION="{new.version}"', release
    assert _fingerprint(vm) == RUN.baseline, "a persistent file, the host key or /oem changed"
    assert vm.ssh_host_key_fingerprint() == RUN.host_key
    failed = vm.ssh("systemctl --failed --no-legend --plain").stdout.strip()
    assert failed == "", f"failed units:\n{failed}"
    assert_no_failed_steps(vm)
    RUN.active = new
    return st


def _mount_media(vm: VM) -> None:
    vm.ssh(f"sudo -n mkdir -p {MEDIA} && sudo -n mount -o ro LABEL={MEDIA_LABEL} {MEDIA}")


def _timing_table() -> str:
    lines = ["", "upgrade VM test timings (seconds):"]
    for name, t in RUN.timings.items():
        lines.append(f"  {name}: " + json.dumps(t))
    return "\n".join(lines)


# ------------------------------------------------------------------------------ tests

def test_v1_boots_and_baseline(guest: VM, v1: Image) -> None:
    with _chained("first boot"):
        st = state(guest)
        assert st["boot"] == "active_boot"
        active = st["images"]["active"]  # type: ignore[index]
        assert active["version"] == v1.version and active["sha256"] == v1.sha256, active
        token = secrets.token_hex(16)
        guest.ssh(f"echo usr-local-{token} | sudo -n tee /usr/local/upgrade-marker.txt "
                  f">/dev/null && echo home-{token} > /home/kairos/upgrade-marker.txt && sync")
        RUN.baseline = _fingerprint(guest)
        RUN.host_key = guest.ssh_host_key_fingerprint()
        assert f"usr-local-{token}" in RUN.baseline and f"home-{token}" in RUN.baseline
        assert "./90_custom.yaml" in RUN.baseline, RUN.baseline
        assert_no_failed_steps(guest)
        RUN.active = v1


def test_upgrade_from_registry_with_token_auth(
        guest: VM, token_registry: tuple[Registry, GuestTokenServer, str], v1: Image,
        v2: Image, v2_image: dict[str, Any]) -> None:
    """oci: from a registry that demands a token; credentials from /root/.docker/config.json.
    The digest is the one the registry serves (skopeo copy kept the manifest as built)."""
    reg, ts, digest = token_registry
    assert digest == v2.digest, "skopeo copy kept the manifest as built"
    source = f"oci:{_guest_ref(reg, 'v2')}"
    with _chained("upgrade from the token-auth registry"):
        guest.ssh("sudo -n rm -f /root/.docker/config.json")
        _, err, code = _upgrade(guest, "oci: token, no credentials", source,
                                "--allow-insecure-registries", check=False)
        assert code != 0, "a registry that demands a token served an anonymous client"
        assert "Traceback" not in err, err
        assert any(u == "" for u in (r["user"] for r in ts.requests)), ts.requests
        assert state(guest)["images"]["active"]["version"] == v1.version  # type: ignore[index]

        auth = write_auth_file(Path(ts.work) / "config.json", _guest_ref(reg, "x").split("/")[0],
                               USER, PASSWORD)
        guest.ssh("sudo -n sh -c 'mkdir -p /root/.docker && cat > /root/.docker/config.json "
                  "&& chmod 600 /root/.docker/config.json'", input=auth.read_text())
        result, _, _ = _upgrade(guest, "oci: token auth", source, "--allow-insecure-registries")
        _check_result(result, v2, source)
        assert any(r["user"] == USER and f"repository:{REPO}:pull" in r["scope"]
                   for r in ts.requests), ts.requests
        layer = _layer_size(Path(str(v2_image["oci_layout"])), v2.digest)
        assert result["layer_bytes_downloaded"] == layer, "a fresh blob cache pulls the layer"
        _reboot(guest, "oci: token auth")
    _check_booted(guest, v2, v1)


def test_upgrade_from_ocifile_without_network(guest: VM, v1: Image, v2: Image) -> None:
    """ocifile: v1's OCI archive on the second disk, the upgrade in a namespace with no
    network at all: the guest goes back to v1 by a second path."""
    assert RUN.active is not None
    prev = RUN.active
    source = f"ocifile:{MEDIA}/v1.oci.tar"
    with _chained("upgrade from an OCI archive"):
        _mount_media(guest)
        result, _, _ = _upgrade(guest, "ocifile:", source, netns=True)
        _check_result(result, v1, source)
        assert result["bytes_downloaded"] == 0
        _reboot(guest, "ocifile:")
    _check_booted(guest, v1, prev)


def test_upgrade_from_slot_file_and_reboot_flag(guest: VM, v2: Image) -> None:
    """file: v2's slot image on the second disk, no network; `--reboot` reboots by itself."""
    assert RUN.active is not None
    prev = RUN.active
    plain = Image(v2.version, v2.sha256)  # a slot file carries no OCI digest
    source = f"file:{MEDIA}/v2.squashfs"
    with _chained("upgrade from a slot image file"):
        _mount_media(guest)
        mark = guest.serial_mark()
        begin = time.monotonic()
        res = guest.ssh(f"sudo -n unshare --net kairos upgrade --source {source} --json --reboot",
                        check=False, timeout=UPGRADE_TIMEOUT)
        took = time.monotonic() - begin
        serial = guest.wait_for_serial(r"kairos-upgrade: phase done", 60, since=mark)
        assert serial
        result: dict[str, Any] = json.loads(res.stdout) if res.stdout.strip() else {}
        assert res.returncode in (0, 255) and result, (
            f"exit {res.returncode}:\n{res.stderr[-3000:]}\n"
            f"serial:\n{tail(guest.serial_text(mark), 30)}")
        _check_result(result, plain, source)
        assert result["bytes_downloaded"] == 0
        RUN.timings["file: --reboot"] = {"upgrade_s": round(took, 1),
                                        "phases": result.get("phases", {})}
        down = time.monotonic()
        guest.wait_for_serial(BOOT_MARKER, BOOT_TIMEOUT, since=mark)
        guest.wait_for_ssh(BOOT_TIMEOUT)
        RUN.timings["file: --reboot"]["reboot_s"] = round(time.monotonic() - down, 1)
    _check_booted(guest, plain, prev)
