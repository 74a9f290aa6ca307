"""Images written by kairos.oci are read by skopeo and podman, and theirs are read by us.

podman runs with throw-away storage under tmp_path (vfs driver, own root/runroot/tmpdir, no
registries configured), which is removed afterwards, so the host's image store is untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from kairos.disk.mounts import tempdir
from kairos.oci.image import ImageConfig, ImageRef, write_image
from kairos.oci.layer import LayerInfo, iter_tree, write_layer
from kairos.oci.unpack import unpack_image
from kairos.run import require, run

pytestmark = pytest.mark.integration

EPOCH = 1_700_000_000
REF = "kairos/interop:v1"
LABELS = {"io.kairos.version": "v0.1.0", "io.kairos.flavor": "debian"}
# VFS_CAP_REVISION_2 with cap_net_raw permitted and effective: what `setcap cap_net_raw+ep` sets.
CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")


# containers/image keeps a system-wide blob-info cache here for root, with no switch to move it.
SYSTEM_CACHE = Path("/var/lib/containers")


@pytest.fixture(scope="module", autouse=True)
def _tools() -> Iterator[None]:
    require("skopeo", "podman")
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root")
    had_cache = SYSTEM_CACHE.exists()
    yield
    if not had_cache:  # it is only a cache: remove it if these tests created it
        shutil.rmtree(SYSTEM_CACHE, ignore_errors=True)


@pytest.fixture
def offline_env(tmp_path: Path) -> dict[str, str]:
    """No registries, a permissive policy, temp files under tmp_path."""
    conf = tmp_path / "containers"
    conf.mkdir()
    (conf / "registries.conf").write_text("")
    (conf / "policy.json").write_text(json.dumps(
        {"default": [{"type": "insecureAcceptAnything"}]}))
    (conf / "tmp").mkdir()
    return {"CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
            "TMPDIR": str(conf / "tmp")}


@pytest.fixture
def podman(tmp_path: Path, offline_env: dict[str, str]) -> Iterator[list[str]]:
    store = tmp_path / "podman"
    # podman refuses a runroot path longer than 50 characters: that one lives in /tmp.
    with tempdir(prefix="kpm-") as runroot:
        argv = ["podman", "--root", str(store / "root"), "--runroot", str(runroot),
                "--tmpdir", str(store / "tmp"), "--storage-driver", "vfs",
                "--events-backend", "none", "--cgroup-manager", "cgroupfs"]
        try:
            yield argv
        finally:
            shutil.rmtree(store, ignore_errors=True)


def skopeo(env: dict[str, str], *args: str) -> str:
    policy = str(Path(env["CONTAINERS_REGISTRIES_CONF"]).parent / "policy.json")
    return run(["skopeo", "--policy", policy, *args], env=env, timeout=300).stdout


def make_tree(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "dev").mkdir()
    (root / "etc" / "kairos-release").write_text('KAIROS_ID="kairos"\nKAIROS_VERSION="v0.1.0"\n')
    (root / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    os.chmod(root / "etc" / "shadow", 0o640)
    os.chown(root / "etc" / "shadow", 0, 42)
    (root / "usr" / "bin" / "ping").write_bytes(b"\x7fELF not really ping")
    os.chmod(root / "usr" / "bin" / "ping", 0o755)
    os.setxattr(root / "usr" / "bin" / "ping", "security.capability", CAP_NET_RAW)
    (root / "usr" / "bin" / "su").write_bytes(b"\x7fELF not really su")
    os.chmod(root / "usr" / "bin" / "su", 0o4755)
    os.link(root / "usr" / "bin" / "su", root / "usr" / "bin" / "su-hardlink")
    os.symlink("usr/bin", root / "bin")
    os.mknod(root / "dev" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(root / "dev" / "initctl")
    (root / "home").mkdir()
    os.chown(root / "home", 1000, 1000)
    (root / "var" / "lib").mkdir(parents=True)
    (root / "var" / "lib" / "blob").write_bytes(os.urandom(2 * 2**20))
    return root


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything an OS image must keep: type, mode, owner, content, target, device, caps."""
    out: dict[str, tuple[object, ...]] = {}
    for name, path in iter_tree(root):
        st = os.lstat(path)
        common = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        if stat.S_ISLNK(st.st_mode):
            out[name] = (*common, os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            caps = os.getxattr(path, "security.capability") if name.endswith("ping") else None
            out[name] = (*common, Path(path).read_bytes(), min(int(st.st_mtime), EPOCH), caps)
        elif stat.S_ISCHR(st.st_mode):
            out[name] = (*common, st.st_rdev)
        else:
            out[name] = common
    return out


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, LayerInfo, ImageRef]:
    tree = make_tree(tmp_path / "tree")
    layer = write_layer(tree, tmp_path / "layer.tar.gz", mtime=EPOCH)
    ref = write_image([layer], tmp_path / "layout", ref=REF, archive=tmp_path / "image.tar",
                      config=ImageConfig(created_epoch=EPOCH, labels=LABELS,
                                         env=["PATH=/usr/sbin:/usr/bin"], cmd=["/sbin/init"]))
    return tree, layer, ref


def test_skopeo_inspects_layout_and_archive(tmp_path: Path, offline_env: dict[str, str],
                                            image: tuple[Path, LayerInfo, ImageRef]) -> None:
    _, layer, ref = image
    for transport in (f"oci:{tmp_path / 'layout'}:{REF}", f"oci-archive:{tmp_path / 'image.tar'}"):
        seen = json.loads(skopeo(offline_env, "inspect", transport))
        assert seen["Digest"] == ref.digest
        assert seen["Labels"] == LABELS
        assert seen["Architecture"] == "amd64" and seen["Os"] == "linux"
        assert seen["Layers"] == [layer.digest]
        assert seen["Created"] == "2023-11-14T22:13:20Z"
        config = json.loads(skopeo(offline_env, "inspect", "--config", transport))
        assert config["rootfs"]["diff_ids"] == [layer.diff_id]


def test_podman_loads_the_archive(podman: list[str], offline_env: dict[str, str],
                                  tmp_path: Path,
                                  image: tuple[Path, LayerInfo, ImageRef]) -> None:
    tree, _, ref = image
    out = run([*podman, "load", "-i", str(tmp_path / "image.tar")], env=offline_env,
              timeout=300).stdout
    assert f"localhost/{REF}" in out
    seen = json.loads(run([*podman, "image", "inspect", f"localhost/{REF}"],
                          env=offline_env).stdout)[0]
    assert seen["Labels"] == LABELS
    assert seen["Digest"] == ref.digest
    assert "sha256:" + seen["Id"] == ref.config_digest
    # And back: podman's own docker archive of our image unpacks to the same tree.
    saved = tmp_path / "saved.tar"
    run([*podman, "save", "--format", "docker-archive", "-o", str(saved), f"localhost/{REF}"],
        env=offline_env, timeout=300)
    info = unpack_image(saved, tmp_path / "from-podman", ref=REF)
    assert info.kind == "docker-archive" and info.labels == LABELS
    assert snapshot(tmp_path / "from-podman") == snapshot(tree)


def test_skopeo_copy_round_trips(tmp_path: Path, offline_env: dict[str, str],
                                 image: tuple[Path, LayerInfo, ImageRef]) -> None:
    tree, _, ref = image
    other = tmp_path / "copied"
    skopeo(offline_env, "copy", f"oci-archive:{tmp_path / 'image.tar'}",
           f"oci:{other}:copy")
    info = unpack_image(other, tmp_path / "unpacked", ref="copy")
    assert info.manifest_digest == ref.digest  # same blobs, same manifest: nothing rewritten
    assert info.labels == LABELS and info.cmd == ["/sbin/init"]
    assert snapshot(tmp_path / "unpacked") == snapshot(tree)
    # zstd layers too, recompressed by skopeo itself.
    skopeo(offline_env, "copy", "--dest-compress-format", "zstd",
           f"oci:{tmp_path / 'layout'}:{REF}", f"oci:{tmp_path / 'zstd'}:z")
    manifest = json.loads(skopeo(offline_env, "inspect", "--raw",
                                 f"oci:{tmp_path / 'zstd'}:z"))
    assert manifest["layers"][0]["mediaType"].endswith("+zstd")
    unpack_image(tmp_path / "zstd", tmp_path / "unpacked-zstd", ref="z")
    assert snapshot(tmp_path / "unpacked-zstd") == snapshot(tree)


def test_zstd_layers_we_write_are_accepted(tmp_path: Path, offline_env: dict[str, str]) -> None:
    tree = make_tree(tmp_path / "tree")
    layer = write_layer(tree, tmp_path / "layer.tar.zst", mtime=EPOCH, compress="zstd")
    ref = write_image([layer], tmp_path / "layout", ref="z:1", archive=tmp_path / "z.tar",
                      config=ImageConfig(created_epoch=EPOCH, labels=LABELS))
    skopeo(offline_env, "copy", f"oci-archive:{tmp_path / 'z.tar'}",
           f"oci:{tmp_path / 'copied'}:z")
    info = unpack_image(tmp_path / "copied", tmp_path / "unpacked", ref="z")
    assert info.manifest_digest == ref.digest
    assert snapshot(tmp_path / "unpacked") == snapshot(tree)
