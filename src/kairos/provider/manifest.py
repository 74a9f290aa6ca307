"""What Kubernetes the image carries: /usr/lib/kairos/kubernetes.json, written by the
standard image's build.

    {"kubernetes_version": "1.20.2", "etcd_version": "3.4.23", "containerd_version": "1.6.20",
     "traefik_version": "3.0.4", "pause_image": "registry.k8s.io/pause:3.2",
     "images": ["/usr/share/kairos/images/pause.tar", ...]}

`pause_image` is the name containerd must use as its sandbox image (it is one of `images`,
OCI archives imported into containerd's k8s.io namespace). Optional, when the build knows
better than the defaults: `binaries` (program name → path; else /usr/bin/NAME) and
`cni_bin_dir`. Other keys are the build's own. A core image has no such file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kairos.errors import BadInput

MANIFEST = "/usr/lib/kairos/kubernetes.json"
VERSION_KEYS = ("kubernetes_version", "etcd_version", "containerd_version", "traefik_version")


@dataclass(frozen=True)
class Manifest:
    kubernetes_version: str = ""
    etcd_version: str = ""
    containerd_version: str = ""
    traefik_version: str = ""
    pause_image: str = ""
    images: tuple[str, ...] = ()
    binaries: tuple[tuple[str, str], ...] = ()
    cni_bin_dir: str = ""

    def binary(self, name: str) -> str:
        return dict(self.binaries).get(name) or f"/usr/bin/{name}"

    def to_json(self) -> dict[str, Any]:
        return {"kubernetes_version": self.kubernetes_version,
                "etcd_version": self.etcd_version,
                "containerd_version": self.containerd_version,
                "traefik_version": self.traefik_version,
                "pause_image": self.pause_image, "images": list(self.images),
                "binaries": dict(self.binaries), "cni_bin_dir": self.cni_bin_dir}


def parse_manifest(text: str, name: str = MANIFEST) -> Manifest:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BadInput(f"{name}: not JSON: {exc}", "the image is damaged; rebuild it") from None
    if not isinstance(data, dict):
        raise BadInput(f"{name}: expected a JSON object", "the image is damaged; rebuild it")
    values = {k: data.get(k, "") for k in (*VERSION_KEYS, "pause_image")}
    for key, value in values.items():
        if not isinstance(value, str):
            raise BadInput(f"{name}: {key} is not a string", "the image is damaged; rebuild it")
    images = data.get("images", [])
    if not isinstance(images, list) or not all(isinstance(i, str) and i.startswith("/")
                                               for i in images):
        raise BadInput(f"{name}: images is not a list of absolute paths",
                       "the image is damaged; rebuild it")
    if not values["pause_image"]:
        raise BadInput(f"{name}: pause_image is missing", "the image is damaged; rebuild it")
    binaries = data.get("binaries") or {}
    cni = data.get("cni_bin_dir") or ""
    if not isinstance(binaries, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.startswith("/")
            for k, v in binaries.items()) or not isinstance(cni, str):
        raise BadInput(f"{name}: binaries or cni_bin_dir is malformed",
                       "the image is damaged; rebuild it")
    return Manifest(images=tuple(images), binaries=tuple(sorted(binaries.items())),
                    cni_bin_dir=cni, **values)


def read_manifest(root: Path = Path("/")) -> Manifest | None:
    """The image's manifest, None on an image without Kubernetes (a core image)."""
    path = root / MANIFEST.lstrip("/")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return parse_manifest(text, str(path))
