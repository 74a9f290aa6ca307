"""The `kubernetes` section of `kairos state`: what the last apply of this boot set up
(/run/kairos/provider.json), the image's Kubernetes version, and the node's Ready condition
when the apiserver answers (kubectl, a few seconds at most)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from kairos.provider.kube import get_node
from kairos.provider.manifest import read_manifest

RUN_RECORD = "run/kairos/provider.json"


def _record(root: Path) -> dict[str, Any]:
    try:
        data = json.loads((root / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def kubernetes_state(root: Path = Path("/"), *, query: bool = True) -> dict[str, Any]:
    """enabled, role, node name, versions, ready (True/False/Unknown, "" when the apiserver
    did not answer or was not asked). `query`: ask the apiserver (only on the device)."""
    try:
        manifest = read_manifest(root)
    except Exception:  # a damaged manifest must not break `kairos state`
        manifest = None
    record = _record(root)
    out: dict[str, Any] = {
        "enabled": bool(record), "distro": record.get("distro", ""),
        "role": record.get("role", ""), "node_name": record.get("node_name", ""),
        "node_ip": record.get("node_ip", ""), "server": record.get("server_url", ""),
        "version": manifest.kubernetes_version if manifest else "",
        "wanted_version": record.get("wanted_version", ""),
        "kubelet_version": "", "ready": "",
    }
    kubeconfig = str(record.get("kubeconfig") or "")
    if query and record and kubeconfig and (root / kubeconfig.lstrip("/")).exists() \
            and shutil.which("kubectl"):
        node = get_node(kubeconfig, out["node_name"], timeout="3s")
        if node is not None:
            out["ready"], out["kubelet_version"] = node.ready or "Unknown", node.kubelet_version
    return out
