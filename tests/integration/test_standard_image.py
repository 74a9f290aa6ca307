"""`kairos build --variant standard` end to end: the Kubernetes parts from their cache, the
Debian packages, kubernetes.json, the release keys, the disabled units and the pause image
archive (read by real skopeo).

Cost: the first run on a machine builds the Kubernetes parts (scripts/build-kubernetes,
about 11-15 minutes of Go on 2 cores, cached in /var/cache/kairos-kubernetes for every later
run); the image itself is then a packages step, a kairosify step and a slot image on top of
the cached core base, a few minutes, and cached in the step cache like every image.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from kairos.envfile import parse_env
from kairos.factory.kubeparts import SERVER_BINARIES, PartsSpec, cache_root, lookup
from kairos.factory.standard import STANDARD_PACKAGES, installed_versions
from kairos.run import run
from tests.helpers import ROOT, kairos

pytestmark = pytest.mark.integration

# What the cluster runs, by path in the image (packages and built parts alike).
PROGRAMS = ("/usr/bin/kube-apiserver", "/usr/bin/kube-controller-manager",
            "/usr/bin/kube-scheduler", "/usr/bin/kubelet", "/usr/bin/kube-proxy",
            "/usr/bin/traefik", "/usr/bin/kubectl", "/usr/bin/containerd", "/usr/sbin/runc",
            "/usr/bin/etcd", "/usr/bin/wg", "/usr/sbin/iptables", "/usr/sbin/conntrack",
            "/usr/bin/socat", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local",
            "/usr/lib/cni/portmap", "/usr/lib/cni/loopback")


@pytest.fixture(scope="module")
def standard_image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The standard image as a user builds it, less the OCI output (105 s of gzip on a
    loaded machine for 1.4 GiB; this project's OCI writer is proven by the core image's
    tests). A later build of the same image with OCI reuses every other step."""
    if os.geteuid() != 0:
        pytest.skip("needs root (run the suite with scripts/test as root)")
    out = tmp_path_factory.mktemp("standard") / "image"
    start = time.monotonic()
    proc = kairos("build", "--variant", "standard", "--no-oci", "--output", str(out),
                  "--json", timeout=5400)
    result: dict[str, object] = json.loads(proc.stdout)
    result["_seconds"] = time.monotonic() - start
    result["_log"] = proc.stderr
    return result


@pytest.fixture(scope="module")
def tree(standard_image: dict[str, object],
         tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files of the slot image the checks read, extracted once."""
    dest = tmp_path_factory.mktemp("standard-tree") / "x"
    subprocess.run(["unsquashfs", "-no-progress", "-d", str(dest),
                    str(standard_image["rootfs"]), "/usr/lib/kairos/kubernetes.json",
                    "/usr/share/kairos/images", "/var/lib/dpkg/status", "/usr/bin/kubelet",
                    "/usr/bin/traefik", "/etc/systemd/system", "/usr/lib/systemd/system",
                    "/etc/kairos-release"], check=True, capture_output=True)
    return dest


def test_build_json_and_release_keys(standard_image: dict[str, object]) -> None:
    assert standard_image["variant"] == "standard"
    k8s = standard_image["kubernetes"]
    assert isinstance(k8s, dict) and k8s["kubernetes_version"] == "1.20.2"
    release = parse_env((Path(str(standard_image["output"])) / "kairos-release").read_text())
    assert release["KAIROS_VARIANT"] == "standard"
    assert release["KAIROS_SOFTWARE_VERSION"] == "v1.20.2"
    assert release["KAIROS_SOFTWARE_VERSION_PREFIX"] == "k8s"
    assert release["KAIROS_NAME"] == "kairos-standard-debian-12"


def test_programs_are_in_the_slot(standard_image: dict[str, object]) -> None:
    listing = set(subprocess.run(["unsquashfs", "-l", "-d", "", str(standard_image["rootfs"])],
                                 capture_output=True, text=True, check=True).stdout.split())
    missing = [p for p in PROGRAMS if p not in listing]
    assert missing == []


def test_built_binaries_are_the_cached_parts_and_run(tree: Path) -> None:
    parts = lookup(cache_root(), PartsSpec())
    assert parts is not None
    for name in ("kubelet", "traefik"):
        digest = hashlib.sha256((tree / "usr/bin" / name).read_bytes()).hexdigest()
        assert digest == parts.manifest.binaries[name].sha256, name
    assert "Kubernetes v1.20.2" in run([str(tree / "usr/bin/kubelet"), "--version"]).stdout
    for name in SERVER_BINARIES:
        assert parts.manifest.binaries[name].size > 10 * 2**20, name


def test_packages_are_installed(tree: Path) -> None:
    versions = installed_versions((tree / "var/lib/dpkg/status").read_text(), STANDARD_PACKAGES)
    assert sorted(versions) == sorted(STANDARD_PACKAGES)


def test_kubernetes_manifest(tree: Path) -> None:
    m = json.loads((tree / "usr/lib/kairos/kubernetes.json").read_text())
    assert m["kubernetes_version"] == "1.20.2"
    assert m["etcd_version"].startswith("3.4.")
    assert m["containerd_version"].startswith("1.6.")
    assert m["traefik_version"] == "3.0.4"
    assert m["pause_image"] == "localhost/kairos/pause:3.4"
    assert m["images"] == ["/usr/share/kairos/images/pause.oci.tar"]
    assert m["cni_bin_dir"] == "/usr/lib/cni"
    for path in m["images"]:
        assert (tree / path.lstrip("/")).is_file(), path


def test_package_units_do_not_start_by_themselves(tree: Path) -> None:
    m = json.loads((tree / "usr/lib/kairos/kubernetes.json").read_text())
    assert set(m["disabled_units"]) >= {"containerd.service", "etcd.service"}
    links = [p.name for d in ("etc/systemd/system", "usr/lib/systemd/system")
             for p in (tree / d).glob("*.wants/*")]
    assert not set(links) & set(m["disabled_units"]), "a cluster unit is still enabled"
    aliases = [os.readlink(p) for p in (tree / "etc/systemd/system").glob("*.service")
               if p.is_symlink()]
    assert not [a for a in aliases if os.path.basename(a) in m["disabled_units"]]
    for unit in m["disabled_units"]:  # still installed, for the provider to start
        assert (tree / "usr/lib/systemd/system" / unit).is_file(), unit
    assert "ssh.service" in links or "sshd.service" in links  # the check sees enabled units


def test_pause_archive_is_an_oci_image_skopeo_reads(tree: Path, tmp_path: Path) -> None:
    archive = tree / "usr/share/kairos/images/pause.oci.tar"
    conf = tmp_path / "containers"
    conf.mkdir()
    (conf / "policy.json").write_text(json.dumps(
        {"default": [{"type": "insecureAcceptAnything"}]}))
    (conf / "registries.conf").write_text("")
    env = {"CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"), "TMPDIR": str(tmp_path)}
    policy = ["--policy", str(conf / "policy.json")]
    config = json.loads(run(["skopeo", *policy, "inspect", "--config",
                             f"oci-archive:{archive}"], env=env).stdout)
    assert config["config"]["Entrypoint"] == ["/pause"]
    # a full copy reads and verifies every blob
    run(["skopeo", *policy, "copy", f"oci-archive:{archive}", f"oci:{tmp_path / 'copy'}:p"],
        env=env)
    with tarfile.open(archive) as tf:
        entry, = json.loads(tf.extractfile("index.json").read())["manifests"]  # type: ignore[union-attr]
        assert entry["annotations"]["io.containerd.image.name"] == "localhost/kairos/pause:3.4"
    # the binary inside runs on its own (static)
    layout = tmp_path / "copy"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" /
                           index["manifests"][0]["digest"].split(":")[1]).read_text())
    layer = layout / "blobs/sha256" / manifest["layers"][0]["digest"].split(":")[1]
    pause = tmp_path / "pause"
    with tarfile.open(layer) as tf:
        pause.write_bytes(tf.extractfile("pause").read())  # type: ignore[union-attr]
    pause.chmod(0o755)
    assert "v3.4" in run([str(pause), "-v"]).stdout


def test_core_image_is_not_the_standard_one(default_image: dict[str, object],
                                            standard_image: dict[str, object]) -> None:
    """Both cached side by side: neither build took the other's steps."""
    assert default_image["rootfs_sha256"] != standard_image["rootfs_sha256"]
    release = parse_env((Path(str(default_image["output"])) / "kairos-release").read_text())
    assert release["KAIROS_VARIANT"] == "core"
    assert release["KAIROS_SOFTWARE_VERSION"] == ""
    listing = subprocess.run(["unsquashfs", "-l", "-d", "", str(default_image["rootfs"])],
                             capture_output=True, text=True, check=True).stdout.split()
    assert "/usr/bin/kubelet" not in listing


def test_second_run_of_the_script_reuses_the_cache(standard_image: dict[str, object]) -> None:
    start = time.monotonic()
    proc = subprocess.run([str(ROOT / "scripts/build-kubernetes")], capture_output=True,
                          text=True, timeout=600)
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert "building them" not in proc.stderr
    assert "kubelet" in proc.stdout
    assert took < 60, f"a cached run took {took:.0f} s"
