"""`kairos provider apply`: make this node what the config says, at every boot and on
`kairos run-stage reconcile`.

The order: collect the config and the facts, compute the plan (plan.py), prepare the kernel
(modules, forwarding), make or reuse the certificates (servers) or discover the server with
the token (agents), write kubeconfigs and config files that changed, write the units and
reload systemd, start containerd and import the image's images, start the rest (changed
units restarted), then, on a server, put the join objects into the cluster, and finally
reconcile the node's labels and taints. Everything written is compared first: an apply that
changes nothing restarts nothing.

What the OS keeps (early/plan.py, DEFAULT_PERSISTENT_PATHS) and what this relies on:
/etc/kubernetes (certificates, kubeconfigs, the generated token), /var/lib/etcd (the
cluster's data), /var/lib/kubelet (pods' volumes, the kubelet's certificates and device
plugins), /var/lib/containerd (images, snapshots), /etc/cni and /var/lib/cni (the generated
CNI config, address leases), /var/log (pod logs in /var/log/pods), /var/lib/kairos (the
provider's records) and /etc/rancher (the admin kubeconfig copy) are persistent;
/etc/containerd and the units under /run are written anew each boot. The kubelet's volume
plugins go to /var/lib/kubelet/volumeplugins, not /usr/libexec/kubernetes (persistent and
shared by both slots). Kernel settings (the kubelet's vm/kernel sysctls, forwarding,
br_netfilter) live only as long as the boot: they are set again each time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kairos import safefs
from kairos.errors import BadInput, KairosError
from kairos.provider import images as images_mod
from kairos.provider import join, kube, objects, render, units
from kairos.provider.components import (
    AGENT_DIR,
    CNI_GENERATED,
    CONTAINERD_SOCKET,
    ETCD_DIR,
    K8S_DIR,
    KUBELET_DIR,
)
from kairos.provider.config import ProviderConfig, from_cloud_config
from kairos.provider.facts import NODE_TOKEN, Facts, gather
from kairos.provider.manifest import MANIFEST, Manifest, read_manifest
from kairos.provider.pki import ensure
from kairos.provider.plan import Decision, NodePlan, make_plan
from kairos.run import run

log = logging.getLogger("kairos.provider")

STATE_DIR = "/var/lib/kairos/k8s"
RUN_RECORD = "/run/kairos/provider.json"
LOCK = "/run/kairos/provider.lock"
SYSCTLS = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1",
           "net/bridge/bridge-nf-call-ip6tables": "1"}
MODULES = ("overlay", "br_netfilter")


@dataclass
class ApplyResult:
    enabled: bool = False
    dry_run: bool = False
    role: str = ""
    node_name: str = ""
    plan: dict[str, Any] | None = None
    files_written: list[str] = field(default_factory=list)
    certificates_issued: list[str] = field(default_factory=list)
    units_written: list[str] = field(default_factory=list)
    units_removed: list[str] = field(default_factory=list)
    units_restarted: list[str] = field(default_factory=list)
    units_started: list[str] = field(default_factory=list)
    images_imported: list[str] = field(default_factory=list)
    objects_applied: bool = False
    node_changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Io:
    """What apply does to the outside world; tests pass fakes."""

    systemctl: units.Systemctl = units.systemctl
    runner: Callable[..., Any] = run
    fetch: join.Fetch = join.fetch_cluster_info
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


# -- inputs ------------------------------------------------------------------------------


def load_config(root: Path) -> ProviderConfig:
    from kairos.config.collect import collect
    merged = collect(root, fetch=False)
    return from_cloud_config(merged.data, merged.sources)


def compute(root: Path, cfg: ProviderConfig, *, facts: Facts | None = None,
            manifest: Manifest | None = None,
            decision: Decision | None = None) -> NodePlan:
    return make_plan(cfg, facts or gather(root), manifest or read_manifest(root), decision)


# -- files -------------------------------------------------------------------------------


def write_if_changed(root: Path, path: str, data: bytes, mode: int) -> bool:
    """Write `data` atomically unless the file already holds it with that mode."""
    with contextlib.suppress(FileNotFoundError), \
            safefs.open_parent(root, path) as (dfd, name, st):
        if st is not None and (st.st_mode & 0o7777) == mode:
            current = safefs.read_at(dfd, name, shown=path)
            if current is not None and current[0] == data:
                return False
    safefs.write_atomic(root, path, data, mode=mode, create_parents=True)
    return True


def _read_json(root: Path, path: str) -> dict[str, Any]:
    try:
        raw = safefs.read_bytes(root, path)
        data = json.loads(raw) if raw else {}
    except (OSError, ValueError, safefs.UnsafePath):
        data = {}
    return data if isinstance(data, dict) else {}


def _write_json(root: Path, path: str, data: dict[str, Any], mode: int = 0o644) -> None:
    write_if_changed(root, path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode(),
                     mode)


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """One apply at a time (the boot unit and a reconcile may meet)."""
    path = root / LOCK.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- steps -------------------------------------------------------------------------------


def prepare_kernel(root: Path, io: Io, result: ApplyResult) -> None:
    """Modules and sysctls the node needs this boot (nothing here outlives it)."""
    res = io.runner(["modprobe", "-a", *MODULES], check=False)
    if getattr(res, "returncode", 0) != 0:
        result.warnings.append(f"modprobe {' '.join(MODULES)} failed: pod networking may not "
                               "work")
    for key, value in SYSCTLS.items():
        try:
            (root / "proc/sys" / key).write_text(value)
        except OSError as exc:
            result.warnings.append(f"cannot set {key.replace('/', '.')}={value}: {exc}")


def server_pki(root: Path, plan: NodePlan, result: ApplyResult) -> dict[str, tuple[bytes, bytes]]:
    report, pairs = ensure(root, plan.certs)
    result.certificates_issued += report.issued
    result.warnings += report.warnings
    ca = pairs["ca"][0]
    for spec in plan.kubeconfigs:
        crt, key = pairs[spec.cert]
        text = render.kubeconfig(server=plan.local_api, ca=ca, user=spec.user,
                                 client_cert=crt, client_key=key)
        if write_if_changed(root, spec.path, text.encode(), spec.mode):
            result.files_written.append(spec.path)
    admin = pairs["admin"]
    text = render.kubeconfig(server=plan.local_api, ca=ca, user="kubernetes-admin",
                             client_cert=admin[0], client_key=admin[1])
    if write_if_changed(root, plan.admin_copy, text.encode(), plan.admin_copy_mode):
        result.files_written.append(plan.admin_copy)
    return pairs


def agent_join(root: Path, plan: NodePlan, wait: float, io: Io, result: ApplyResult) -> None:
    """The CA from the server (checked with the token), then the bootstrap kubeconfigs.
    Skipped when this node already joined this server with this token: the kubelet has its
    certificate and needs no server to start."""
    record_path = f"{STATE_DIR}/join.json"
    record = _read_json(root, record_path)
    ca = safefs.read_bytes(root, f"{AGENT_DIR}/ca.crt")
    if ca is None or record.get("server") != plan.server_url \
            or record.get("token_id") != plan.token.id:
        ca = join.discover(plan.server_url, plan.token, wait=wait, fetch=io.fetch,
                           sleep=io.sleep, clock=io.clock)
        ca_sha = hashlib.sha256(ca).hexdigest()
        if record.get("ca") != ca_sha or record.get("server") != plan.server_url:
            # Another cluster or server: the kubelet's old credentials are worthless there.
            for stale in (f"{AGENT_DIR}/kubelet.conf",):
                (root / stale.lstrip("/")).unlink(missing_ok=True)
            pki = root / KUBELET_DIR.lstrip("/") / "pki"
            for old in pki.glob("kubelet-client-*") if pki.is_dir() else ():
                old.unlink()
        if write_if_changed(root, f"{AGENT_DIR}/ca.crt", ca, 0o644):
            result.files_written.append(f"{AGENT_DIR}/ca.crt")
        _write_json(root, record_path, {"server": plan.server_url, "token_id": plan.token.id,
                                        "ca": ca_sha})
    for spec in plan.kubeconfigs:
        text = render.kubeconfig(server=plan.server_url, ca=ca, user=spec.user,
                                 token=plan.token.value if spec.bootstrap else "",
                                 cert_file=spec.cert_file)
        if write_if_changed(root, spec.path, text.encode(), spec.mode):
            result.files_written.append(spec.path)


def write_files(root: Path, plan: NodePlan, result: ApplyResult) -> None:
    for f in plan.files:
        if write_if_changed(root, f.path, f.content.encode(), f.mode):
            result.files_written.append(f.path)


def _active(unit: str, io: Io) -> bool:
    res = io.runner(["systemctl", "is-active", "--quiet", unit], check=False)
    return getattr(res, "returncode", 1) == 0


def start_node(root: Path, plan: NodePlan, io: Io, result: ApplyResult) -> None:
    wanted = {c.unit: units.render_unit(root, c) for c in plan.components}
    containerd = plan.components[0].unit
    if not _active(containerd, io):
        # containerd writes the CNI config from the template when the kubelet reports the
        # node's pod CIDR, but only when no config loads: drop last boot's (persistent
        # /etc/cni) so a changed CIDR or template is written anew.
        (root / CNI_GENERATED.lstrip("/")).unlink(missing_ok=True)
    diff, changes = units.write_units(root, wanted, ctl=io.systemctl)
    units.start_units([containerd], diff, changes, wait=True, ctl=io.systemctl)
    if plan.images:
        result.images_imported = images_mod.ensure_images(root, plan.images, CONTAINERD_SOCKET,
                                                          runner=io.runner)
    units.start_units([c.unit for c in plan.components[1:]], diff, changes, ctl=io.systemctl)
    result.units_written, result.units_removed = changes.written, changes.removed
    result.units_restarted, result.units_started = changes.restarted, changes.started


def publish_objects(root: Path, plan: NodePlan, ca: bytes, wait: float, io: Io,
                    result: ApplyResult) -> None:
    """The join objects (objects.py), applied when they changed since the last apply."""
    admin = f"{K8S_DIR}/admin.conf"
    info = render.cluster_info_kubeconfig(server=plan.server_url, ca=ca)
    text = objects.server_objects(plan.tokens, info)
    digest = hashlib.sha256(text.encode()).hexdigest()
    record_path = f"{STATE_DIR}/objects.json"
    if _read_json(root, record_path).get("sha256") == digest:
        return
    if not kube.wait_for("the apiserver", lambda: kube.api_ready(admin, io.runner), wait,
                         sleep=io.sleep, clock=io.clock):
        raise KairosError(f"the apiserver did not get ready within {wait:.0f} s",
                          "see journalctl -u kairos-kube-apiserver -u kairos-etcd; the next "
                          "apply tries again")
    kube.apply_objects(admin, text, runner=io.runner)
    _write_json(root, record_path, {"sha256": digest}, mode=0o600)
    result.objects_applied = True


def reconcile_node(root: Path, plan: NodePlan, wait: float, io: Io,
                   result: ApplyResult) -> None:
    """Labels and taints of the node as the config says (kube.py for why)."""
    conf = f"{K8S_DIR}/admin.conf" if plan.server else f"{AGENT_DIR}/kubelet.conf"
    record_path = f"{STATE_DIR}/node.json"
    record = _read_json(root, record_path)
    labels, taints = dict(plan.labels), [str(t) for t in plan.taints]
    if record.get("node") == plan.node_name and record.get("labels") == labels \
            and record.get("taints") == taints:
        return
    state: list[kube.NodeState] = []

    def registered() -> bool:
        if not (root / conf.lstrip("/")).exists():
            return False
        node = kube.get_node(conf, plan.node_name, io.runner)
        if node is not None:
            state.append(node)
        return node is not None

    if not kube.wait_for(f"node {plan.node_name}", registered, wait, sleep=io.sleep,
                         clock=io.clock):
        result.warnings.append(f"node {plan.node_name} has not registered yet: its labels and "
                               "taints are set by the next apply")
        return
    node = state[-1]
    before = record if record.get("node") == plan.node_name else {}
    label_args = kube.label_changes(node.labels, labels, before.get("labels") or {})
    kube.set_labels(conf, plan.node_name, label_args, io.runner)
    managed = [f"{t.key}:{t.effect}" for t in plan.taints]
    taint_args = kube.taint_changes(node.taints, plan.taints,
                                    before.get("managed_taints") or [])
    if taint_args and not plan.server:
        result.warnings.append("an agent cannot change its own taints (NodeRestriction): "
                               f"run kubectl taint node {plan.node_name} {' '.join(taint_args)} "
                               "on a server")
    elif taint_args:
        kube.set_taints(conf, plan.node_name, taint_args, io.runner)
    result.node_changes = [*label_args, *taint_args]
    _write_json(root, record_path, {"node": plan.node_name, "labels": labels,
                                    "taints": taints, "managed_taints": managed})


def record_run(root: Path, plan: NodePlan | None) -> None:
    path = root / RUN_RECORD.lstrip("/")
    if plan is None:
        path.unlink(missing_ok=True)
        return
    kubeconfig = f"{K8S_DIR}/admin.conf" if plan.server else f"{AGENT_DIR}/kubelet.conf"
    _write_json(root, RUN_RECORD, {"distro": plan.distro, "role": plan.role,
                                   "node_name": plan.node_name, "node_ip": plan.node_ip,
                                   "server_url": plan.server_url, "version": plan.version,
                                   "wanted_version": plan.wanted_version,
                                   "kubeconfig": kubeconfig, "api_port": plan.api_port})


# -- the whole apply ---------------------------------------------------------------------


def apply(root: Path = Path("/"), *, dry_run: bool = False, wait: float = 600.0,
          config: ProviderConfig | None = None, facts: Facts | None = None,
          manifest: Manifest | None = None, decision: Decision | None = None,
          io: Io | None = None) -> ApplyResult:
    io = io or Io()
    cfg = config if config is not None else load_config(root)
    result = ApplyResult(enabled=cfg.enabled or decision is not None, dry_run=dry_run)
    if not result.enabled:
        if not dry_run and facts_systemd(root, facts):
            with locked(root):
                result.units_removed = units.remove_all(root, ctl=io.systemctl)
                record_run(root, None)
        return result
    manifest = manifest if manifest is not None else read_manifest(root)
    plan = compute(root, cfg, facts=facts, manifest=manifest, decision=decision)
    result.role, result.node_name = plan.role, plan.node_name
    result.plan, result.warnings = plan.to_json(), list(plan.warnings)
    if dry_run:
        return result
    if manifest is None:
        raise BadInput(f"this image carries no Kubernetes ({MANIFEST} is missing)",
                       "install a standard image (kairos build --variant standard)")
    if not facts_systemd(root, facts):
        raise BadInput("the Kubernetes provider needs a running systemd",
                       "this image's init is not systemd, or this is not a running system")
    with locked(root):
        run_apply(root, plan, wait, io, result)
    return result


def facts_systemd(root: Path, facts: Facts | None) -> bool:
    return facts.systemd if facts is not None else (root / "run/systemd/system").is_dir()


def run_apply(root: Path, plan: NodePlan, wait: float, io: Io, result: ApplyResult) -> None:
    deadline = io.clock() + wait

    def left() -> float:
        return max(deadline - io.clock(), 1.0)

    prepare_kernel(root, io, result)
    ca = b""
    if plan.server:
        if plan.token_generated and write_if_changed(root, NODE_TOKEN,
                                                     (plan.shared_token + "\n").encode(), 0o600):
            result.files_written.append(NODE_TOKEN)
        ca = server_pki(root, plan, result)["ca"][0]
        etcd_dir = root / ETCD_DIR.lstrip("/")
        etcd_dir.mkdir(parents=True, exist_ok=True)
        etcd_dir.chmod(0o700)  # etcd refuses a data directory others can read
    else:
        agent_join(root, plan, left(), io, result)
    write_files(root, plan, result)
    start_node(root, plan, io, result)
    record_run(root, plan)
    if plan.server:
        publish_objects(root, plan, ca, left(), io, result)
    reconcile_node(root, plan, left(), io, result)
    for warning in result.warnings:
        log.warning("%s", warning)
