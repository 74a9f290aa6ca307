"""The "standard" variant: the core image plus what runs Kubernetes.

Debian packages (containerd, runc, CNI plugins, etcd, kubectl, WireGuard, iptables,
conntrack, socat) are installed by the build's packages step; this module adds the parts
built once by `kubeparts` (the control plane, kubelet, kube-proxy, Traefik), the pause image
as an OCI archive, `/usr/lib/kairos/kubernetes.json` saying what is there, and disables the
units those packages enable: the provider starts them from cloud-config, never the package.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kairos.disk.mounts import tempdir
from kairos.errors import BadInput
from kairos.factory import treefs
from kairos.factory.kubeparts import SERVER_BINARIES, TRAEFIK_QUIET, Parts, upstream_version
from kairos.factory.release import Release, StandardRelease
from kairos.oci.image import ImageConfig, write_image
from kairos.oci.layer import write_layer

log = logging.getLogger("kairos.factory")

VARIANTS = ("core", "standard")
# What the cluster needs from Debian. kubelet 1.20 with containerd's CRI: containerd, runc,
# the CNI plugins (bridge, host-local, portmap, loopback) and iptables; kube-proxy in
# iptables mode: iptables(-save/-restore) and conntrack (it flushes stale UDP entries);
# etcd for the control plane; kubectl; wireguard-tools for the p2p mesh. socat serves
# `kubectl port-forward` on runtimes that shell out for it (containerd 1.6 does not; it is
# small and the provider may use it).
STANDARD_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "etcd-server",
                     "kubernetes-client", "wireguard-tools", "iptables", "conntrack", "socat")
SOFTWARE_VERSION_PREFIX = "k8s"  # upstream Kubernetes (Kairos writes k3s or k0s here)
IMAGES_DIR = "usr/share/kairos/images"
MANIFEST_PATH = "usr/lib/kairos/kubernetes.json"
PAUSE_ARCHIVE = "pause.oci.tar"
CNI_DIRS = ("usr/lib/cni", "opt/cni/bin")  # Debian's, then upstream's
# containerd takes an image's name from this annotation when importing an OCI archive;
# without it `ctr images import` names an image by a date prefix or not at all.
CONTAINERD_NAME = "io.containerd.image.name"
UNIT_DIRS = ("lib/systemd/system", "usr/lib/systemd/system")
WANTS_GLOBS = ("etc/systemd/system/*.wants", "etc/systemd/system/*.requires",
               "usr/lib/systemd/system/*.wants", "usr/lib/systemd/system/*.requires")


def check_variant(variant: str, init: str) -> None:
    if variant not in VARIANTS:
        raise BadInput(f"unknown variant '{variant}'",
                       f"use one of: {', '.join(VARIANTS)}")
    if variant == "standard" and init == "openrc":
        raise BadInput("the standard variant is built for systemd images only",
                       "drop --init openrc, or build --variant core")


def variant_packages(variant: str) -> tuple[str, ...]:
    return STANDARD_PACKAGES if variant == "standard" else ()


def standard_release(core: Release, parts: Parts) -> StandardRelease:
    """The release of a standard image built on `parts`."""
    return StandardRelease(**asdict(core), software_version=parts.manifest.kubernetes_version,
                           software_version_prefix=SOFTWARE_VERSION_PREFIX)


def pause_image_name(parts: Parts) -> str:
    """The name containerd must use as `sandbox_image`: local, so nothing is ever pulled."""
    return f"localhost/kairos/pause:{parts.manifest.pause_version}"


@dataclass
class KubernetesManifest:
    """`/usr/lib/kairos/kubernetes.json`: what the standard image carries, for the provider.
    Versions are upstream ones without a leading v (1.20.2, 3.4.23, 1.6.20, 3.0.4)."""

    kubernetes_version: str
    etcd_version: str
    containerd_version: str
    traefik_version: str
    pause_image: str  # containerd's sandbox_image
    images: list[str]  # OCI archives to import into containerd's k8s.io namespace
    binaries: dict[str, str]  # name → path in the image
    cni_bin_dir: str  # where the CNI plugins are (containerd's default is /opt/cni/bin)
    traefik_args: list[str]  # what every run of traefik must carry (it phones home else)
    disabled_units: list[str]  # units the packages enabled; the provider starts them
    packages: dict[str, str] = field(default_factory=dict)  # Debian package → version
    parts: str = ""  # the kubeparts cache entry the binaries came from

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def installed_versions(status: str, names: tuple[str, ...]) -> dict[str, str]:
    """Versions of the installed packages among `names`, from dpkg's status file."""
    found: dict[str, str] = {}
    for stanza in status.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1].isspace() or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        name = fields.get("Package", "")
        if name in names and fields.get("Status", "").endswith(" installed"):
            found[name] = fields.get("Version", "")
    return found


def unit_files(dpkg_list: str) -> list[str]:
    """The systemd unit names among the paths of a package's dpkg file list."""
    units = []
    for path in dpkg_list.splitlines():
        parent, _, name = path.strip().rpartition("/")
        if parent.lstrip("/") in UNIT_DIRS and name.endswith((".service", ".socket",
                                                              ".timer", ".path")):
            units.append(name)
    return sorted(set(units))


def disable_package_units(root: Path, packages: tuple[str, ...]) -> list[str]:
    """Undo what `systemctl enable` did for every unit the packages ship: the links in
    .wants/.requires dirs and the aliases (etcd-server's etcd2.service); returns the units
    that were enabled. The units stay installed for the provider to start."""
    units: set[str] = set()
    for pkg in packages:
        text = treefs.read(root, f"var/lib/dpkg/info/{pkg}.list")
        if text is None:
            text = treefs.read(root, f"var/lib/dpkg/info/{pkg}:amd64.list")
        units.update(unit_files((text or b"").decode(errors="replace")))
    disabled = set()
    for unit in units:
        for wants in WANTS_GLOBS:
            for link in treefs.glob(root, f"{wants}/{unit}"):
                if link.is_symlink():
                    link.unlink()
                    disabled.add(unit)
    for link in treefs.glob(root, "etc/systemd/system/*"):
        target = os.path.basename(os.readlink(link)) if link.is_symlink() else ""
        if target in units and link.name not in units:  # an alias of a package unit
            link.unlink()
            disabled.add(target)
    return sorted(disabled)


def copy_file_in(src: Path, root: Path, rel: str, mode: int = 0o755) -> None:
    """Copy our file `src` to `rel` inside the tree, never through a link planted there."""
    parent = treefs.mkdirs(root, os.path.dirname(rel.strip("/")) or "/")
    treefs.remove(root, rel)
    dest = parent / os.path.basename(rel)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
        for chunk in iter(lambda: inp.read(1 << 20), b""):
            out.write(chunk)
    os.chmod(dest, mode)


def write_pause_image(pause: Path, archive: Path, *, name: str, mtime: int) -> str:
    """The pause binary as a one-layer OCI image archive named `name`; returns its digest."""
    with tempdir(prefix="kairos-pause-") as tmp:
        rootfs = tmp / "rootfs"
        rootfs.mkdir()
        copy_file_in(pause, rootfs, "pause")
        layer = write_layer(rootfs, tmp / "layer.tar.gz", mtime=mtime)
        ref = write_image([layer], tmp / "oci", ref=name,
                          config=ImageConfig(created_epoch=mtime, entrypoint=["/pause"],
                                             created_by="kairos build: pause.c, static"),
                          archive=archive, annotations={CONTAINERD_NAME: name})
    return ref.digest


def cni_dir(root: Path) -> str:
    for rel in CNI_DIRS:
        if treefs.is_file(root, f"{rel}/bridge"):
            return f"/{rel}"
    raise BadInput("the standard image has no CNI bridge plugin",
                   "the containernetworking-plugins package did not install; build again "
                   "with --rebuild")


def install_standard(root: Path, parts: Parts, *, mtime: int) -> KubernetesManifest:
    """Put the Kubernetes parts into the image tree (packages already installed)."""
    parts.verify()
    binaries: dict[str, str] = {}
    for name in (*SERVER_BINARIES, "traefik"):
        copy_file_in(parts.binary(name), root, f"usr/bin/{name}")
        binaries[name] = f"/usr/bin/{name}"
    binaries["kubectl"] = "/usr/bin/kubectl"
    name = pause_image_name(parts)
    images_dir = treefs.mkdirs(root, IMAGES_DIR)
    archive = images_dir / PAUSE_ARCHIVE
    treefs.remove(root, f"{IMAGES_DIR}/{PAUSE_ARCHIVE}")
    write_pause_image(parts.binary("pause"), archive, name=name, mtime=mtime)
    status = (treefs.read(root, "var/lib/dpkg/status") or b"").decode(errors="replace")
    versions = installed_versions(status, STANDARD_PACKAGES)
    missing = [p for p in STANDARD_PACKAGES if p not in versions]
    if missing:
        raise BadInput(f"the standard image lacks the packages {', '.join(missing)}",
                       "build again with --rebuild")
    disabled = disable_package_units(root, STANDARD_PACKAGES)
    log.info("  disabled units the packages enabled (the provider starts them): %s",
             ", ".join(disabled) or "none")
    manifest = KubernetesManifest(
        kubernetes_version=parts.manifest.kubernetes_version.removeprefix("v"),
        etcd_version=upstream_version(versions["etcd-server"]),
        containerd_version=upstream_version(versions["containerd"]),
        traefik_version=parts.manifest.traefik_version,
        pause_image=name, images=[f"/{IMAGES_DIR}/{PAUSE_ARCHIVE}"], binaries=binaries,
        cni_bin_dir=cni_dir(root), traefik_args=list(TRAEFIK_QUIET),
        disabled_units=disabled, packages=versions, parts=parts.manifest.name)
    treefs.write(root, MANIFEST_PATH, manifest.to_json())
    return manifest
