"""`kairos provider apply [--json] [--dry-run]`: make this node what its cloud-config's
k3s/k3s-agent/k0s block says (provider/apply.py). Run at every boot by kairos-provider.service
and by `kairos run-stage reconcile`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "provider", help="run the Kubernetes provider (k3s, k3s-agent, k0s blocks)",
        description="The Kubernetes provider: turns the k3s / k3s-agent / k0s / k0s-worker "
                    "block of the cloud-config into a running node (etcd, the control plane, "
                    "containerd, kubelet, kube-proxy, Traefik), joining a server with the "
                    "shared token. See docs/kubernetes.md.")
    actions = p.add_subparsers(dest="provider_action", metavar="ACTION")
    a = actions.add_parser(
        "apply", help="render and start what the config asks (every boot does this)",
        description="Compute the node plan from the cloud-config, make or reuse the "
                    "certificates (a server) or join the server with the token (an agent), "
                    "write the units under /run/systemd/system and start them; units whose "
                    "rendered text changed are restarted, units no longer wanted stopped. "
                    "Does nothing (and stops what ran) when no block is enabled.")
    a.add_argument("--dry-run", action="store_true",
                   help="only print the plan; change nothing")
    a.add_argument("--json", action="store_true", help="print the result as JSON")
    a.add_argument("--wait", type=_seconds, default=600.0, metavar="S",
                   help="seconds to wait for the server, the apiserver and the node to "
                        "register (default 600)")
    a.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    a.set_defaults(func=apply_cmd)
    p.set_defaults(func=_usage(p))


def _usage(parser: argparse.ArgumentParser) -> Any:
    def show(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2
    return show


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds from 0 to 86400")
    return value


def _plan_text(plan: dict[str, Any]) -> str:
    lines = [f"{plan['distro']} {plan['role']} node {plan['node_name']} ({plan['node_ip']}), "
             f"Kubernetes {plan['version'] or '?'}",
             f"  API: {plan['server_url']}  pods: {plan['cluster_cidr']}  services: "
             f"{plan['service_cidr']}  token id: {plan['token_id']}"]
    if plan["labels"]:
        lines.append("  labels: " + ", ".join(f"{k}={v}" for k, v in plan["labels"].items()))
    if plan["taints"]:
        lines.append("  taints: " + ", ".join(plan["taints"]))
    for c in plan["components"]:
        lines.append(f"  {c['unit']}: {' '.join(c['argv'])}")
    for f in plan["files"]:
        lines.append(f"  file {f['path']} ({f['mode']})")
    return "\n".join(lines) + "\n"


def _summary(result: Any) -> str:
    if not result.enabled:
        stopped = f"; stopped {', '.join(result.units_removed)}" if result.units_removed else ""
        return f"Kubernetes is not enabled in the cloud-config (k3s, k3s-agent, k0s): " \
               f"nothing to do{stopped}\n"
    parts = [f"{result.role} node {result.node_name}"]
    for what, items in (("restarted", result.units_restarted),
                        ("started", [u for u in result.units_started
                                     if u in result.units_written]),
                        ("stopped", result.units_removed),
                        ("certificates issued", result.certificates_issued),
                        ("images imported", result.images_imported),
                        ("node", result.node_changes)):
        if items:
            parts.append(f"{what}: {', '.join(items)}")
    if not (result.units_written or result.units_removed):
        parts.append("no unit changed")
    return "Kubernetes provider: " + "; ".join(parts) + "\n"


def apply_cmd(args: argparse.Namespace) -> int:
    from kairos.provider.apply import apply
    result = apply(args.root, dry_run=args.dry_run, wait=args.wait)
    if args.json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    elif args.dry_run:
        sys.stdout.write(_plan_text(result.plan) if result.plan else _summary(result))
        for warning in result.warnings:
            sys.stdout.write(f"warning: {warning}\n")
    else:
        sys.stdout.write(_summary(result))
    return 0
