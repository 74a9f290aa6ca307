"""`kairos kubeconfig [--local]`: print a server's admin kubeconfig (Kairos's
`kairos get-kubeconfig`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from kairos.errors import BadInput

ADMIN = "etc/kubernetes/admin.conf"
RUN_RECORD = "run/kairos/provider.json"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "kubeconfig", help="print the admin kubeconfig of this Kubernetes server",
        description="Print the admin kubeconfig of this node (a k3s/k0s server) with the "
                    "node's IP as the server address, for kubectl on another machine; "
                    "--local keeps 127.0.0.1. It holds the cluster-admin key: keep it safe.")
    p.add_argument("--local", action="store_true",
                   help="use https://127.0.0.1 as the server address")
    p.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    p.set_defaults(func=kubeconfig_cmd)


def server_address(root: Path, local: bool) -> str | None:
    """The address to print, None to keep the file's (no record of this boot's apply)."""
    try:
        record = json.loads((root / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not record.get("node_ip"):
        return None
    host = "127.0.0.1" if local else record["node_ip"]
    return f"https://{host}:{record.get('api_port') or 6443}"


def kubeconfig_cmd(args: argparse.Namespace) -> int:
    path = args.root / ADMIN
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput("this node has no admin kubeconfig: it is not a Kubernetes server, or "
                       "the provider has not run yet",
                       "enable k3s in the cloud-config and run: kairos provider apply") from None
    except PermissionError:
        raise BadInput(f"cannot read /{ADMIN}", "run as root (sudo kairos kubeconfig)") from None
    address = server_address(args.root, args.local)
    if address and isinstance(doc, dict):
        for cluster in doc.get("clusters") or []:
            cluster.get("cluster", {})["server"] = address
    sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
    return 0
