"""k3s and k0s command-line flags, turned into what the real components take.

k3s bundles every component in one binary with one set of flags; here each component is its
own process, so each k3s flag maps to the flags of the component that does the work:

| k3s flag                                    | becomes                                        |
|---------------------------------------------|------------------------------------------------|
| `--node-label K=V` (repeated)               | kubelet `--node-labels` (and reconciled: below) |
| `--node-taint K=V:EFFECT` (repeated)        | kubelet `--register-with-taints` (reconciled)  |
| `--node-ip IP`, `--node-name N`, `--with-node-id` | kubelet/kube-proxy node IP and name       |
| `--flannel-iface IF`                        | the node IP is taken from interface IF         |
| `--cluster-cidr`, `--service-cidr`          | controller-manager, apiserver, kube-proxy      |
| `--cluster-dns`, `--cluster-domain`         | kubelet (no DNS add-on runs: see the docs)     |
| `--tls-san` (repeated, or comma separated)  | more names and IPs in the apiserver certificate |
| `--disable traefik` (and the add-ons not run here) | no Traefik                              |
| `--disable-kube-proxy`, `--disable-scheduler` | that component does not run                  |
| `--flannel-backend none`                    | no CNI config: bring your own network          |
| `--token`/`-t`, `--agent-token`, `--server`/`-s` | the join (token.py)                       |
| `--advertise-address`, `--bind-address`, `--https-listen-port` | apiserver          |
| `--service-node-port-range`                 | apiserver                                      |
| `--resolv-conf`, `--protect-kernel-defaults` | kubelet                                       |
| `--pause-image`, `--snapshotter`            | containerd                                     |
| `--write-kubeconfig`/`-o`, `--write-kubeconfig-mode` | where the admin kubeconfig copy goes  |
| `--kubelet-arg`, `--kube-apiserver-arg`, … (below) | that component's `--KEY=VALUE`   |
| `--cluster-init`, `--disable-cloud-controller`, … (below) | accepted as they are      |

Pass-through: `--kubelet-arg`, `--kube-apiserver-arg`, `--kube-controller-manager-arg`,
`--kube-scheduler-arg`, `--kube-proxy-arg`, `--etcd-arg` (a flag the provider sets itself is
replaced by the user's). Accepted because what they ask is what happens here anyway:
`--cluster-init` (servers run etcd), `--disable-cloud-controller`, `--disable-network-policy`,
`--disable-helm-controller` (none of them runs), `--debug` (components log more).

Every other flag is refused with its name: some are k3s internals with no meaning here
(`--data-dir`, `--lb-server-port`), some are features this provider does not have
(`--datastore-endpoint`, `--secrets-encryption`, `--embedded-registry`). A flag is never
dropped without saying so.

k0s flags (k0s controller and worker): `--single`, `--enable-worker`, `--no-taints` accepted
(a server here always runs a kubelet and is not tainted); `--labels K=V,...`, `--taints
K=V:E,...`, `--kubelet-extra-args "..."`, `--kube-controller-manager-extra-args "..."`,
`--disable-components` (kube-proxy, kube-scheduler, network-provider map; the add-ons not
run here are accepted), `--debug`/`-d`, `--verbose`/`-v`. `--token-file` and `--config` are
refused: k0s join tokens and ClusterConfig files have no equivalent; use kubernetes.token.

Values may be given as `--flag=value`, `--flag value` (two list items) or `"--flag value"`
(one item, split like a shell would, which is how Kairos itself passes them).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from kairos.errors import BadInput

HINT = "see docs/kubernetes.md for the flags this provider maps"
COMPONENT_ARGS = {
    "--kubelet-arg": "kubelet",
    "--kube-apiserver-arg": "kube-apiserver",
    "--kube-controller-manager-arg": "kube-controller-manager",
    "--kube-controller-arg": "kube-controller-manager",  # k3s's older spelling
    "--kube-scheduler-arg": "kube-scheduler",
    "--kube-proxy-arg": "kube-proxy",
    "--etcd-arg": "etcd",
}
SERVER_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
# What k3s's --disable takes. traefik is the one that runs here; the others do not run here
# at all, so disabling them is already true.
DISABLE_ADDONS = ("traefik", "coredns", "servicelb", "local-storage", "metrics-server",
                  "runtimes", "helm-controller", "network-policy", "cloud-controller")
K0S_COMPONENTS = ("kube-proxy", "kube-scheduler", "network-provider", "coredns",
                  "konnectivity-server", "metrics-server", "helm", "kube-router", "autopilot",
                  "csr-approver", "control-api", "endpoint-reconciler", "node-role",
                  "system-rbac", "worker-config", "windows-node", "kube-controller-manager")
# Known flags that cannot work here, with the reason shown to the user.
UNSUPPORTED = {
    "--data-dir": "the data paths are fixed on this OS (/var/lib/etcd, /var/lib/kubelet, "
                  "/etc/kubernetes)",
    "--datastore-endpoint": "an external datastore is not supported yet; servers run etcd",
    "--datastore-cafile": "an external datastore is not supported yet",
    "--datastore-certfile": "an external datastore is not supported yet",
    "--datastore-keyfile": "an external datastore is not supported yet",
    "--token-file": "give the token itself in kubernetes.token",
    "--agent-token-file": "give the token itself",
    "--cluster-reset": "restore etcd from a snapshot by hand",
    "--secrets-encryption": "encryption of Secrets at rest is not supported yet",
    "--embedded-registry": "the standard image has no registry mirror; images are imported "
                           "from the image",
    "--private-registry": "no registry configuration yet: images come from the image",
    "--system-default-registry": "no registry configuration yet: images come from the image",
    "--node-external-ip": "no cloud provider runs here to publish an external IP",
    "--container-runtime-endpoint": "the provider runs containerd itself",
    "--docker": "the provider runs containerd, not Docker",
    "--rootless": "rootless mode is not supported",
    "--selinux": "SELinux labelling is not supported",
    "--lb-server-port": "there is no client load balancer here (a k3s internal)",
    "--egress-selector-mode": "a k3s internal with no equivalent here",
    "--kube-cloud-controller-manager-arg": "no cloud controller runs here",
    "--default-local-storage-path": "the local-storage add-on does not run here",
    "--advertise-port": "the apiserver advertises the port it listens on",
    "--vpn-auth": "VPN integration comes with the p2p: block",
    "--vpn-auth-file": "VPN integration comes with the p2p: block",
    "--image-credential-provider-bin-dir": "not supported",
    "--image-credential-provider-config": "not supported",
    "--airgap-extra-registry": "not supported",
}


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value \
            else f"{self.key}:{self.effect}"


@dataclass
class Options:
    """What a block's flags ask for, in the provider's terms (empty: the default)."""

    labels: dict[str, str] = field(default_factory=dict)
    taints: list[Taint] = field(default_factory=list)
    node_ip: str = ""
    node_name: str = ""
    with_node_id: bool = False
    flannel_iface: str = ""
    flannel_backend: str = ""
    cluster_cidr: str = ""
    service_cidr: str = ""
    cluster_dns: str = ""
    cluster_domain: str = ""
    service_node_port_range: str = ""
    tls_sans: list[str] = field(default_factory=list)
    disable: set[str] = field(default_factory=set)  # traefik, kube-proxy, kube-scheduler, cni
    token: str = ""
    agent_token: str = ""
    server: str = ""
    advertise_address: str = ""
    bind_address: str = ""
    https_port: int = 0
    resolv_conf: str = ""
    protect_kernel_defaults: bool = False
    pause_image: str = ""
    snapshotter: str = ""
    write_kubeconfig: str = ""
    write_kubeconfig_mode: str = ""
    debug: bool = False
    extra: dict[str, list[str]] = field(default_factory=dict)  # component -> its flags
    notes: list[str] = field(default_factory=list)

    def add_extra(self, component: str, flags: Sequence[str]) -> None:
        self.extra.setdefault(component, []).extend(flags)


# -- values ------------------------------------------------------------------------------

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_NAME = re.compile(rf"^{_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_NAME})?$")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_SAN_DNS = re.compile(r"^(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
                      r"(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$")


def label_key_ok(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_NAME.match(prefix)):
        return False
    return bool(_LABEL_NAME.match(name))


def parse_label(text: str, where: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not eq or not label_key_ok(key) or not _LABEL_VALUE.match(value):
        raise BadInput(f"{where}: '{text}' is not a node label KEY=VALUE",
                       "keys are [prefix/]name, names and values up to 63 letters, digits, "
                       "'-', '_' or '.'")
    return key, value


def parse_taint(text: str, where: str) -> Taint:
    head, colon, effect = text.strip().rpartition(":")
    key, _, value = head.partition("=")
    if not colon or effect not in EFFECTS or not label_key_ok(key) \
            or not _LABEL_VALUE.match(value):
        raise BadInput(f"{where}: '{text}' is not a node taint KEY[=VALUE]:EFFECT",
                       f"EFFECT is one of {', '.join(EFFECTS)}")
    return Taint(key, value, effect)


def parse_ipv4(text: str, where: str) -> str:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise BadInput(f"{where}: '{text}' is not an IP address", HINT) from None
    if address.version != 4:
        raise BadInput(f"{where}: '{text}' is IPv6; this provider runs IPv4 clusters", HINT)
    return str(address)


def parse_cidr(text: str, where: str) -> str:
    if "," in text:
        raise BadInput(f"{where}: '{text}' is dual-stack; this provider runs IPv4 clusters",
                       "give one IPv4 CIDR")
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError:
        raise BadInput(f"{where}: '{text}' is not a network CIDR such as 10.42.0.0/16",
                       HINT) from None
    if net.version != 4:
        raise BadInput(f"{where}: '{text}' is IPv6; this provider runs IPv4 clusters", HINT)
    return str(net)


def parse_san(text: str, where: str) -> str:
    value = text.strip()
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if len(value) > 253 or not _SAN_DNS.match(value):
        raise BadInput(f"{where}: '{text}' is neither an IP address nor a DNS name", HINT)
    return value.lower()


def node_name_ok(name: str) -> bool:
    return len(name) <= 253 and bool(_DNS_NAME.match(name))


def component_flag(value: str, where: str) -> str:
    """k3s's `--kubelet-arg max-pods=200` form (or `--max-pods=200`) as the component's flag."""
    text = value.strip()
    if not text or text in ("-", "--"):
        raise BadInput(f"{where}: empty component argument", "give KEY=VALUE, e.g. max-pods=200")
    return text if text.startswith("-") else f"--{text}"


# -- the k3s parser ----------------------------------------------------------------------

Handler = Callable[[Options, str, str], None]


def _words(args: Sequence[str], where: str) -> list[tuple[str, str]]:
    """(word, where it came from) for every shell word of every list item."""
    out: list[tuple[str, str]] = []
    for i, item in enumerate(args):
        try:
            words = shlex.split(item)
        except ValueError as exc:
            raise BadInput(f"{where}[{i}]: cannot split '{item}': {exc}",
                           "check the quotes") from None
        out.extend((w, f"{where}[{i}]") for w in words)
    return out


def _set(attr: str, convert: Callable[[str, str], object] | None = None) -> Handler:
    def handle(opts: Options, value: str, where: str) -> None:
        setattr(opts, attr, convert(value, where) if convert else value)
    return handle


def _append_list(attr: str, convert: Callable[[str, str], str], split: bool) -> Handler:
    def handle(opts: Options, value: str, where: str) -> None:
        parts = [p for p in value.split(",") if p.strip()] if split else [value]
        getattr(opts, attr).extend(convert(p, where) for p in parts)
    return handle


def _label(opts: Options, value: str, where: str) -> None:
    key, val = parse_label(value, where)
    opts.labels[key] = val


def _taint(opts: Options, value: str, where: str) -> None:
    opts.taints.append(parse_taint(value, where))


def _disable(opts: Options, value: str, where: str) -> None:
    for item in (p.strip() for p in value.split(",") if p.strip()):
        if item not in DISABLE_ADDONS:
            raise BadInput(f"{where}: --disable {item}: unknown component",
                           f"k3s can disable {', '.join(DISABLE_ADDONS)}")
        if item == "traefik":
            opts.disable.add("traefik")


def _backend(opts: Options, value: str, where: str) -> None:
    if value.strip() != "none":
        raise BadInput(f"{where}: --flannel-backend {value}: no flannel runs here",
                       "one node uses a bridge; give --flannel-backend=none to bring your own "
                       "CNI, or leave the flag out")
    opts.flannel_backend = "none"
    opts.disable.add("cni")


def _port(value: str, where: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise BadInput(f"{where}: '{value}' is not a TCP port", HINT)
    return int(value)


def _mode(value: str, where: str) -> str:
    if not re.fullmatch(r"0?[0-7]{3}", value.strip()):
        raise BadInput(f"{where}: '{value}' is not a file mode such as 0600", HINT)
    return value.strip()


def _path(value: str, where: str) -> str:
    if not value.startswith("/"):
        raise BadInput(f"{where}: '{value}' is not an absolute path", HINT)
    return value


def _node_name(value: str, where: str) -> str:
    name = value.strip().lower()
    if not node_name_ok(name):
        raise BadInput(f"{where}: '{value}' is not a valid node name",
                       "use lower-case letters, digits, '-' and '.'")
    return name


def _snapshotter(value: str, where: str) -> str:
    if value not in ("overlayfs", "native", "fuse-overlayfs", "stargz"):
        raise BadInput(f"{where}: --snapshotter {value}: unknown snapshotter",
                       "overlayfs (the default) or native")
    return value


def _cluster_dns(value: str, where: str) -> str:
    return parse_ipv4(value, where)


def _accept(note: str = "") -> Handler:
    def handle(opts: Options, value: str, where: str) -> None:
        if note:
            opts.notes.append(note)
    return handle


def _flag_on(attr: str) -> Handler:
    def handle(opts: Options, value: str, where: str) -> None:
        setattr(opts, attr, True)
    return handle


def _disable_component(name: str) -> Handler:
    def handle(opts: Options, value: str, where: str) -> None:
        opts.disable.add(name)
    return handle


@dataclass(frozen=True)
class Flag:
    handler: Handler
    takes_value: bool = True
    server_only: bool = False
    agent_only: bool = False
    repeatable: bool = False


K3S_FLAGS: dict[str, Flag] = {
    "--node-label": Flag(_label, repeatable=True),
    "--node-taint": Flag(_taint, repeatable=True),
    "--node-ip": Flag(_set("node_ip", parse_ipv4)),
    "--node-name": Flag(_set("node_name", _node_name)),
    "--with-node-id": Flag(_flag_on("with_node_id"), takes_value=False),
    "--flannel-iface": Flag(_set("flannel_iface")),
    "--flannel-backend": Flag(_backend, server_only=True),
    "--cluster-cidr": Flag(_set("cluster_cidr", parse_cidr), server_only=True),
    "--service-cidr": Flag(_set("service_cidr", parse_cidr), server_only=True),
    "--cluster-dns": Flag(_set("cluster_dns", _cluster_dns), server_only=True),
    "--cluster-domain": Flag(_set("cluster_domain", _node_name), server_only=True),
    "--service-node-port-range": Flag(_set("service_node_port_range"), server_only=True),
    "--tls-san": Flag(_append_list("tls_sans", parse_san, split=True), server_only=True,
                      repeatable=True),
    "--disable": Flag(_disable, server_only=True, repeatable=True),
    "--disable-kube-proxy": Flag(_disable_component("kube-proxy"), takes_value=False),
    "--disable-scheduler": Flag(_disable_component("kube-scheduler"), takes_value=False,
                                server_only=True),
    "--disable-cloud-controller": Flag(_accept(), takes_value=False, server_only=True),
    "--disable-network-policy": Flag(_accept(), takes_value=False, server_only=True),
    "--disable-helm-controller": Flag(_accept(), takes_value=False, server_only=True),
    "--cluster-init": Flag(_accept(), takes_value=False, server_only=True),
    "--token": Flag(_set("token")),
    "--agent-token": Flag(_set("agent_token"), server_only=True),
    "--server": Flag(_set("server")),
    "--advertise-address": Flag(_set("advertise_address", parse_ipv4), server_only=True),
    "--bind-address": Flag(_set("bind_address", parse_ipv4), server_only=True),
    "--https-listen-port": Flag(_set("https_port", _port), server_only=True),
    "--resolv-conf": Flag(_set("resolv_conf", _path)),
    "--protect-kernel-defaults": Flag(_flag_on("protect_kernel_defaults"), takes_value=False),
    "--pause-image": Flag(_set("pause_image")),
    "--snapshotter": Flag(_set("snapshotter", _snapshotter)),
    "--write-kubeconfig": Flag(_set("write_kubeconfig", _path), server_only=True),
    "--write-kubeconfig-mode": Flag(_set("write_kubeconfig_mode", _mode), server_only=True),
    "--debug": Flag(_flag_on("debug"), takes_value=False),
    "--v": Flag(_accept()),
    "--log": Flag(_accept("--log is ignored: every component logs to the journal")),
    "--alsologtostderr": Flag(_accept(), takes_value=False),
}
K3S_SHORT = {"-t": "--token", "-s": "--server", "-o": "--write-kubeconfig", "-v": "--v",
             "-d": "--data-dir", "-l": "--log"}


def _bool_value(value: str, name: str, where: str) -> bool:
    if value.lower() in ("true", "1", ""):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise BadInput(f"{where}: {name}={value}: expected true or false", HINT)


def parse_k3s_args(args: Sequence[str], role: str, where: str = "k3s.args") -> Options:
    """The Options a k3s (role server) or k3s-agent (role agent) argument list asks for."""
    return _parse(args, role, where, K3S)


# -- the k0s parser ----------------------------------------------------------------------

K0S_UNSUPPORTED = {
    "--token-file": "k0s join tokens have no equivalent here: give the shared secret in "
                    "kubernetes.token and the server in kubernetes.server",
    "--config": "k0s ClusterConfig files are not read: use k3s-style flags in k3s.args",
    "-c": "k0s ClusterConfig files are not read: use k3s-style flags in k3s.args",
    "--data-dir": UNSUPPORTED["--data-dir"],
    "--cri-socket": "the provider runs containerd itself",
    "--profile": "worker profiles are not supported",
    "--iptables-mode": "kube-proxy runs in iptables mode",
    "--enable-dynamic-config": "not supported",
    "--enable-cloud-provider": "no cloud provider runs here",
    "--enable-k0s-cloud-provider": "no cloud provider runs here",
    "--kube-router": "no kube-router runs here",
}


def _k0s_labels(opts: Options, value: str, where: str) -> None:
    for part in (p for p in value.split(",") if p.strip()):
        key, val = parse_label(part, where)
        opts.labels[key] = val


def _k0s_taints(opts: Options, value: str, where: str) -> None:
    opts.taints.extend(parse_taint(p, where) for p in value.split(",") if p.strip())


def _k0s_extra(component: str) -> Handler:
    def handle(opts: Options, value: str, where: str) -> None:
        try:
            flags = shlex.split(value)
        except ValueError as exc:
            raise BadInput(f"{where}: cannot split '{value}': {exc}", "check the quotes") \
                from None
        opts.add_extra(component, [component_flag(f, where) for f in flags])
    return handle


def _k0s_disable(opts: Options, value: str, where: str) -> None:
    for item in (p.strip() for p in value.split(",") if p.strip()):
        if item not in K0S_COMPONENTS:
            raise BadInput(f"{where}: --disable-components {item}: unknown component",
                           f"k0s components: {', '.join(K0S_COMPONENTS)}")
        if item in ("kube-proxy", "kube-scheduler"):
            opts.disable.add(item)
        elif item == "network-provider":
            opts.disable.add("cni")


K0S_FLAGS: dict[str, Flag] = {
    "--single": Flag(_accept(), takes_value=False, server_only=True),
    "--enable-worker": Flag(_accept(), takes_value=False, server_only=True),
    "--no-taints": Flag(_accept(), takes_value=False, server_only=True),
    "--labels": Flag(_k0s_labels, repeatable=True),
    "--taints": Flag(_k0s_taints, repeatable=True),
    "--kubelet-extra-args": Flag(_k0s_extra("kubelet"), repeatable=True),
    "--kube-controller-manager-extra-args": Flag(_k0s_extra("kube-controller-manager"),
                                                 server_only=True, repeatable=True),
    "--disable-components": Flag(_k0s_disable, server_only=True, repeatable=True),
    "--debug": Flag(_flag_on("debug"), takes_value=False),
    "--verbose": Flag(_accept(), takes_value=False),
    "--logging": Flag(_accept("--logging is ignored: every component logs to the journal")),
}
K0S_SHORT = {"-d": "--debug", "-v": "--verbose"}


def parse_k0s_args(args: Sequence[str], role: str, where: str = "k0s.args") -> Options:
    """The Options a k0s controller (server) or k0s worker (agent) argument list asks for."""
    return _parse(args, role, where, K0S)


@dataclass(frozen=True)
class Dialect:
    """One distribution's flags: the k3s and k0s argument lists parse the same way."""

    name: str
    flags: Mapping[str, Flag]
    short: Mapping[str, str]
    unsupported: Mapping[str, str]
    server_only: str  # "{flag} is …": why an agent may not take a server-only flag
    positional_hint: str
    component_args: Mapping[str, str] = field(default_factory=dict)  # k3s's --kubelet-arg, …


K3S = Dialect("k3s", K3S_FLAGS, K3S_SHORT, UNSUPPORTED,
              "a k3s server flag; an agent does not take it",
              "give flags only, such as --node-label=KEY=VALUE", COMPONENT_ARGS)
K0S = Dialect("k0s", K0S_FLAGS, K0S_SHORT, K0S_UNSUPPORTED,
              "a k0s controller flag; a worker does not take it", "give flags only")


def _parse(args: Sequence[str], role: str, where: str, d: Dialect) -> Options:
    opts = Options()
    words = _words(args, where)
    i = 0
    while i < len(words):
        word, origin = words[i]
        i += 1
        if not word.startswith("-"):
            raise BadInput(f"{origin}: unexpected argument '{word}'", d.positional_hint)
        name, eq, value = word.partition("=")
        name = d.short.get(name, name)
        if name in d.unsupported:
            raise BadInput(f"{origin}: the {d.name} flag {name} is not supported by this "
                           f"provider: {d.unsupported[name]}", HINT)
        if name in d.component_args:
            component = d.component_args[name]
            if not eq:
                if i >= len(words):
                    raise BadInput(f"{origin}: {name} needs a value", HINT)
                value, i = words[i][0], i + 1
            if role == "agent" and component in SERVER_COMPONENTS:
                raise BadInput(f"{origin}: {name} is a server flag; an agent runs no "
                               f"{component}", "move it to the k3s block of the server")
            opts.add_extra(component, [component_flag(value, origin)])
            continue
        flag = d.flags.get(name)
        if flag is None:
            raise BadInput(f"{origin}: unknown {d.name} flag {name}", HINT)
        if flag.server_only and role != "server":
            raise BadInput(f"{origin}: {name} is {d.server_only}",
                           f"move it to the {d.name} block of the server")
        if name == "--server" and role == "server":
            raise BadInput(f"{origin}: --server on a server joins another server: more than "
                           "one server (HA) is not supported yet",
                           "run one server (k3s) and join the others as agents (k3s-agent)")
        if flag.takes_value:
            if not eq:
                if i >= len(words):
                    raise BadInput(f"{origin}: {name} needs a value", HINT)
                value, i = words[i][0], i + 1
        elif eq and not _bool_value(value, name, origin):
            continue  # --flag=false: the default
        flag.handler(opts, value, origin)
    return opts
