"""`kairos upgrade` end to end on the host (issue #8): real ext4 partitions on loop devices,
a real registry (docker-registry on 127.0.0.1; anonymous, htpasswd and token auth) behind a
proxy that counts the bytes it serves, and the four kinds of source (oci:, ocifile:, dir:,
file:).

After each upgrade: active.img holds exactly the bytes the JSON reports (`slot_sha256`), and
those are the bytes `make_squashfs` gives for the image's tree (a pulled image and a built
one give the same slot); passive.img holds the previously active image (the same inode:
renamed, not copied); the records in state.yaml name the new image for active and the old
one for passive; no transition.img and no scratch tree are left behind.
"""

from __future__ import annotations

import difflib
import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kairos.agent.phases import PHASES
from kairos.run import run
from tests.registry import (
    Fault,
    Registry,
    htpasswd_auth,
    proxy,
    push,
    registry,
    token_server,
    write_auth_file,
)
from tests.upgrade_fixtures import (
    INSECURE,
    Device,
    Images,
    Snapshot,
    assert_untouched,
    device,
    error_lines,
    ext4,
    host_tools,
    kairos_tree,
    make_images,
    phase_markers,
    result_json,
    sha256_file,
    squash,
)

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module", autouse=True)
def _tools() -> Iterator[None]:
    with host_tools():
        yield


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    return make_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def expected(images: Images, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """sha256 of the slot each image must give: its tree (with the boot id file the upgrade
    adds when the image has none) made into a squashfs by the build's own code."""
    from kairos.artifacts.bootid import ensure_boot_cfg
    work = tmp_path_factory.mktemp("expected")
    out: dict[str, str] = {}
    for name in ("v2", "big"):
        tree = work / name
        run(["cp", "-a", "--", str(images.trees[name]), str(tree)])
        ensure_boot_cfg(tree)
        out[name] = sha256_file(squash(tree, work / f"{name}.squashfs"))
        shutil.rmtree(tree)
    return out


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory, images: Images) -> Iterator[Registry]:
    work = tmp_path_factory.mktemp("registry")
    with registry(work / "anon") as r:
        for name in ("v2", "big"):
            push(work, f"oci:{images.layout}:{name}", f"{r.host}/kairos/os:{name}")
        yield r


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Device]:
    with device(tmp_path / "dev") as d:
        yield d


def slot_file(slot: Path, rel: str) -> str:
    return run(["unsquashfs", "-cat", str(slot), rel]).stdout


def check_upgraded(dev: Device, before: Snapshot, doc: dict[str, Any], *, version: str,
                   digest: str, slot_sha: str, booted: str = "active") -> None:
    after = dev.snapshot()
    active = after.files["state:cOS/active.img"]
    assert active == doc["slot_sha256"] == slot_sha
    assert doc["slot_size"] == dev.active.stat().st_size
    assert (doc["slot"], doc["booted"], doc["version"], doc["digest"], doc["arch"]) == \
        ("active", booted, version, digest, "amd64")
    if booted == "active":
        # The old active image is the passive one now: the same file, renamed.
        assert after.files["state:cOS/passive.img"] == before.files["state:cOS/active.img"]
        assert after.inodes["state:cOS/passive.img"] == before.inodes["state:cOS/active.img"]
        old_passive = dev.old["active"]
    else:
        # Booted from passive (after a fallback): the known-good passive image stays.
        assert after.files["state:cOS/passive.img"] == before.files["state:cOS/passive.img"]
        assert after.inodes["state:cOS/passive.img"] == before.inodes["state:cOS/passive.img"]
        old_passive = dev.old["passive"]
    assert active not in (before.files["state:cOS/active.img"],
                          before.files["state:cOS/passive.img"])
    assert sorted(p.name for p in (dev.state / "cOS").iterdir()) == ["active.img", "passive.img"]
    assert not dev.scratch.exists()
    assert f'KAIROS_VERSION="{version}"' in slot_file(dev.active, "etc/kairos-release")
    assert slot_file(dev.active, "boot/kairos-boot.cfg").startswith("set kairos_boot_id=")
    records = dev.records()
    assert records["active"] is not None and records["passive"] is not None, records
    assert (records["active"].version, records["active"].digest, records["active"].sha256) == \
        (version, digest, active)
    assert records["active"].source == doc["source"]
    assert records["passive"].version == old_passive


# ------------------------------------------------------------------------------ oci:

def test_oci_anonymous_phases_and_a_second_run_downloads_nothing(
        reg: Registry, images: Images, expected: dict[str, str], dev: Device) -> None:
    big = images.layer("big")
    with proxy(reg.host) as px:
        source = f"oci:{px.host}/kairos/os:big"
        before = dev.snapshot()
        proc = dev.upgrade(source, INSECURE)
        doc = result_json(proc)
        check_upgraded(dev, before, doc, version="v2.1.0", digest=images.refs["big"].digest,
                       slot_sha=expected["big"])
        # Every phase of a registry upgrade booted from active, in order, once each.
        assert phase_markers(proc.stderr) == list(PHASES)
        assert list(doc["phases"]) == list(PHASES)
        assert doc["layer_bytes_downloaded"] == big["size"] == px.blob_bytes(big["digest"])
        assert doc["bytes_downloaded"] == px.blob_bytes()  # config + layer
        served = px.blob_bytes()

        # The same upgrade again: everything is in the blob cache on COS_PERSISTENT.
        before = dev.snapshot()
        doc2 = result_json(dev.upgrade(source, INSECURE))
        assert doc2["layer_bytes_downloaded"] == 0 and doc2["bytes_downloaded"] == 0
        assert px.blob_bytes() == served  # not one blob byte more
    assert doc2["slot_sha256"] == doc["slot_sha256"]
    after = dev.snapshot()
    assert after.inodes["state:cOS/passive.img"] == before.inodes["state:cOS/active.img"]
    assert after.files["state:cOS/active.img"] == doc["slot_sha256"]


def test_interrupted_pull_resumes_with_the_missing_bytes_only(
        reg: Registry, images: Images, expected: dict[str, str], dev: Device) -> None:
    big = images.layer("big")
    cut = 400_000
    source_path = "/kairos/os:big"
    with proxy(reg.host) as px:
        # The client retries 3 times within a run, resuming each time: cut all 4 tries.
        px.faults.append(Fault(match=big["digest"], cut_after=cut, times=4))
        before = dev.snapshot()
        proc = dev.upgrade(f"oci:{px.host}{source_path}", INSECURE)
        lines = error_lines(proc)
        assert proc.returncode != 0
        assert "interrupted at 1600000 of" in lines[0] and "kept" in lines[1], lines
        assert_untouched(dev, before)
        kept = px.blob_bytes(big["digest"])
        assert kept == 4 * cut
        first_run = len(px.served)

        doc = result_json(dev.upgrade(f"oci:{px.host}{source_path}", INSECURE))
        second = px.served[first_run:]
        layer_reqs = [s for s in second if s.path.endswith(big["digest"])]
        assert [(s.range, s.status) for s in layer_reqs] == [(f"bytes={kept}-", 206)]
        assert sum(s.sent for s in layer_reqs) == big["size"] - kept
        assert doc["layer_bytes_downloaded"] == big["size"] - kept
        assert doc["bytes_downloaded"] == sum(s.sent for s in second if "/blobs/" in s.path)
    check_upgraded(dev, before, doc, version="v2.1.0", digest=images.refs["big"].digest,
                   slot_sha=expected["big"])


@pytest.fixture(scope="module")
def basic_reg(tmp_path_factory: pytest.TempPathFactory, images: Images) -> Iterator[Registry]:
    work = tmp_path_factory.mktemp("basic")
    with registry(work / "reg", auth=htpasswd_auth(work, {"alice": "s3cret"})) as r:
        push(work, f"oci:{images.layout}:v2", f"{r.host}/private/os:v2", creds="alice:s3cret")
        yield r


def test_oci_with_htpasswd_auth(basic_reg: Registry, images: Images, expected: dict[str, str],
                                dev: Device, tmp_path: Path) -> None:
    auth = write_auth_file(tmp_path / "auth.json", basic_reg.host, "alice", "s3cret")
    before = dev.snapshot()
    doc = result_json(dev.upgrade(f"oci:{basic_reg.host}/private/os:v2", INSECURE,
                                  "--auth-file", str(auth)))
    check_upgraded(dev, before, doc, version="v2.0.0", digest=images.refs["v2"].digest,
                   slot_sha=expected["v2"])


def test_oci_with_token_auth(images: Images, expected: dict[str, str], dev: Device,
                             tmp_path: Path) -> None:
    with token_server(tmp_path / "ts", {"bob": "t0ken-pass"}) as ts, \
            registry(tmp_path / "reg", auth=ts.registry_auth()) as r:
        push(tmp_path, f"oci:{images.layout}:v2", f"{r.host}/private/os:v2",
             creds="bob:t0ken-pass")
        ts.requests.clear()
        auth = write_auth_file(tmp_path / "auth.json", r.host, "bob", "t0ken-pass")
        before = dev.snapshot()
        doc = result_json(dev.upgrade(f"oci:{r.host}/private/os:v2", INSECURE,
                                      "--auth-file", str(auth)))
        assert ts.requests and all(q["user"] == "bob" for q in ts.requests)
    check_upgraded(dev, before, doc, version="v2.0.0", digest=images.refs["v2"].digest,
                   slot_sha=expected["v2"])


# ------------------------------------------------------------------------------ local sources

@pytest.mark.parametrize("kind", ["ocifile", "dir", "file"])
def test_local_sources(kind: str, images: Images, expected: dict[str, str], dev: Device,
                       tmp_path: Path) -> None:
    if kind == "ocifile":
        source, digest = f"ocifile:{images.archives['v2']}", images.refs["v2"].digest
    elif kind == "dir":
        source, digest = f"dir:{images.trees['v2']}", ""
    else:
        slot = squash(images.trees["v2"], tmp_path / "v2.squashfs")
        source, digest = f"file:{slot}", ""
    tree_before = sorted(str(p) for p in images.trees["v2"].rglob("*"))
    before = dev.snapshot()
    doc = result_json(dev.upgrade(source))
    # The same tree gives the same slot bytes whichever way it came.
    check_upgraded(dev, before, doc, version="v2.0.0", digest=digest, slot_sha=expected["v2"])
    assert sorted(str(p) for p in images.trees["v2"].rglob("*")) == tree_before


def test_dir_source_without_boot_id_gets_one_and_is_left_alone(
        images: Images, expected: dict[str, str], dev: Device) -> None:
    tree = images.trees["big"]
    assert not (tree / "boot/kairos-boot.cfg").exists()
    before = dev.snapshot()
    doc = result_json(dev.upgrade(f"dir:{tree}"))
    check_upgraded(dev, before, doc, version="v2.1.0", digest="", slot_sha=expected["big"])
    assert not (tree / "boot/kairos-boot.cfg").exists()  # the user's tree is not written


# ------------------------------------------------------------------------------ roles

def test_booted_passive_keeps_passive_and_replaces_active(
        reg: Registry, images: Images, expected: dict[str, str], dev: Device) -> None:
    before = dev.snapshot()
    proc = dev.upgrade(f"oci:{reg.host}/kairos/os:v2", INSECURE, booted="passive")
    doc = result_json(proc)
    check_upgraded(dev, before, doc, version="v2.0.0", digest=images.refs["v2"].digest,
                   slot_sha=expected["v2"], booted="passive")
    # No staging through passive.img: the new image goes straight to active.img.
    assert phase_markers(proc.stderr) == [p for p in PHASES if p not in ("pull-partial", "staged")]


def test_recovery_upgrade_replaces_recovery_only(reg: Registry, images: Images,
                                                 expected: dict[str, str],
                                                 tmp_path: Path) -> None:
    from kairos.agent import slotstate
    with device(tmp_path / "dev", recovery=True) as dev:
        assert dev.recovery is not None
        before = dev.snapshot()
        doc = result_json(dev.upgrade(f"oci:{reg.host}/kairos/os:v2", INSECURE, "--recovery"))
        after = dev.snapshot()
        assert doc["slot"] == "recovery" and doc["version"] == "v2.0.0"
        assert after.files["recovery:cOS/recovery.squashfs"] == doc["slot_sha256"] \
            == expected["v2"]
        assert sorted(p.name for p in (dev.recovery / "cOS").iterdir()) == ["recovery.squashfs"]
        for rel in ("state:cOS/active.img", "state:cOS/passive.img", "state:state.yaml"):
            assert (after.files[rel], after.inodes[rel]) == (before.files[rel], before.inodes[rel])
        assert not (dev.state / "cOS/transition.img").exists()
        assert not dev.scratch.exists()
        rec = slotstate.resolve(dev.recovery, {"recovery": "cOS/recovery.squashfs"})["recovery"]
        assert rec is not None
        assert (rec.version, rec.digest, rec.sha256) == \
            ("v2.0.0", images.refs["v2"].digest, doc["slot_sha256"])


# ------------------------------------------------------------------------------ pause

def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> str:
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + timeout
    fd = proc.stderr.fileno()
    os.set_blocking(fd, False)
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536).decode(errors="replace")
            if not chunk and proc.poll() is not None:
                break
            seen += chunk
            if needle in seen:
                return seen
        elif proc.poll() is not None:
            break
    raise AssertionError(f"no {needle!r} within {timeout}s (exit {proc.poll()}):\n{seen}")


def test_paused_at_staged_and_killed_then_rerun_converges(
        reg: Registry, images: Images, expected: dict[str, str], dev: Device) -> None:
    source = f"oci:{reg.host}/kairos/os:v2"
    before = dev.snapshot()
    proc = dev.popen(source, INSECURE, env={"KAIROS_UPGRADE_PAUSE": "staged"})
    try:
        seen = _wait_for_line(proc, "kairos-upgrade: paused at staged", 120)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert phase_markers(seen)[-1] == "staged"
    # Staged: the new image is passive.img, active.img is the old one, untouched.
    paused = dev.snapshot()
    assert paused.files["state:cOS/active.img"] == before.files["state:cOS/active.img"]
    assert paused.inodes["state:cOS/active.img"] == before.inodes["state:cOS/active.img"]
    assert paused.files["state:cOS/passive.img"] == expected["v2"]
    assert not (dev.state / "cOS/transition.img").exists()
    assert dev.records()["passive"].version == "v2.0.0"

    rerun = dev.upgrade(source, INSECURE)
    doc = result_json(rerun)
    after = dev.snapshot()
    assert after.files["state:cOS/active.img"] == doc["slot_sha256"] == expected["v2"]
    assert after.files["state:cOS/passive.img"] == before.files["state:cOS/active.img"]
    assert sorted(p.name for p in (dev.state / "cOS").iterdir()) == ["active.img", "passive.img"]
    assert not dev.scratch.exists()
    records = dev.records()
    assert (records["active"].version, records["passive"].version) == ("v2.0.0", "v1.0.0")


# ------------------------------------------------------------------------------ same bytes

def test_pulled_and_built_images_give_the_same_slot_bytes(default_image: dict[str, Any],
                                                          tmp_path: Path) -> None:
    """The default build's OCI archive, upgraded into a slot, gives the build's own
    rootfs.squashfs byte for byte."""
    archive = Path(str(default_image["oci_archive"]))
    with ext4(tmp_path / "state.ext4", tmp_path / "state", 1536, "COS_STATE") as state:
        (state / "cOS").mkdir()
        old = tmp_path / "old"
        squash(kairos_tree(old, "v0.0.1"), state / "cOS/active.img")
        persistent = tmp_path / "persistent"
        persistent.mkdir()
        dev = Device(state, persistent)
        doc = result_json(dev.upgrade(f"ocifile:{archive}", timeout=900))
        got = sha256_file(dev.active)
        assert got == doc["slot_sha256"]
        if got != default_image["rootfs_sha256"]:
            listing = tmp_path / "diff.txt"
            a = run(["unsquashfs", "-lls", "-d", "", str(dev.active)]).stdout
            b = run(["unsquashfs", "-lls", "-d", "", str(default_image["rootfs"])]).stdout
            diff = "".join(difflib.unified_diff(b.splitlines(True), a.splitlines(True),
                                                "built", "upgraded", n=0))
            listing.write_text(diff)
            raise AssertionError(f"slot bytes differ from the build's rootfs.squashfs; "
                                 f"unsquashfs -lls diff (built → upgraded):\n{diff[:4000]}")
    assert json.dumps(doc)  # the JSON result is plain data
