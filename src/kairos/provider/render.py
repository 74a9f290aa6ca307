"""Text the provider writes: systemd units, containerd's config, the CNI template,
kubeconfigs. Pure functions of their inputs; apply.py decides what changed."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

import yaml

UNIT_MARKER = "# Written by the kairos Kubernetes provider at every boot: edits are lost."


def systemd_quote(word: str, *, dollars: bool = True) -> str:
    """One word as systemd reads it back: quoted when it has spaces or quotes, `%` doubled
    (a specifier otherwise) and, in ExecStart (`dollars`), `$` too (a variable otherwise;
    Environment= does not expand `$`)."""
    text = word.replace("%", "%%")
    if dollars:
        text = text.replace("$", "$$")
    if text and not any(c in text for c in ' \t"\'\\;'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(*, description: str, argv: Sequence[str], env: Sequence[tuple[str, str]] = (),
              after: Sequence[str] = (), notify: bool = False,
              service: Sequence[tuple[str, str]] = (), inputs_hash: str = "",
              conflicts: Sequence[str] = ()) -> str:
    """A service unit that runs `argv` and restarts it when it stops. `inputs_hash`, the
    hash of the files the process reads, makes the unit text change when they do, so that
    "the unit changed" is the one test for a restart."""
    lines = ["[Unit]", UNIT_MARKER]
    if inputs_hash:
        lines.append(f"# inputs: {inputs_hash}")
    lines += [f"Description=Kairos Kubernetes: {description}",
              "Wants=network-online.target", "After=network-online.target",
              "StartLimitIntervalSec=0"]
    if after:
        lines += [f"Wants={' '.join(after)}", f"After={' '.join(after)}"]
    if conflicts:  # the package's own unit would fight over the same socket and data
        lines.append(f"Conflicts={' '.join(conflicts)}")
    lines += ["", "[Service]", f"Type={'notify' if notify else 'simple'}"]
    lines += [f"Environment={systemd_quote(f'{k}={v}', dollars=False)}" for k, v in env]
    lines.append("ExecStart=" + " ".join(systemd_quote(w) for w in argv))
    lines += ["Restart=always", "RestartSec=5"]
    lines += [f"{k}={v}" for k, v in service]
    return "\n".join(lines) + "\n"


def _toml(value: str | bool | int) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)  # a TOML basic string is a JSON string


def containerd_config(*, sandbox_image: str, cni_bin_dir: str, cni_conf_dir: str,
                      cni_template: str, systemd_cgroup: bool, snapshotter: str,
                      debug: bool = False) -> str:
    """containerd 1.6's config (version 2) for the CRI plugin kubelet talks to.

    `restrict_oom_score_adj`: without CAP_SYS_RESOURCE runc cannot lower a sandbox's OOM
    score and fails every sandbox ("can't get final child's PID from pipe"); restricted, it
    never tries. `conf_template`: containerd writes the CNI config from it once the kubelet
    tells it the node's pod CIDR (CRI UpdateRuntimeConfig), so each node gets its own range
    from the controller-manager without anything waiting for it."""
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    lines = [
        UNIT_MARKER, "version = 2", f"root = {_toml('/var/lib/containerd')}",
        f"state = {_toml('/run/containerd')}", "",
        "[grpc]", f"  address = {_toml('/run/containerd/containerd.sock')}", "",
        "[debug]", f"  level = {_toml('debug' if debug else 'info')}", "",
        cri,
        f"  sandbox_image = {_toml(sandbox_image)}",
        f"  restrict_oom_score_adj = {_toml(True)}",
        f'{cri[:-1]}.containerd]',
        f"  snapshotter = {_toml(snapshotter)}",
        f"  default_runtime_name = {_toml('runc')}", "",
        f'{cri[:-1]}.containerd.runtimes.runc]',
        f"  runtime_type = {_toml('io.containerd.runc.v2')}", "",
        f'{cri[:-1]}.containerd.runtimes.runc.options]',
        f"  SystemdCgroup = {_toml(systemd_cgroup)}", "",
        f'{cri[:-1]}.cni]',
        f"  bin_dir = {_toml(cni_bin_dir)}",
        f"  conf_dir = {_toml(cni_conf_dir)}",
        f"  conf_template = {_toml(cni_template)}",
    ]
    return "\n".join(lines) + "\n"


def cni_template() -> str:
    """The CNI network for one node: a bridge with host-local addresses from the node's pod
    CIDR (containerd fills `{{.PodCIDR}}`), masquerading out, hairpin for a pod reaching
    itself through a Service, and portmap for hostPort. The loopback interface of each pod
    is set up by containerd's CRI itself with the `loopback` plugin of the same bin_dir."""
    doc = {
        "cniVersion": "0.4.0",
        "name": "kairos",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "{{.PodCIDR}}"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def kubeconfig(*, server: str, ca: bytes, user: str, client_cert: bytes | None = None,
               client_key: bytes | None = None, token: str = "", cert_file: str = "",
               key_file: str = "", cluster: str = "kubernetes") -> str:
    """A kubeconfig for one user of one cluster: certificates embedded (or files named,
    for a kubelet's rotating certificate), or a bearer token."""
    creds: dict[str, str] = {}
    if client_cert is not None and client_key is not None:
        creds = {"client-certificate-data": base64.b64encode(client_cert).decode(),
                 "client-key-data": base64.b64encode(client_key).decode()}
    elif cert_file:
        creds = {"client-certificate": cert_file, "client-key": key_file or cert_file}
    elif token:
        creds = {"token": token}
    context = f"{user}@{cluster}"
    doc = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca).decode()}}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def cluster_info_kubeconfig(*, server: str, ca: bytes) -> str:
    """What kube-public/cluster-info carries: the CA and the server, no user (kubeadm's
    layout: one cluster with an empty name)."""
    doc = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": "", "cluster": {
               "certificate-authority-data": base64.b64encode(ca).decode(),
               "server": server}}],
           "contexts": [], "current-context": "", "preferences": {}, "users": []}
    return yaml.safe_dump(doc, sort_keys=False)
