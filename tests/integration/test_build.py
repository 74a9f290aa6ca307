"""`kairos build` end to end: OCI interop with real skopeo/podman, reproducibility, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.helpers import kairos

pytestmark = pytest.mark.integration


def test_outputs_exist_and_are_small(default_image: dict[str, object]) -> None:
    out = Path(str(default_image["output"]))
    for name in ("rootfs.squashfs", "vmlinuz", "initrd", "image.oci.tar", "build.json",
                 "kairos-release"):
        assert (out / name).is_file(), name
    assert (out / "oci" / "index.json").is_file()
    assert int(str(default_image["initrd_size"])) < 8 * 2**20
    release = (out / "kairos-release").read_text()
    assert 'KAIROS_VERSION="v0.1.0"' in release
    assert 'KAIROS_FLAVOR="debian"' in release
    assert 'KAIROS_FLAVOR_RELEASE="12"' in release


def test_outputs_are_copies_not_links_into_the_cache(default_image: dict[str, object]) -> None:
    """Editing an output file must never edit the step cache the next build reuses."""
    out = Path(str(default_image["output"]))
    for p in [out / "rootfs.squashfs", out / "image.oci.tar", *(out / "oci").rglob("*")]:
        if p.is_file():
            assert p.stat().st_nlink == 1, f"{p} is a hard link"
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name], "scratch dir left"


def test_build_json_says_how_old_the_base_is(default_image: dict[str, object]) -> None:
    build = json.loads((Path(str(default_image["output"])) / "build.json").read_text())
    assert build["base_made"].endswith("Z") and build["base_age_days"] >= 0
    assert build["rootfs_sha256"] == default_image["rootfs_sha256"]


def test_slot_image_contents(default_image: dict[str, object], tmp_path: Path) -> None:
    """The slot carries its kernel, our initrd, early-init, the agent, and no secrets."""
    listing = subprocess.run(["unsquashfs", "-l", "-d", "", str(default_image["rootfs"])],
                             capture_output=True, text=True, check=True).stdout.split()
    for want in ("/boot/vmlinuz", "/boot/initrd", "/usr/lib/kairos/early-init", "/usr/bin/kairos",
                 "/usr/lib/kairos/python/kairos/cli/__init__.py", "/etc/kairos-release",
                 "/system/oem/00_rootfs.yaml", "/usr/sbin/sshd", "/oem", "/usr/local"):
        assert want in listing, want
    assert not [p for p in listing if p.startswith("/etc/ssh/ssh_host_")], "host keys baked in"
    subprocess.run(["unsquashfs", "-d", str(tmp_path / "x"), str(default_image["rootfs"]),
                    "/etc/shadow", "/etc/passwd", "/etc/machine-id"], check=True,
                   capture_output=True)
    shadow = (tmp_path / "x/etc/shadow").read_text()
    for line in shadow.splitlines():
        user, pw = line.split(":")[:2]
        assert pw in ("*", "!", "!*") or pw.startswith("!"), f"{user} has a usable password"
    assert (tmp_path / "x/etc/machine-id").read_text() == ""
    humans = [line for line in (tmp_path / "x/etc/passwd").read_text().splitlines()
              if int(line.split(":")[2]) >= 1000 and line.split(":")[0] != "nobody"]
    assert humans == [], "no default user"


def test_slot_carries_what_an_install_from_it_runs(default_image: dict[str, object]) -> None:
    """A live ISO of this image installs with the image's own tools (agent/install.py TOOLS)
    and GRUB's modules for both firmwares: nothing comes from the build host."""
    from kairos.agent.install import TOOLS
    listing = set(subprocess.run(["unsquashfs", "-l", "-d", "", str(default_image["rootfs"])],
                                 capture_output=True, text=True, check=True).stdout.split())
    for tool in TOOLS:
        assert {f"/usr/{d}/{tool}" for d in ("bin", "sbin")} & listing, f"no {tool} in the image"
    for want in ("/usr/lib/grub/i386-pc/boot.img", "/usr/lib/grub/i386-pc/normal.mod",
                 "/usr/lib/grub/x86_64-efi/normal.mod"):
        assert want in listing, want


def test_every_pyc_is_hash_based(default_image: dict[str, object], tmp_path: Path) -> None:
    """The slot clamps mtimes, so timestamp pycs would be stale and Python would recompile
    every module at each boot on the read-only root. Every pyc must be an unchecked-hash one."""
    subprocess.run(["unsquashfs", "-d", str(tmp_path / "x"), str(default_image["rootfs"]),
                    "/usr/lib/python3.11", "/usr/lib/python3", "/usr/lib/kairos/python"],
                   check=True, capture_output=True)
    pycs = list((tmp_path / "x").rglob("*.pyc"))
    assert len(pycs) > 500
    stale = [p for p in pycs if int.from_bytes(p.read_bytes()[4:8], "little") != 0b01]
    assert stale == [], f"{len(stale)} timestamp or checked pycs, e.g. {stale[:3]}"
    sources = [p for p in (tmp_path / "x/usr/lib/python3.11").glob("*.py")]
    missing = [s for s in sources
               if not (s.parent / "__pycache__" / f"{s.stem}.cpython-311.pyc").exists()]
    assert missing == [], f"modules without a pyc: {missing[:3]}"


def test_oci_archive_passes_skopeo_and_podman(default_image: dict[str, object],
                                              tmp_path: Path) -> None:
    archive = str(default_image["oci_archive"])
    layout = str(default_image["oci_layout"])
    env = dict(os.environ)
    (tmp_path / "registries.conf").write_text("")
    env["CONTAINERS_REGISTRIES_CONF"] = str(tmp_path / "registries.conf")
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}"], env=env,
                                     capture_output=True, text=True, check=True).stdout)
    assert info["Digest"] == default_image["oci_digest"]
    assert info["Labels"]["org.opencontainers.image.version"] == "v0.1.0"
    subprocess.run(["skopeo", "inspect", f"oci:{layout}:v0.1.0"], env=env, capture_output=True,
                   check=True)
    short = Path(tempfile.mkdtemp(prefix="kpm-", dir="/tmp"))  # podman: runroot < 50 chars
    store = ["--root", str(tmp_path / "storage"), "--runroot", str(short),
             "--storage-driver", "vfs"]
    load = subprocess.run(["podman", *store, "load", "-i", archive], env=env,
                          capture_output=True, text=True)
    assert load.returncode == 0, load.stderr
    images = subprocess.run(["podman", *store, "images", "--format", "json"], env=env,
                            capture_output=True, text=True, check=True)
    assert json.loads(images.stdout), "podman lists the loaded image"
    subprocess.run(["podman", *store, "system", "reset", "--force"], env=env, capture_output=True)
    shutil.rmtree(short, ignore_errors=True)


def test_warm_rebuild_reuses_every_step(default_image: dict[str, object], tmp_path: Path) -> None:
    proc = kairos("build", "--output", str(tmp_path / "again"), "--json")
    result = json.loads(proc.stdout)
    assert set(result["steps"].values()) <= {"cached", "none needed"}, result["steps"]
    assert result["rootfs_sha256"] == default_image["rootfs_sha256"]


def test_rebuild_from_same_inputs_is_byte_identical(default_image: dict[str, object],
                                                    tmp_path: Path) -> None:
    """Every step after the base re-runs (--rebuild) and the slot image is the same bytes."""
    proc = kairos("build", "--output", str(tmp_path / "rebuilt"), "--rebuild", "--no-oci", "--json")
    result = json.loads(proc.stdout)
    assert result["steps"]["kairosify"] == "built"
    assert result["steps"]["squash"] == "built"
    assert result["rootfs_sha256"] == default_image["rootfs_sha256"]


@pytest.mark.parametrize("args,needle", [
    (["--base", "ubuntu:noble"], "unknown base kind 'ubuntu'"),
    (["--base", "debian:sid"], "unsupported Debian suite"),
    (["--base", "dir:/nonexistent/root"], "does not exist"),
    (["--version", "latest"], "not a semantic version"),
])
def test_bad_build_input_is_one_line_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    proc = kairos("build", "--output", str(tmp_path / "out"), *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "hint:" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_missing_host_tool_is_named_with_its_package(tmp_path: Path) -> None:
    proc = kairos("build", "--output", str(tmp_path / "out"), check=False,
                  env={"PATH": str(tmp_path)})
    assert proc.returncode == 2
    assert "mksquashfs" in proc.stderr and "apt-get install" in proc.stderr
    assert "Traceback" not in proc.stderr
