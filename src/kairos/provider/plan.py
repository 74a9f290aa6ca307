"""The node plan: everything a node runs and writes, from config and facts, with no I/O.

`make_plan(config, facts, manifest, decision)` is a pure function: the same inputs give the
same plan, which is what lets a reboot with a changed config change exactly what changed.
`decision` is the role decided elsewhere (the p2p auto-cluster, later): its role, server and
token override the config's, and its k3s args come before the user's unless `replace_args`.

Defaults a Kairos user will see (k3s's own): pod network 10.42.0.0/16 (a /24 per node,
allocated by the controller-manager), services 10.43.0.0/16 (the `kubernetes` Service at
10.43.0.1), cluster domain cluster.local, the apiserver on 6443, Traefik on ports 80 and 443
of every server. No DNS add-on runs (no CoreDNS image is shipped): `--cluster-dns` only sets
what the kubelet writes into pods.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from kairos.errors import BadInput
from kairos.provider import render
from kairos.provider.args import Options, Taint, node_name_ok, parse_k0s_args, parse_k3s_args
from kairos.provider.certs import ADMIN_USER, TRAEFIK_USER, server_certs, service_ip
from kairos.provider.components import (
    AGENT_DIR,
    CNI_TEMPLATE,
    CONTAINERD_CONFIG,
    K8S_DIR,
    NODE_CIDR_MASK,
    Component,
    NodeContext,
    apiserver,
    containerd,
    controller_manager,
    etcd,
    kube_proxy,
    kubelet,
    scheduler,
    traefik,
)
from kairos.provider.config import DistroBlock, ProviderConfig
from kairos.provider.facts import Facts
from kairos.provider.manifest import Manifest
from kairos.provider.pki import CertSpec, KeyPairSpec
from kairos.provider.token import BootstrapToken, derive

CLUSTER_CIDR = "10.42.0.0/16"
SERVICE_CIDR = "10.43.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
API_PORT = 6443

CNI_CONF_DIR = "/etc/cni/net.d"
KUBELET_CERT = "/var/lib/kubelet/pki/kubelet-client-current.pem"
ADMIN_COPY = "/etc/rancher/k3s/k3s.yaml"  # where Kairos users look (kairos get-kubeconfig)
# Kubelet-settable label namespaces (the kubelet refuses other kubernetes.io labels).
KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")
KUBELET_LABELS = {"kubernetes.io/hostname", "kubernetes.io/instance-type", "kubernetes.io/os",
                  "kubernetes.io/arch", "beta.kubernetes.io/instance-type",
                  "beta.kubernetes.io/os", "beta.kubernetes.io/arch",
                  "failure-domain.beta.kubernetes.io/zone",
                  "failure-domain.beta.kubernetes.io/region", "topology.kubernetes.io/zone",
                  "topology.kubernetes.io/region"}
SERVER_LABELS = {"node-role.kubernetes.io/master": "true",
                 "node-role.kubernetes.io/control-plane": "true"}  # as k3s labels servers
KNOWN_ENV = {"K3S_TOKEN", "K3S_URL", "K3S_NODE_NAME", "K3S_KUBECONFIG_MODE", "K3S_AGENT_TOKEN"}


@dataclass(frozen=True)
class Decision:
    """A role decided outside the config (p2p): overrides the config's role and join."""

    role: str  # server | agent
    server: str = ""
    token: str = field(default="", repr=False)
    args: tuple[str, ...] = ()  # k3s args the deciding side adds (replace_args drops them)
    env: tuple[tuple[str, str], ...] = ()

@dataclass(frozen=True)
class PlannedFile:
    path: str
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class KubeconfigSpec:
    """A kubeconfig made at apply time from the PKI (servers) or the join (agents)."""

    path: str
    user: str
    server: str
    cert: str = ""  # a certificate of the PKI (embedded)
    cert_file: str = ""  # a certificate file named (the kubelet's rotating one)
    bootstrap: bool = False  # the bootstrap token as the credential
    mode: int = 0o600


@dataclass(frozen=True)
class NodePlan:
    distro: str  # k3s | k0s (the block the config used)
    role: str  # server | agent
    node_name: str
    node_ip: str
    hostname: str
    version: str  # the image's Kubernetes version ("" without a manifest)
    wanted_version: str  # kubernetes.version of the config
    api_port: int
    server_url: str  # an agent: the server it joins; a server: its own advertised URL
    local_api: str  # what this node's own components and kubeconfigs talk to
    cluster_cidr: str
    service_cidr: str
    service_ip: str
    cluster_domain: str
    cluster_dns: str
    labels: tuple[tuple[str, str], ...]  # what the node must carry (reconciled)
    taints: tuple[Taint, ...]
    tls_sans: tuple[str, ...]
    token: BootstrapToken = field(repr=False)  # the one this node joins or is joined with
    tokens: tuple[BootstrapToken, ...] = field(default=(), repr=False)  # a server's, all
    shared_token: str = field(default="", repr=False)  # what the user wrote, or generated
    token_generated: bool = False  # a server made its own (stored in facts.NODE_TOKEN)
    components: tuple[Component, ...] = ()
    files: tuple[PlannedFile, ...] = ()
    certs: tuple[CertSpec | KeyPairSpec, ...] = ()
    kubeconfigs: tuple[KubeconfigSpec, ...] = ()
    images: tuple[str, ...] = ()
    sandbox_image: str = ""
    admin_copy: str = ADMIN_COPY
    admin_copy_mode: int = 0o600
    env: tuple[tuple[str, str], ...] = ()  # passed to every component
    warnings: tuple[str, ...] = ()

    @property
    def server(self) -> bool:
        return self.role == "server"

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)

    def to_json(self) -> dict[str, Any]:
        """The plan for people and scripts; secrets left out."""
        return {
            "distro": self.distro, "role": self.role, "node_name": self.node_name,
            "node_ip": self.node_ip, "version": self.version,
            "wanted_version": self.wanted_version, "server_url": self.server_url,
            "local_api": self.local_api, "cluster_cidr": self.cluster_cidr,
            "service_cidr": self.service_cidr, "cluster_domain": self.cluster_domain,
            "cluster_dns": self.cluster_dns, "labels": dict(self.labels),
            "taints": [str(t) for t in self.taints], "tls_sans": list(self.tls_sans),
            "token_id": self.token.id, "token_generated": self.token_generated,
            "components": [{"name": c.name, "unit": c.unit, "argv": list(c.argv),
                            "after": list(c.after), "inputs": list(c.inputs)}
                           for c in self.components],
            "files": [{"path": f.path, "mode": oct(f.mode)} for f in self.files],
            "certificates": [s.name for s in self.certs],
            "kubeconfigs": [k.path for k in self.kubeconfigs],
            "images": list(self.images), "sandbox_image": self.sandbox_image,
            "warnings": list(self.warnings),
        }


# -- inputs ------------------------------------------------------------------------------


def parse_server_url(text: str, where: str) -> str:
    """`https://HOST:PORT` from `HOST`, `HOST:PORT` or a URL (the port defaults to 6443)."""
    value = text.strip().rstrip("/")
    if "://" not in value:
        value = f"https://{value}"
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or parts.path or parts.query \
            or parts.username:
        raise BadInput(f"{where}: '{text}' is not a server address such as "
                       "https://192.168.1.10:6443", "give the server's address and port")
    try:
        port = parts.port or API_PORT
    except ValueError:
        raise BadInput(f"{where}: '{text}' has a bad port", "give a port from 1 to 65535") \
            from None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{port}"


def _one(values: Sequence[tuple[str, str]], what: str) -> str:
    """The value all the non-empty places agree on ("" when none is set)."""
    given = [(where, v) for where, v in values if v]
    if len({v for _, v in given}) > 1:
        raise BadInput(f"the {what} is set differently in {given[0][0]} and "
                       f"{next(w for w, v in given if v != given[0][1])}",
                       "set it in one place")
    return given[0][1] if given else ""


def _env_options(env: Mapping[str, str], where: str) -> dict[str, str]:
    unknown = sorted(k for k in env if k.startswith("K3S_") and k not in KNOWN_ENV)
    if unknown:
        raise BadInput(f"{where}.{unknown[0]}: unknown k3s variable",
                       f"this provider reads {', '.join(sorted(KNOWN_ENV))}; other variables "
                       "are passed to the components")
    return {k: v for k, v in env.items() if k in KNOWN_ENV}


def _merged_args(block: DistroBlock | None, decision: Decision | None) -> tuple[str, ...]:
    own = block.args if block else ()
    generated = decision.args if decision else ()
    return own if block is not None and block.replace_args else (*generated, *own)


def _merged_env(block: DistroBlock | None, decision: Decision | None) -> dict[str, str]:
    own = dict(block.env) if block else {}
    if block is not None and block.replace_env:
        return own
    return {**dict(decision.env if decision else ()), **own}


def _node_ip(opts: Options, facts: Facts) -> str:
    if opts.node_ip:
        return opts.node_ip
    if opts.flannel_iface:
        ips = facts.ips_of(opts.flannel_iface)
        if not ips:
            raise BadInput(f"--flannel-iface {opts.flannel_iface}: the interface has no IPv4 "
                           "address", "check the interface name with: ip -4 addr")
        return ips[0]
    if not facts.addresses:
        raise BadInput("this node has no IPv4 address to run Kubernetes on",
                       "bring the network up, or give --node-ip in the k3s args")
    return facts.addresses[0][1]


def _node_name(opts: Options, env: Mapping[str, str], facts: Facts) -> str:
    name = (opts.node_name or env.get("K3S_NODE_NAME", "") or facts.hostname).strip().lower()
    if opts.with_node_id:
        if not facts.machine_id:
            raise BadInput("--with-node-id: this machine has no machine id",
                           "give --node-name instead")
        name = f"{name}-{facts.machine_id[:8].lower()}"
    if not node_name_ok(name):
        raise BadInput(f"'{name}' is not a valid Kubernetes node name",
                       "set a hostname of lower-case letters, digits and '-', or give "
                       "--node-name")
    return name


def version_matches(wanted: str, version: str) -> bool:
    """Whether the image's version is the one the config names (1.20 matches 1.20.2)."""
    if not wanted or not version:
        return True
    want = wanted.strip().lstrip("v").split(".")
    return version.strip().lstrip("v").split(".")[:len(want)] == want


def kubelet_may_set(key: str) -> bool:
    """Whether a kubelet may put this label on its own node (NodeRestriction's rule)."""
    prefix = key.rpartition("/")[0]
    if not (prefix == "kubernetes.io" or prefix.endswith(".kubernetes.io")
            or prefix == "k8s.io" or prefix.endswith(".k8s.io")):
        return True
    return key in KUBELET_LABELS or any(
        prefix == ns or prefix.endswith(f".{ns}") for ns in KUBELET_LABEL_NAMESPACES)


def _check_networks(cluster: str, service: str, node_ip: str) -> list[str]:
    pods, services = ipaddress.ip_network(cluster), ipaddress.ip_network(service)
    if pods.overlaps(services):
        raise BadInput(f"the cluster CIDR {cluster} and the service CIDR {service} overlap",
                       "give --cluster-cidr and --service-cidr that do not overlap")
    if pods.prefixlen > NODE_CIDR_MASK:
        raise BadInput(f"the cluster CIDR {cluster} is smaller than one node's /24",
                       "give a /16 to /23")
    ip = ipaddress.ip_address(node_ip)
    warnings = []
    for net, what in ((pods, "cluster"), (services, "service")):
        if ip in net:
            warnings.append(f"the node IP {node_ip} is inside the {what} CIDR {net}: "
                            "traffic to it will be misrouted")
    return warnings


# -- the plan ----------------------------------------------------------------------------


def _parse_options(block: DistroBlock | None, role: str, args: Sequence[str]) -> Options:
    key = block.key if block else ("k3s" if role == "server" else "k3s-agent")
    distro = block.distro if block else "k3s"
    parse = parse_k0s_args if distro == "k0s" else parse_k3s_args
    return parse(args, role, f"{key}.args")


def _tokens(cfg: ProviderConfig, opts: Options, env: Mapping[str, str], facts: Facts,
            decision: Decision | None, role: str) -> tuple[str, bool]:
    """The shared secret of the cluster, and whether the server has to make it up."""
    if decision is not None and decision.token:
        return decision.token, False
    shared = _one([("kubernetes.token", cfg.kubernetes.token), ("--token", opts.token),
                   ("env K3S_TOKEN", env.get("K3S_TOKEN", ""))], "cluster token")
    if shared:
        return shared, False
    if role == "agent":
        raise BadInput("an agent needs the cluster's token to join",
                       "set kubernetes.token (or K3S_TOKEN) to the token of the server")
    if facts.stored_token:
        return facts.stored_token, False
    return facts.new_token, True


def _server_url(cfg: ProviderConfig, opts: Options, env: Mapping[str, str],
                decision: Decision | None) -> str:
    if decision is not None and decision.server:
        return parse_server_url(decision.server, "the decided server")
    given = [("kubernetes.server", cfg.kubernetes.server), ("--server", opts.server),
             ("env K3S_URL", env.get("K3S_URL", ""))]
    urls = [(w, parse_server_url(v, w)) for w, v in given if v]
    url = _one(urls, "server address")
    if not url:
        raise BadInput("an agent needs the address of a server to join",
                       "set kubernetes.server (or K3S_URL) to https://SERVER:6443")
    return url


def make_plan(cfg: ProviderConfig, facts: Facts, manifest: Manifest | None,
              decision: Decision | None = None) -> NodePlan:
    block = cfg.block
    if block is None and decision is None:
        raise ValueError("no Kubernetes block is enabled")
    role = decision.role if decision is not None else block.role  # type: ignore[union-attr]
    if role not in ("server", "agent"):
        raise BadInput(f"unknown role '{role}'", "server or agent")
    where = block.key if block else "env"
    env = _merged_env(block, decision)
    known = _env_options(env, f"{where}.env")
    opts = _parse_options(block, role, _merged_args(block, decision))
    if block is not None and block.embedded_registry:
        raise BadInput("k3s.embedded_registry: not supported by this provider: the standard "
                       "image has no registry mirror", "set embedded_registry: false")
    warnings = list(opts.notes)
    node_name = _node_name(opts, known, facts)
    if node_name == "localhost":
        warnings.append("the node is named localhost: nodes of one cluster need different "
                        "names (set hostname:, or give --with-node-id)")
    node_ip = _node_ip(opts, facts)
    cluster_cidr = opts.cluster_cidr or CLUSTER_CIDR
    service_cidr = opts.service_cidr or SERVICE_CIDR
    warnings += _check_networks(cluster_cidr, service_cidr, node_ip)
    shared, generated = _tokens(cfg, opts, known, facts, decision, role)
    token = derive(shared)
    api_port = opts.https_port or API_PORT
    advertise = opts.advertise_address or node_ip
    if role == "server":
        server_url = f"https://{advertise}:{api_port}"
        local_host = opts.bind_address if opts.bind_address not in ("", "0.0.0.0") \
            else "127.0.0.1"
        local_api = f"https://{local_host}:{api_port}"
    else:
        server_url = local_api = _server_url(cfg, opts, known, decision)
    labels = dict(opts.labels)
    if role == "server":
        labels = {**SERVER_LABELS, **labels}
    forbidden = sorted(k for k in labels if not kubelet_may_set(k))
    if role == "agent" and forbidden:
        raise BadInput(f"--node-label {forbidden[0]}: an agent may not set labels in the "
                       "kubernetes.io and k8s.io namespaces on its own node",
                       "set it from a server with kubectl label, or use another prefix")
    register = tuple((k, v) for k, v in labels.items() if kubelet_may_set(k))
    version = manifest.kubernetes_version if manifest else ""
    if not version_matches(cfg.kubernetes.version, version):
        warnings.append(f"kubernetes.version is {cfg.kubernetes.version} but this image "
                        f"carries Kubernetes {version}")
    if manifest is None:
        warnings.append("this image carries no Kubernetes (no /usr/lib/kairos/kubernetes.json): "
                        "use a standard image")
    sandbox = opts.pause_image or (manifest.pause_image if manifest else "")
    component_env = tuple((k, v) for k, v in env.items() if k not in KNOWN_ENV)
    ctx = NodeContext(opts=opts, node_name=node_name, node_ip=node_ip, api_port=api_port,
                      local_api=local_api, cluster_cidr=cluster_cidr, service_cidr=service_cidr,
                      cluster_domain=opts.cluster_domain or CLUSTER_DOMAIN,
                      cluster_dns=opts.cluster_dns, register_labels=register,
                      taints=tuple(opts.taints), env=component_env, resolv_conf=facts.resolv_conf,
                      sandbox_image=sandbox, server=role == "server",
                      verbosity="--v=2" if opts.debug else "",
                      binaries=manifest.binaries if manifest else ())
    systemd_cgroup = facts.systemd
    components: list[Component] = [containerd(ctx)]
    if ctx.server:
        components += [etcd(ctx), apiserver(ctx, advertise), controller_manager(ctx)]
        if "kube-scheduler" not in opts.disable:
            components.append(scheduler(ctx))
    components.append(kubelet(ctx, systemd_cgroup))
    if "kube-proxy" not in opts.disable:
        components.append(kube_proxy(ctx))
    if ctx.server and "traefik" not in opts.disable:
        components.append(traefik(ctx))
    files = [PlannedFile(CONTAINERD_CONFIG, render.containerd_config(
        sandbox_image=sandbox,
        cni_bin_dir=(manifest.cni_bin_dir if manifest else "") or facts.cni_bin_dir,
        cni_conf_dir=CNI_CONF_DIR,
        cni_template=CNI_TEMPLATE if "cni" not in opts.disable else "",
        systemd_cgroup=systemd_cgroup, snapshotter=opts.snapshotter or "overlayfs",
        debug=opts.debug))]
    if "cni" not in opts.disable:
        files.append(PlannedFile(CNI_TEMPLATE, render.cni_template()))
    tokens = [token]
    agent_token = _one([("--agent-token", opts.agent_token),
                        ("env K3S_AGENT_TOKEN", known.get("K3S_AGENT_TOKEN", ""))],
                       "agent token")
    if ctx.server and agent_token and derive(agent_token) != token:
        tokens.append(derive(agent_token))
    mode = opts.write_kubeconfig_mode or known.get("K3S_KUBECONFIG_MODE", "") or "0600"
    return NodePlan(
        distro=block.distro if block else "k3s", role=role, node_name=node_name,
        node_ip=node_ip, hostname=facts.hostname, version=version,
        wanted_version=cfg.kubernetes.version, api_port=api_port, server_url=server_url,
        local_api=local_api, cluster_cidr=cluster_cidr, service_cidr=service_cidr,
        service_ip=service_ip(service_cidr), cluster_domain=ctx.cluster_domain,
        cluster_dns=opts.cluster_dns, labels=tuple(sorted(labels.items())),
        taints=tuple(opts.taints), tls_sans=tuple(dict.fromkeys(opts.tls_sans)), token=token,
        tokens=tuple(tokens) if ctx.server else (), shared_token=shared,
        token_generated=generated, components=tuple(components), files=tuple(files),
        certs=server_certs(node_name=node_name, hostname=facts.hostname, node_ip=node_ip,
                           service_cidr=service_cidr, cluster_domain=ctx.cluster_domain,
                           tls_sans=opts.tls_sans, advertise_address=advertise)
        if ctx.server else (),
        kubeconfigs=_kubeconfigs(ctx, role, node_name, local_api, components),
        images=manifest.images if manifest else (), sandbox_image=sandbox,
        admin_copy=opts.write_kubeconfig or ADMIN_COPY, admin_copy_mode=int(mode, 8),
        env=component_env, warnings=tuple(warnings))


def _kubeconfigs(ctx: NodeContext, role: str, node_name: str, local_api: str,
                 components: Sequence[Component]) -> tuple[KubeconfigSpec, ...]:
    names = {c.name for c in components}
    if role == "agent":
        out = [KubeconfigSpec(f"{AGENT_DIR}/bootstrap-kubelet.conf", "kubelet-bootstrap",
                              local_api, bootstrap=True)]
        if "kube-proxy" in names:
            # kube-proxy runs as the node (the kubelet's rotating certificate): the server
            # binds system:nodes to system:node-proxier.
            out.append(KubeconfigSpec(f"{AGENT_DIR}/kube-proxy.conf", f"system:node:{node_name}",
                                      local_api, cert_file=KUBELET_CERT))
        return tuple(out)
    out = [KubeconfigSpec(f"{K8S_DIR}/admin.conf", ADMIN_USER, local_api, cert="admin"),
           KubeconfigSpec(f"{K8S_DIR}/controller-manager.conf", "system:kube-controller-manager",
                          local_api, cert="controller-manager"),
           KubeconfigSpec(f"{K8S_DIR}/kubelet.conf", f"system:node:{node_name}", local_api,
                          cert="kubelet")]
    if "kube-scheduler" in names:
        out.append(KubeconfigSpec(f"{K8S_DIR}/scheduler.conf", "system:kube-scheduler",
                                  local_api, cert="scheduler"))
    if "kube-proxy" in names:
        out.append(KubeconfigSpec(f"{K8S_DIR}/kube-proxy.conf", "system:kube-proxy",
                                  local_api, cert="kube-proxy"))
    if "traefik" in names:
        out.append(KubeconfigSpec(f"{K8S_DIR}/traefik.conf", TRAEFIK_USER, local_api,
                                  cert="traefik"))
    return tuple(out)

