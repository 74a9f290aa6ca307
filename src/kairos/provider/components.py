"""The processes a node runs: one `Component` (one systemd unit) per program, and its builder.

Each builder turns a `NodeContext` (what `make_plan` decided: names, addresses, networks, the
parsed options) into the argv, inputs and unit ordering of one process: containerd, etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, the kubelet, kube-proxy and Traefik.
They live apart from plan.py so the flags of a process are found by its name here, and the
config-to-plan logic stays in plan.py; like plan.py, nothing here does I/O. plan.py imports
from this module, never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kairos.provider.args import Options, Taint
from kairos.provider.pki import PKI_DIR

NODE_CIDR_MASK = 24

K8S_DIR = "/etc/kubernetes"
AGENT_DIR = "/etc/kubernetes/agent"  # an agent's files: a server's stay where they are
UNIT_DIR = "/run/systemd/system"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CNI_TEMPLATE = "/etc/containerd/cni-template.conflist"
CNI_GENERATED = "/etc/cni/net.d/10-containerd-net.conflist"  # what containerd writes
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
KUBELET_DIR = "/var/lib/kubelet"
# The kubelet's exec volume plugins default to /usr/libexec/kubernetes: on this OS
# /usr/libexec is persistent and shared by both slots (stale binaries after a rollback), so
# they go under the kubelet's own persistent directory instead.
VOLUME_PLUGIN_DIR = "/var/lib/kubelet/volumeplugins"
ETCD_DIR = "/var/lib/etcd"
BIN = "/usr/bin"


@dataclass(frozen=True)
class Component:
    """One process, run by its own systemd unit."""

    name: str
    argv: tuple[str, ...]
    inputs: tuple[str, ...] = ()  # files it reads: a change of one restarts it
    after: tuple[str, ...] = ()  # units it starts after
    env: tuple[tuple[str, str], ...] = ()
    notify: bool = False
    service: tuple[tuple[str, str], ...] = ()  # more [Service] settings
    conflicts: tuple[str, ...] = ()  # the distribution's unit of the same program

    @property
    def unit(self) -> str:
        return f"kairos-{self.name}.service"


def _merge_flags(base: Sequence[str], extra: Sequence[str]) -> tuple[str, ...]:
    """`base` then `extra`; a flag the user gives replaces the provider's flag of that name."""
    names = {f.split("=", 1)[0] for f in extra}
    return (*(f for f in base if f.split("=", 1)[0] not in names), *extra)


def _csv(items: Sequence[str]) -> str:
    return ",".join(items)


# -- components --------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeContext:
    opts: Options
    node_name: str
    node_ip: str
    api_port: int
    local_api: str
    cluster_cidr: str
    service_cidr: str
    cluster_domain: str
    cluster_dns: str
    register_labels: tuple[tuple[str, str], ...]
    taints: tuple[Taint, ...]
    env: tuple[tuple[str, str], ...]
    resolv_conf: str
    sandbox_image: str
    server: bool
    verbosity: str
    binaries: tuple[tuple[str, str], ...] = ()

    def binary(self, name: str) -> str:
        return dict(self.binaries).get(name) or f"{BIN}/{name}"


def _pki(name: str) -> str:
    return f"{PKI_DIR}/{name}"


def _component(ctx: NodeContext, name: str, base: Sequence[str], **kw: Any) -> Component:
    flags = _merge_flags(base, ctx.opts.extra.get(name, ()))
    return Component(name=name, argv=(ctx.binary(name), *flags), env=ctx.env, **kw)


def containerd(ctx: NodeContext) -> Component:
    return Component(
        name="containerd", argv=(ctx.binary("containerd"), "--config", CONTAINERD_CONFIG),
        inputs=(CONTAINERD_CONFIG, CNI_TEMPLATE), notify=True, env=ctx.env,
        conflicts=("containerd.service",),
        # containerd's own unit: the shims and containers outlive a containerd restart.
        service=(("Delegate", "yes"), ("KillMode", "process"), ("OOMScoreAdjust", "-999"),
                 ("LimitNOFILE", "1048576"), ("LimitNPROC", "infinity"),
                 ("LimitCORE", "infinity"), ("TasksMax", "infinity")))


def etcd(ctx: NodeContext) -> Component:
    peer = "https://127.0.0.1:2380"
    # One member on loopback: a changed node IP or hostname never strands its data.
    base = ["--name=kairos", f"--data-dir={ETCD_DIR}",
            "--listen-client-urls=https://127.0.0.1:2379",
            "--advertise-client-urls=https://127.0.0.1:2379",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=kairos={peer}", "--initial-cluster-state=new",
            "--listen-metrics-urls=http://127.0.0.1:2381",
            "--client-cert-auth=true", f"--trusted-ca-file={_pki('etcd/ca.crt')}",
            f"--cert-file={_pki('etcd/server.crt')}", f"--key-file={_pki('etcd/server.key')}",
            "--peer-client-cert-auth=true", f"--peer-trusted-ca-file={_pki('etcd/ca.crt')}",
            f"--peer-cert-file={_pki('etcd/peer.crt')}",
            f"--peer-key-file={_pki('etcd/peer.key')}", "--snapshot-count=10000"]
    inputs = tuple(_pki(f) for f in ("etcd/ca.crt", "etcd/server.crt", "etcd/server.key",
                                     "etcd/peer.crt", "etcd/peer.key"))
    return _component(ctx, "etcd", base, inputs=inputs, notify=True,
                      service=(("LimitNOFILE", "65536"),), conflicts=("etcd.service",))


def apiserver(ctx: NodeContext, advertise: str) -> Component:
    o = ctx.opts
    base = [f"--advertise-address={advertise}", f"--secure-port={ctx.api_port}",
            "--insecure-port=0", "--allow-privileged=true",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            "--enable-bootstrap-token-auth=true", "--anonymous-auth=true",
            f"--client-ca-file={_pki('ca.crt')}",
            f"--tls-cert-file={_pki('apiserver.crt')}",
            f"--tls-private-key-file={_pki('apiserver.key')}",
            "--etcd-servers=https://127.0.0.1:2379", f"--etcd-cafile={_pki('etcd/ca.crt')}",
            f"--etcd-certfile={_pki('apiserver-etcd-client.crt')}",
            f"--etcd-keyfile={_pki('apiserver-etcd-client.key')}",
            f"--kubelet-client-certificate={_pki('apiserver-kubelet-client.crt')}",
            f"--kubelet-client-key={_pki('apiserver-kubelet-client.key')}",
            # Nodes are reached at the address they registered (logs, exec, port-forward):
            # host names of edge nodes seldom resolve.
            "--kubelet-preferred-address-types=InternalIP",
            f"--proxy-client-cert-file={_pki('front-proxy-client.crt')}",
            f"--proxy-client-key-file={_pki('front-proxy-client.key')}",
            f"--requestheader-client-ca-file={_pki('front-proxy-ca.crt')}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-username-headers=X-Remote-User",
            f"--service-account-issuer=https://kubernetes.default.svc.{ctx.cluster_domain}",
            f"--service-account-key-file={_pki('sa.pub')}",
            f"--service-account-signing-key-file={_pki('sa.key')}",
            f"--service-cluster-ip-range={ctx.service_cidr}", ctx.verbosity]
    if o.bind_address:
        base.append(f"--bind-address={o.bind_address}")
    if o.service_node_port_range:
        base.append(f"--service-node-port-range={o.service_node_port_range}")
    names = ("ca.crt", "apiserver.crt", "apiserver.key", "etcd/ca.crt",
             "apiserver-etcd-client.crt", "apiserver-etcd-client.key",
             "apiserver-kubelet-client.crt", "apiserver-kubelet-client.key",
             "front-proxy-client.crt", "front-proxy-client.key", "front-proxy-ca.crt",
             "sa.pub", "sa.key")
    return _component(ctx, "kube-apiserver", [b for b in base if b],
                      inputs=tuple(_pki(n) for n in names), after=("kairos-etcd.service",),
                      service=(("LimitNOFILE", "65536"),))


def controller_manager(ctx: NodeContext) -> Component:
    conf = f"{K8S_DIR}/controller-manager.conf"
    base = [f"--kubeconfig={conf}", f"--authentication-kubeconfig={conf}",
            f"--authorization-kubeconfig={conf}", "--bind-address=127.0.0.1", "--port=0",
            "--leader-elect=false", f"--client-ca-file={_pki('ca.crt')}",
            f"--requestheader-client-ca-file={_pki('front-proxy-ca.crt')}",
            f"--root-ca-file={_pki('ca.crt')}",
            f"--cluster-signing-cert-file={_pki('ca.crt')}",
            f"--cluster-signing-key-file={_pki('ca.key')}",
            f"--service-account-private-key-file={_pki('sa.key')}",
            "--use-service-account-credentials=true",
            # bootstrapsigner signs cluster-info for joining agents; tokencleaner drops
            # expired bootstrap tokens.
            "--controllers=*,bootstrapsigner,tokencleaner",
            "--allocate-node-cidrs=true", f"--cluster-cidr={ctx.cluster_cidr}",
            f"--node-cidr-mask-size={NODE_CIDR_MASK}",
            f"--service-cluster-ip-range={ctx.service_cidr}", ctx.verbosity]
    inputs = (conf, _pki("ca.crt"), _pki("ca.key"), _pki("sa.key"), _pki("front-proxy-ca.crt"))
    return _component(ctx, "kube-controller-manager", [b for b in base if b], inputs=inputs,
                      after=("kairos-kube-apiserver.service",))


def scheduler(ctx: NodeContext) -> Component:
    conf = f"{K8S_DIR}/scheduler.conf"
    base = [f"--kubeconfig={conf}", f"--authentication-kubeconfig={conf}",
            f"--authorization-kubeconfig={conf}", "--bind-address=127.0.0.1", "--port=0",
            "--leader-elect=false", ctx.verbosity]
    return _component(ctx, "kube-scheduler", [b for b in base if b], inputs=(conf,),
                      after=("kairos-kube-apiserver.service",))


def kubelet(ctx: NodeContext, systemd_cgroup: bool) -> Component:
    o = ctx.opts
    if ctx.server:
        kubeconfig, ca = f"{K8S_DIR}/kubelet.conf", _pki("ca.crt")
        auth = [f"--kubeconfig={kubeconfig}"]
        inputs: tuple[str, ...] = (kubeconfig, ca)
    else:
        kubeconfig, ca = f"{AGENT_DIR}/kubelet.conf", f"{AGENT_DIR}/ca.crt"
        boot = f"{AGENT_DIR}/bootstrap-kubelet.conf"
        # TLS bootstrapping: the kubelet asks for its client certificate with the bootstrap
        # token, the controller-manager approves and signs it, the kubelet renews it.
        auth = [f"--kubeconfig={kubeconfig}", f"--bootstrap-kubeconfig={boot}",
                "--rotate-certificates=true"]
        inputs = (boot, ca)
    base = [*auth, "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{CONTAINERD_SOCKET}",
            f"--cgroup-driver={'systemd' if systemd_cgroup else 'cgroupfs'}",
            f"--hostname-override={ctx.node_name}", f"--node-ip={ctx.node_ip}",
            # The apiserver reaches the kubelet on the node IP (logs, exec).
            f"--address={ctx.node_ip}", "--healthz-bind-address=127.0.0.1",
            "--read-only-port=0", "--anonymous-auth=false",
            "--authentication-token-webhook=true", "--authorization-mode=Webhook",
            f"--client-ca-file={ca}", f"--cert-dir={KUBELET_DIR}/pki",
            f"--volume-plugin-dir={VOLUME_PLUGIN_DIR}",
            f"--resolv-conf={o.resolv_conf or ctx.resolv_conf}",
            f"--cluster-domain={ctx.cluster_domain}", "--fail-swap-on=false",
            # Image GC never removes the sandbox image: nothing could pull it again.
            f"--pod-infra-container-image={ctx.sandbox_image}",
            "--runtime-request-timeout=15m", ctx.verbosity]
    if ctx.cluster_dns:
        base.append(f"--cluster-dns={ctx.cluster_dns}")
    if ctx.register_labels:
        base.append("--node-labels=" + _csv([f"{k}={v}" for k, v in ctx.register_labels]))
    if ctx.taints:
        base.append("--register-with-taints=" + _csv([str(t) for t in ctx.taints]))
    if o.protect_kernel_defaults:
        base.append("--protect-kernel-defaults=true")
    after = ["kairos-containerd.service"]
    if ctx.server:
        after.append("kairos-kube-apiserver.service")
    return _component(ctx, "kubelet", [b for b in base if b], inputs=inputs,
                      after=tuple(after))


def kube_proxy(ctx: NodeContext) -> Component:
    conf = f"{K8S_DIR}/kube-proxy.conf" if ctx.server else f"{AGENT_DIR}/kube-proxy.conf"
    base = [f"--kubeconfig={conf}", "--proxy-mode=iptables",
            f"--cluster-cidr={ctx.cluster_cidr}", f"--hostname-override={ctx.node_name}",
            "--healthz-bind-address=127.0.0.1:10256",
            "--metrics-bind-address=127.0.0.1:10249", ctx.verbosity]
    return _component(ctx, "kube-proxy", [b for b in base if b], inputs=(conf,),
                      after=("kairos-kubelet.service",))


def traefik(ctx: NodeContext) -> Component:
    conf = f"{K8S_DIR}/traefik.conf"
    argv = (ctx.binary("traefik"), "--global.checknewversion=false",
            "--global.sendanonymoususage=false",
            "--entrypoints.web.address=:80", "--entrypoints.websecure.address=:443",
            "--entrypoints.websecure.http.tls=true",
            "--providers.kubernetesingress=true",
            f"--providers.kubernetesingress.ingressendpoint.ip={ctx.node_ip}",
            f"--log.level={'DEBUG' if ctx.opts.debug else 'INFO'}")
    # KUBECONFIG: Traefik's Kubernetes provider reads it when it runs outside a pod.
    return Component(name="traefik", argv=argv, inputs=(conf,),
                     env=(*ctx.env, ("KUBECONFIG", conf)),
                     after=("kairos-kube-apiserver.service",))
