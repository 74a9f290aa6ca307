"""The standard variant on the image side (factory/standard.py and its wiring in build.py):
release keys, cache keys that keep core and standard apart, the packages, the units disabled,
the pause image archive, kubernetes.json, and `kairos build --variant`."""

from __future__ import annotations

import json
import tarfile
from dataclasses import asdict
from pathlib import Path

import pytest

from kairos.cli import build_parser
from kairos.envfile import parse_env
from kairos.errors import BadInput
from kairos.factory import standard
from kairos.factory.bases import BaseSpec
from kairos.factory.build import BuildOptions, Context, _base_key, kairosify_key
from kairos.factory.cache import StepCache
from kairos.factory.kubeparts import BinaryInfo, Manifest, Parts, PartsSpec
from kairos.factory.release import Release, StandardRelease
from kairos.factory.standard import (
    KubernetesManifest,
    check_variant,
    disable_package_units,
    installed_versions,
    unit_files,
    write_pause_image,
)


def _parts(tmp_path: Path, sha: str = "a" * 64) -> Parts:
    m = Manifest(name=PartsSpec().name, kubernetes_version="v1.20.2", traefik_version="3.0.4",
                 pause_version="3.4", recipe=1, debian_source="kubernetes x", go_version="go",
                 built="", build_seconds=0,
                 binaries={"kubelet": BinaryInfo(sha, 1, True, "Kubernetes v1.20.2")})
    return Parts(tmp_path / "parts", m)


def _ctx(tmp_path: Path, variant: str, parts: Parts | None = None) -> Context:
    opts = BuildOptions(base=BaseSpec("debian", "bookworm"), version="0.1.0",
                        output=tmp_path / "out", cache_dir=tmp_path / "cache", init="systemd",
                        variant=variant)
    return Context(opts, StepCache(opts.cache_dir), parts=parts)


def _release(variant: str, software: str = "") -> Release:
    core = Release(version="v0.1.0", flavor="debian", flavor_release="12", variant=variant)
    if not software:
        return core
    return StandardRelease(**asdict(core), software_version=software,
                           software_version_prefix="k8s")


def test_release_keys_of_a_standard_image() -> None:
    env = parse_env(_release("standard", "v1.20.2").render())
    assert env["KAIROS_VARIANT"] == "standard"
    assert env["KAIROS_SOFTWARE_VERSION"] == "v1.20.2"
    assert env["KAIROS_SOFTWARE_VERSION_PREFIX"] == "k8s"
    assert env["KAIROS_NAME"] == "kairos-standard-debian-12"
    core = parse_env(_release("core").render())
    assert core["KAIROS_SOFTWARE_VERSION"] == core["KAIROS_SOFTWARE_VERSION_PREFIX"] == ""


def test_a_standard_release_is_made_from_the_parts(tmp_path: Path) -> None:
    core = _release("standard")
    rel = standard.standard_release(core, _parts(tmp_path))
    assert rel == _release("standard", "v1.20.2")
    assert "software_version" not in asdict(core), "a core release hashes as it always did"
    assert asdict(rel)["software_version"] == "v1.20.2"


def test_core_and_standard_images_never_share_a_key(tmp_path: Path) -> None:
    core = _ctx(tmp_path, "core")
    std = _ctx(tmp_path, "standard", _parts(tmp_path))
    other = _ctx(tmp_path, "standard", _parts(tmp_path, sha="b" * 64))
    # one debootstrapped base for both: the variant's packages go on top of it
    assert _base_key(core) == _base_key(std)
    assert set(standard.STANDARD_PACKAGES) <= set(std.image_packages())
    assert core.image_packages() == core.packages()
    k_core = kairosify_key(core, _release("core"), "prev")
    k_std = kairosify_key(std, _release("standard", "v1.20.2"), "prev")
    k_other = kairosify_key(other, _release("standard", "v1.20.2"), "prev")
    assert len({k_core, k_std, k_other}) == 3, "the parts' manifest is part of the key"
    # a standard build prunes only standard images
    assert core.lineage == "debian:bookworm systemd"
    assert std.lineage == "debian:bookworm systemd variant:standard"


def test_variant_checks() -> None:
    check_variant("core", "openrc")
    check_variant("standard", "systemd")
    with pytest.raises(BadInput, match="unknown variant"):
        check_variant("full", "systemd")
    with pytest.raises(BadInput, match="systemd"):
        check_variant("standard", "openrc")


def test_build_cli_variant_flag() -> None:
    args = build_parser(["build"]).parse_args(["build"])
    assert args.variant == "core" and args.kubernetes_cache is None
    args = build_parser(["build"]).parse_args(
        ["build", "--variant", "standard", "--kubernetes-cache", "/k"])
    assert (args.variant, args.kubernetes_cache) == ("standard", "/k")
    with pytest.raises(SystemExit) as exc:
        build_parser(["build"]).parse_args(["build", "--variant", "full"])
    assert exc.value.code == 2


STATUS = """Package: containerd
Status: install ok installed
Version: 1.6.20~ds1-1+deb12u3
Description: daemon
 with a continuation line: Package: fake

Package: etcd-server
Status: deinstall ok config-files
Version: 3.4.23-4+b4

Package: socat
Status: install ok installed
Version: 1.7.4.4-2
"""


def test_installed_versions() -> None:
    assert installed_versions(STATUS, ("containerd", "etcd-server", "socat", "runc")) == {
        "containerd": "1.6.20~ds1-1+deb12u3", "socat": "1.7.4.4-2"}


def test_unit_files_of_a_package() -> None:
    listing = ("/.\n/lib/systemd/system/containerd.service\n/usr/bin/containerd\n"
               "/usr/lib/systemd/system/etcd.service\n/lib/systemd/system/wg-quick@.service\n"
               "/usr/share/doc/x.service\n")
    assert unit_files(listing) == ["containerd.service", "etcd.service", "wg-quick@.service"]


def test_disable_package_units(tmp_path: Path) -> None:
    root = tmp_path / "root"
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "containerd.list").write_text("/lib/systemd/system/containerd.service\n")
    (info / "etcd-server.list").write_text("/lib/systemd/system/etcd.service\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    for unit in ("containerd.service", "etcd.service", "ssh.service"):
        (wants / unit).symlink_to(f"/lib/systemd/system/{unit}")
    aliases = root / "etc/systemd/system"
    (aliases / "etcd2.service").symlink_to("/lib/systemd/system/etcd.service")
    (aliases / "sshd.service").symlink_to("/lib/systemd/system/ssh.service")
    (aliases / "masked.service").symlink_to("/dev/null")
    assert disable_package_units(root, ("containerd", "etcd-server", "socat")) == [
        "containerd.service", "etcd.service"]
    assert sorted(p.name for p in wants.iterdir()) == ["ssh.service"]
    assert sorted(p.name for p in aliases.glob("*.service")) == ["masked.service",
                                                                 "sshd.service"]


def test_pause_image_archive(tmp_path: Path) -> None:
    pause = tmp_path / "pause"
    pause.write_bytes(b"\x7fELF pause")
    archive = tmp_path / "pause.oci.tar"
    name = "localhost/kairos/pause:3.4"
    digest = write_pause_image(pause, archive, name=name, mtime=1_700_000_000)
    with tarfile.open(archive) as tf:
        names = tf.getnames()
        index = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
        assert "oci-layout" in names
        entry, = index["manifests"]
        assert entry["digest"] == digest
        # containerd names an imported image by this annotation, podman by the ref name
        assert entry["annotations"][standard.CONTAINERD_NAME] == name
        assert entry["annotations"]["org.opencontainers.image.ref.name"] == name
        manifest = json.loads(tf.extractfile(  # type: ignore[union-attr]
            "blobs/sha256/" + digest.split(":")[1]).read())
        config = json.loads(tf.extractfile(  # type: ignore[union-attr]
            "blobs/sha256/" + manifest["config"]["digest"].split(":")[1]).read())
    assert config["config"]["Entrypoint"] == ["/pause"]
    again = tmp_path / "again.oci.tar"
    assert write_pause_image(pause, again, name=name, mtime=1_700_000_000) == digest
    assert again.read_bytes() == archive.read_bytes(), "reproducible"


def test_kubernetes_manifest_fields() -> None:
    m = KubernetesManifest(kubernetes_version="1.20.2", etcd_version="3.4.23",
                           containerd_version="1.6.20", traefik_version="3.0.4",
                           pause_image="localhost/kairos/pause:3.4",
                           images=["/usr/share/kairos/images/pause.oci.tar"],
                           binaries={"kubelet": "/usr/bin/kubelet"}, cni_bin_dir="/usr/lib/cni",
                           traefik_args=["--global.checknewversion=false"],
                           disabled_units=["containerd.service"])
    data = json.loads(m.to_json())
    for key in ("kubernetes_version", "etcd_version", "containerd_version", "traefik_version",
                "pause_image", "images"):
        assert key in data, key
    assert standard.pause_image_name(_parts(Path("/x"))) == "localhost/kairos/pause:3.4"
