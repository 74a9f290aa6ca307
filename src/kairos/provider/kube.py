"""Talking to the cluster with `kubectl` (shipped in the standard image): readiness, the
server's objects, and the node's labels and taints.

The kubelet sets `--node-labels` and `--register-with-taints` only when it registers a node
that does not exist yet; a reboot with changed labels would change nothing. So the provider
reconciles them itself, on every apply: what the config asks is set, and what the provider
set before and the config no longer asks is removed (never a label someone else set). A
server does it with the admin credentials; an agent with its own node credentials, which
NodeRestriction lets change labels outside kubernetes.io but never taints: an agent's
taints change only at registration (a warning says so).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kairos.errors import KairosError
from kairos.provider.args import EFFECTS, Taint
from kairos.run import Result, run

log = logging.getLogger("kairos.provider")

Runner = Callable[..., Result]


@dataclass(frozen=True)
class NodeState:
    name: str
    labels: dict[str, str]
    taints: tuple[Taint, ...]
    ready: str  # True, False, Unknown, or "" when the node has no Ready condition yet
    kubelet_version: str = ""


def kubectl(kubeconfig: str, *args: str, input: str | None = None, timeout: str = "10s",
            runner: Runner = run, check: bool = True) -> Result:
    return runner(["kubectl", f"--kubeconfig={kubeconfig}", f"--request-timeout={timeout}",
                   *args], input=input, check=check)


def api_ready(kubeconfig: str, runner: Runner = run) -> bool:
    return kubectl(kubeconfig, "get", "--raw=/readyz", runner=runner, check=False,
                   timeout="5s").returncode == 0


def wait_for(what: str, test: Callable[[], bool], wait: float, *,
             sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic, every: float = 3.0) -> bool:
    deadline = clock() + wait
    while True:
        if test():
            return True
        if clock() + every > deadline:
            return False
        log.debug("waiting for %s", what)
        sleep(every)


def parse_node(text: str) -> NodeState:
    doc: Any = json.loads(text)
    meta, spec, status = doc.get("metadata", {}), doc.get("spec", {}), doc.get("status", {})
    taints = tuple(Taint(str(t.get("key", "")), str(t.get("value", "") or ""),
                         str(t.get("effect", ""))) for t in spec.get("taints") or [])
    ready = next((str(c.get("status", "")) for c in status.get("conditions") or []
                  if c.get("type") == "Ready"), "")
    return NodeState(name=str(meta.get("name", "")), labels=dict(meta.get("labels") or {}),
                     taints=taints, ready=ready,
                     kubelet_version=str((status.get("nodeInfo") or {}).get("kubeletVersion",
                                                                           "")))


def get_node(kubeconfig: str, name: str, runner: Runner = run,
             timeout: str = "10s") -> NodeState | None:
    res = kubectl(kubeconfig, "get", "node", name, "-o", "json", runner=runner, check=False,
                  timeout=timeout)
    if res.returncode != 0:
        return None
    try:
        return parse_node(res.stdout)
    except (ValueError, AttributeError):
        return None


def label_changes(current: Mapping[str, str], wanted: Mapping[str, str],
                  managed_before: Iterable[str]) -> list[str]:
    """`kubectl label` arguments: set what differs, drop what we set before and no more."""
    out = [f"{k}={v}" for k, v in sorted(wanted.items()) if current.get(k) != v]
    out += [f"{k}-" for k in sorted(set(managed_before)) if k not in wanted and k in current]
    return out


def _taint_id(t: Taint) -> tuple[str, str]:
    return t.key, t.effect


def taint_changes(current: Sequence[Taint], wanted: Sequence[Taint],
                  managed_before: Iterable[str]) -> list[str]:
    """`kubectl taint` arguments: add or change what differs, remove what we set before
    (given as `KEY:EFFECT`) and no more."""
    have = {_taint_id(t): t for t in current}
    want = {_taint_id(t): t for t in wanted}
    out = [str(t) for k, t in sorted(want.items()) if have.get(k) != t]
    for ident in sorted(set(managed_before)):
        key, _, effect = ident.rpartition(":")
        if effect in EFFECTS and (key, effect) not in want and (key, effect) in have:
            out.append(f"{key}:{effect}-")
    return out


def set_labels(kubeconfig: str, node: str, changes: Sequence[str], runner: Runner = run) -> None:
    if changes:
        kubectl(kubeconfig, "label", "node", node, "--overwrite", *changes, runner=runner)


def set_taints(kubeconfig: str, node: str, changes: Sequence[str], runner: Runner = run) -> None:
    if changes:
        kubectl(kubeconfig, "taint", "node", node, "--overwrite", *changes, runner=runner)


def apply_objects(kubeconfig: str, text: str, runner: Runner = run) -> None:
    """`kubectl apply` from stdin: token secrets never touch a file or an argv."""
    try:
        kubectl(kubeconfig, "apply", "-f", "-", input=text, runner=runner, timeout="60s")
    except KairosError as exc:
        raise KairosError(f"the cluster's join objects could not be applied: {exc.message}",
                          "see journalctl -u kairos-kube-apiserver") from None
