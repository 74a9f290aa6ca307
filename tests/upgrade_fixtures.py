"""Shared helpers for the host tests of `kairos upgrade` (tests/integration/test_upgrade_*.py).

A "device" here is what the upgrade acts on through its hidden flags: a real ext4 COS_STATE
(a sparse file, mkfs.ext4, mounted with `-o loop`; the flip checkpoints its journal) holding
`cOS/active.img` and `cOS/passive.img`, a COS_PERSISTENT directory (scratch and blob cache),
and optionally an ext4 COS_RECOVERY holding `cOS/recovery.squashfs`. The images are tiny
Kairos trees (/etc/kairos-release, /boot/vmlinuz, /boot/initrd, an executable early-init)
made into squashfs slots or OCI images with the project's own writers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kairos.artifacts.rootfs import make_squashfs
from kairos.disk.mounts import mount
from kairos.oci.image import ImageConfig, ImageRef, blob_path, write_image
from kairos.oci.layer import LayerInfo, write_layer
from kairos.oci.media import INDEX_FILE, OCI_LAYOUT_FILE, digest_hex
from kairos.run import require, run
from tests.helpers import ROOT

EPOCH = 1_700_000_000
MARK = "kairos-upgrade: phase"
SLOT_FILES = {"active": "cOS/active.img", "passive": "cOS/passive.img"}
SCRATCH = ".kairos/upgrade"


# ------------------------------------------------------------------------------ trees

def kairos_tree(root: Path, version: str, *, arch: str = "amd64", payload: int = 0,
                seed: int = 0, boot_cfg: bool = True) -> Path:
    """A tiny tree the upgrade accepts as a Kairos image. `payload` adds that many random
    (incompressible) bytes in /usr/share/payload.bin, so a layer is big enough to cut;
    `boot_cfg` writes /boot/kairos-boot.cfg as `kairos build` does."""
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "boot").mkdir(exist_ok=True)
    (root / "usr/lib/kairos").mkdir(parents=True, exist_ok=True)
    (root / "usr/share").mkdir(parents=True, exist_ok=True)
    (root / "etc/kairos-release").write_text(
        f'KAIROS_NAME="kairos-test"\nKAIROS_VERSION="{version}"\nKAIROS_ARCH="{arch}"\n'
        'KAIROS_FLAVOR="debian"\n')
    (root / "etc/os-release").write_text(f"ID=debian\nVERSION_ID=12\nBUILD={version}\n")
    (root / "boot/vmlinuz").write_bytes(f"fake kernel {version}\n".encode())
    (root / "boot/initrd").write_bytes(f"fake initrd {version}\n".encode())
    early = root / "usr/lib/kairos/early-init"
    early.write_text("#!/bin/sh\nexec /sbin/init\n")
    early.chmod(0o755)
    (root / "usr/share/version").write_text(version + "\n")
    if payload:
        (root / "usr/share/payload.bin").write_bytes(random.Random(seed).randbytes(payload))
    if boot_cfg:
        from kairos.artifacts.bootid import write_boot_cfg
        write_boot_cfg(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (EPOCH, EPOCH), follow_symlinks=False)
    os.utime(root, (EPOCH, EPOCH))
    return root


def squash(tree: Path, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return make_squashfs(tree, out, mtime=EPOCH)


def layer(tree: Path, out: Path) -> LayerInfo:
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_layer(tree, out, mtime=EPOCH)


def oci_image(layers: list[LayerInfo], layout: Path, ref: str, *, arch: str = "amd64",
              archive: Path | None = None, version: str = "") -> ImageRef:
    labels = {"org.opencontainers.image.version": version} if version else {}
    return write_image(layers, layout, ref=ref, archive=archive,
                       config=ImageConfig(created_epoch=EPOCH, architecture=arch, labels=labels,
                                          cmd=["/sbin/init"]))


def manifest_layers(layout: Path, digest: str) -> list[dict[str, Any]]:
    doc: dict[str, Any] = json.loads(blob_path(layout, digest).read_bytes())
    layers: list[dict[str, Any]] = doc["layers"]
    return layers


def archive_with_truncated_blob(layout: Path, image: ImageRef, out: Path, digest: str,
                                keep: int) -> Path:
    """An OCI archive of `image` (index naming only it) whose blob `digest` holds only its
    first `keep` bytes: what a copy cut short leaves."""
    manifest = json.loads(blob_path(layout, image.digest).read_bytes())
    digests = [image.digest, manifest["config"]["digest"],
               *(entry["digest"] for entry in manifest["layers"])]
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": image.digest, "size": image.manifest_size}]}
    with tarfile.open(out, "w") as tf:
        for name in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            tf.addfile(info)
        for d in digests:
            data = blob_path(layout, d).read_bytes()
            if d == digest:
                data = data[:keep]
            _add_bytes(tf, f"blobs/sha256/{digest_hex(d)}", data)
        _add_bytes(tf, INDEX_FILE, json.dumps(index).encode())
        _add_bytes(tf, OCI_LAYOUT_FILE, b'{"imageLayoutVersion":"1.0.0"}')
    return out


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    import io
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, EPOCH
    tf.addfile(info, io.BytesIO(data))


BIG = 3 * 2**20 + 4321  # the payload of the "big" image: a layer a cut lands inside


@dataclass
class Images:
    """The test images, in one OCI layout (names are the layout's refs)."""

    layout: Path
    trees: dict[str, Path]
    refs: dict[str, ImageRef]
    archives: dict[str, Path]  # name -> an OCI archive holding just that image

    def layer(self, name: str, index: int = 0) -> dict[str, Any]:
        return manifest_layers(self.layout, self.refs[name].digest)[index]


def make_images(work: Path) -> Images:
    """v2 (small, as `kairos build` makes it), big (v2.1.0, a 3 MiB incompressible layer, no
    boot id file: the upgrade must add it), arm (an arm64 image) and armonly (an index over
    arm only)."""
    layout = work / "layout"
    images = Images(layout, {}, {}, {})
    specs: list[tuple[str, str, dict[str, Any]]] = [
        ("v2", "v2.0.0", {}),
        ("big", "v2.1.0", {"payload": BIG, "seed": 7, "boot_cfg": False}),
        ("arm", "v2.0.0", {"arch": "arm64"})]
    for name, version, kw in specs:
        tree = kairos_tree(work / "trees" / name, version, **kw)
        info = layer(tree, work / "blobs" / f"{name}.tar.gz")
        archive = work / f"{name}.oci.tar"
        images.trees[name] = tree
        images.refs[name] = oci_image([info], layout, name, arch=str(kw.get("arch", "amd64")),
                                      archive=archive, version=version)
        images.archives[name] = archive
    from tests.registry import add_index
    add_index(layout, ["arm"], "armonly")
    return images


# ------------------------------------------------------------------------------ filesystems

@contextlib.contextmanager
def ext4(image: Path, mountpoint: Path, size_mib: int, label: str) -> Iterator[Path]:
    """A sparse ext4 of `size_mib` MiB mounted (loop) at `mountpoint`; unmounted on exit (the
    loop device goes with it: mount -o loop sets autoclear)."""
    with open(image, "wb") as fh:
        fh.truncate(size_mib << 20)
    # No lazy init: the kernel thread zeroing inode tables would race the space checks.
    run(["mkfs.ext4", "-q", "-F", "-L", label, "-E",
         "lazy_itable_init=0,lazy_journal_init=0", str(image)])
    with mount(image, mountpoint, fstype="ext4", options=["loop"]) as mnt:
        yield mnt
    image.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


# ------------------------------------------------------------------------------ device

@dataclass(frozen=True)
class Snapshot:
    """Every file of the slot partitions (by sha256) and what each slot name points at."""

    files: dict[str, str]
    inodes: dict[str, int]


@dataclass
class Device:
    """The partitions one upgrade acts on, mounted in a temp dir."""

    state: Path
    persistent: Path
    recovery: Path | None = None
    old: dict[str, str] = field(default_factory=dict)  # slot name -> version it holds

    @property
    def active(self) -> Path:
        return self.state / SLOT_FILES["active"]

    @property
    def passive(self) -> Path:
        return self.state / SLOT_FILES["passive"]

    @property
    def scratch(self) -> Path:
        return self.persistent / SCRATCH

    def upgrade(self, source: str | None, *args: str, booted: str = "active",
                json_out: bool = True, env: dict[str, str] | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess[str]:
        argv = ["upgrade"]
        if source is not None:
            argv += ["--source", source]
        argv += ["--state-dir", str(self.state), "--persistent-dir", str(self.persistent),
                 "--booted", booted]
        if self.recovery is not None:
            argv += ["--recovery-dir", str(self.recovery)]
        if json_out:
            argv.append("--json")
        return kairos_cli(*argv, *args, env=env, timeout=timeout)

    def popen(self, source: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "kairos", "upgrade", "--source", source,
                "--state-dir", str(self.state), "--persistent-dir", str(self.persistent),
                "--booted", "active", "--json", *args]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, **env}, cwd=ROOT)

    def snapshot(self) -> Snapshot:
        files: dict[str, str] = {}
        inodes: dict[str, int] = {}
        for label, part in (("state", self.state), ("recovery", self.recovery)):
            if part is None:
                continue
            for dirpath, dirnames, filenames in os.walk(part):
                dirnames[:] = [d for d in dirnames if d != "lost+found"]
                for name in filenames:
                    path = Path(dirpath, name)
                    rel = f"{label}:{path.relative_to(part)}"
                    files[rel] = sha256_file(path)
                    inodes[rel] = path.stat().st_ino
        return Snapshot(files, inodes)

    def records(self) -> dict[str, Any]:
        from kairos.agent import slotstate
        result: dict[str, Any] = slotstate.resolve(self.state, dict(SLOT_FILES))
        return result


def kairos_cli(*args: str, env: dict[str, str] | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`kairos ARGS` as a separate process (never raises on a non-zero exit)."""
    return subprocess.run([sys.executable, "-m", "kairos", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout,
                          cwd=ROOT)


def seed_records(dev: Device, sources: dict[str, str]) -> None:
    """state.yaml naming what the slots hold, as the installer leaves it."""
    from kairos.agent import slotstate
    roles = {}
    for role, rel in SLOT_FILES.items():
        path = dev.state / rel
        roles[role] = slotstate.record_file(
            path, source=sources[role], digest="", sha256=sha256_file(path),
            version=dev.old[role], arch="amd64", date="2026-11-01T00:00:00Z")
    slotstate.save(dev.state, "COS_STATE", roles, [])


@contextlib.contextmanager
def device(work: Path, *, state_mib: int = 96, recovery: bool = False,
           records: bool = True) -> Iterator[Device]:
    """COS_STATE (ext4) with active.img = v1.0.0 and passive.img = v0.9.0 (records in
    state.yaml unless `records` is false), COS_PERSISTENT (a directory), and with `recovery`
    an ext4 COS_RECOVERY holding recovery.squashfs = v0.8.0."""
    work.mkdir(parents=True, exist_ok=True)
    trees = work / "old-trees"
    with contextlib.ExitStack() as stack:
        state = stack.enter_context(ext4(work / "state.ext4", work / "state", state_mib,
                                         "COS_STATE"))
        persistent = work / "persistent"
        persistent.mkdir()
        dev = Device(state, persistent, old={"active": "v1.0.0", "passive": "v0.9.0"})
        for role, version in dev.old.items():
            squash(kairos_tree(trees / role, version), state / SLOT_FILES[role])
        if records:
            seed_records(dev, {r: f"file:/old/{r}.img" for r in SLOT_FILES})
        if recovery:
            rec = stack.enter_context(ext4(work / "recovery.ext4", work / "recovery", 64,
                                           "COS_RECOVERY"))
            squash(kairos_tree(trees / "recovery", "v0.8.0"), rec / "cOS/recovery.squashfs")
            dev.recovery = rec
        run(["sync"])
        yield dev


# ------------------------------------------------------------------------------ checks

def stderr_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """The error as shown: `kairos: error: …` and an optional `  hint: …` line, which must
    end the output; phase markers and progress lines may come before it."""
    lines = stderr_lines(proc)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    errors = [i for i, line in enumerate(lines) if line.startswith("kairos: error: ")]
    assert len(errors) == 1, f"want exactly one error line:\n{proc.stderr}"
    tail = lines[errors[0]:]
    assert len(tail) == 1 or (len(tail) == 2 and tail[1].startswith("  hint: ")), \
        f"the error must be one line plus an optional hint, at the end:\n{proc.stderr}"
    return tail


def phase_markers(text: str) -> list[str]:
    return [line[len(MARK):].strip() for line in text.splitlines() if line.startswith(MARK)]


def assert_untouched(dev: Device, before: Snapshot) -> None:
    """Nothing written to any slot: every file on the slot partitions as before (same bytes,
    same inodes: active.img, passive.img, state.yaml…), no transition image, no scratch."""
    after = dev.snapshot()
    assert after.files == before.files
    assert after.inodes == before.inodes
    assert not (dev.state / "cOS/transition.img").exists()
    if dev.recovery is not None:
        assert not (dev.recovery / "cOS/transition.squashfs").exists()
    assert not dev.scratch.exists(), sorted(p.name for p in dev.scratch.rglob("*"))


def assert_refused(dev: Device, before: Snapshot, proc: subprocess.CompletedProcess[str],
                   *fragments: str, code: int = 2, hint: bool = True) -> str:
    """The refusal every acceptance line asks for: exit `code`, one line (+ hint), nothing
    changed. Returns the error line(s) joined."""
    lines = error_lines(proc)
    assert proc.returncode == code, f"exit {proc.returncode}, want {code}:\n{proc.stderr}"
    assert not proc.stdout.strip(), proc.stdout
    text = "\n".join(lines)
    for frag in fragments:
        assert frag in text, f"{frag!r} not in:\n{text}"
    if hint:
        assert len(lines) == 2 and len(lines[1]) > len("  hint: ") + 5, text
    assert_untouched(dev, before)
    return text


def grub_env(state: Path) -> dict[str, str]:
    """The boot assessment's variables as GRUB reads them (`grub-editenv list` of
    COS_STATE:/boot_assessment); {} when there is no block."""
    from kairos.boot.assessment import ENV_FILE
    path = state / ENV_FILE
    if not path.exists():
        return {}
    out = run(["grub-editenv", str(path), "list"]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def grub_set(state: Path, **values: str | int) -> None:
    """Write variables as GRUB's save_env would (`grub-editenv set`, in place)."""
    from kairos.boot.assessment import ENV_FILE
    run(["grub-editenv", str(state / ENV_FILE), "set",
         *(f"{k}={v}" for k, v in values.items())])


def result_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


__all__ = [
    "BIG",
    "EPOCH",
    "MARK",
    "SCRATCH",
    "SLOT_FILES",
    "Device",
    "Images",
    "Snapshot",
    "archive_with_truncated_blob",
    "assert_refused",
    "assert_untouched",
    "device",
    "error_lines",
    "ext4",
    "free_bytes",
    "grub_env",
    "grub_set",
    "kairos_cli",
    "kairos_tree",
    "layer",
    "make_images",
    "manifest_layers",
    "oci_image",
    "phase_markers",
    "result_json",
    "seed_records",
    "sha256_file",
    "squash",
    "stderr_lines",
]


SYSTEM_CACHE = Path("/var/lib/containers")  # skopeo's blob-info cache for root; no switch
INSECURE = "--allow-insecure-registries"


@contextlib.contextmanager
def host_tools() -> Iterator[None]:
    """The tools the upgrade tests run on the host; skopeo's cache removed after if we made it."""
    import pytest
    require("skopeo", "openssl", "mksquashfs", "unsquashfs", "mkfs.ext4")
    if not Path("/usr/bin/docker-registry").exists():
        pytest.skip("docker-registry is not installed (scripts/setup installs it)")
    had_cache = SYSTEM_CACHE.exists()
    yield
    if not had_cache:
        shutil.rmtree(SYSTEM_CACHE, ignore_errors=True)
