"""config + facts → the node plan: every key, the defaults, the errors."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from kairos.errors import BadInput
from kairos.provider.components import CNI_TEMPLATE
from kairos.provider.config import from_cloud_config
from kairos.provider.facts import Facts
from kairos.provider.manifest import Manifest, parse_manifest
from kairos.provider.plan import (
    Decision,
    NodePlan,
    kubelet_may_set,
    make_plan,
    parse_server_url,
    version_matches,
)
from kairos.provider.token import derive

FACTS = Facts(hostname="edge-1", machine_id="0123456789abcdef0123456789abcdef",
              addresses=(("eth0", "192.168.1.10"), ("eth1", "10.99.0.5")),
              default_iface="eth0", resolv_conf="/run/systemd/resolve/resolv.conf",
              cni_bin_dir="/usr/lib/cni", new_token="abcdef.0123456789abcdef")
MANIFEST = Manifest("1.20.2", "3.4.23", "1.6.20", "3.0.4", "registry.k8s.io/pause:3.2",
                    ("/usr/share/kairos/images/pause.tar",))


def plan(data: dict[str, Any], facts: Facts = FACTS, manifest: Manifest | None = MANIFEST,
         decision: Decision | None = None) -> NodePlan:
    return make_plan(from_cloud_config(data), facts, manifest, decision)


def argv(p: NodePlan, name: str) -> list[str]:
    c = p.component(name)
    assert c is not None, name
    return list(c.argv)


def names(p: NodePlan) -> list[str]:
    return [c.name for c in p.components]


def test_a_server_with_defaults() -> None:
    p = plan({"k3s": {"enabled": True}})
    assert (p.role, p.distro, p.node_name, p.node_ip) == ("server", "k3s", "edge-1",
                                                          "192.168.1.10")
    assert (p.cluster_cidr, p.service_cidr, p.service_ip) == ("10.42.0.0/16", "10.43.0.0/16",
                                                              "10.43.0.1")
    assert p.server_url == "https://192.168.1.10:6443"
    assert p.local_api == "https://127.0.0.1:6443"
    assert names(p) == ["containerd", "etcd", "kube-apiserver", "kube-controller-manager",
                        "kube-scheduler", "kubelet", "kube-proxy", "traefik"]
    assert p.version == "1.20.2" and p.sandbox_image == "registry.k8s.io/pause:3.2"
    # No token in the config: the server makes one (facts hand in a fresh one).
    assert p.token_generated and p.token.value == "abcdef.0123456789abcdef"
    assert p.tokens == (p.token,)
    assert dict(p.labels) == {"node-role.kubernetes.io/master": "true",
                              "node-role.kubernetes.io/control-plane": "true"}
    assert p.warnings == ()
    api = argv(p, "kube-apiserver")
    for flag in ("--enable-bootstrap-token-auth=true", "--kubelet-preferred-address-types=InternalIP",
                 "--service-cluster-ip-range=10.43.0.0/16", "--advertise-address=192.168.1.10",
                 "--authorization-mode=Node,RBAC", "--secure-port=6443"):
        assert flag in api
    cm = argv(p, "kube-controller-manager")
    assert "--controllers=*,bootstrapsigner,tokencleaner" in cm
    assert "--cluster-cidr=10.42.0.0/16" in cm and "--allocate-node-cidrs=true" in cm
    kubelet = argv(p, "kubelet")
    for flag in ("--node-ip=192.168.1.10", "--address=192.168.1.10",
                 "--hostname-override=edge-1", "--kubeconfig=/etc/kubernetes/kubelet.conf",
                 "--resolv-conf=/run/systemd/resolve/resolv.conf", "--cgroup-driver=systemd",
                 "--volume-plugin-dir=/var/lib/kubelet/volumeplugins",
                 "--pod-infra-container-image=registry.k8s.io/pause:3.2"):
        assert flag in kubelet
    # node-role labels are the server's to set (kubectl), not the kubelet's.
    assert not any(f.startswith("--node-labels") for f in kubelet)
    assert "--proxy-mode=iptables" in argv(p, "kube-proxy")
    traefik = argv(p, "traefik")
    assert "--global.checknewversion=false" in traefik
    assert "--global.sendanonymoususage=false" in traefik
    assert "--entrypoints.web.address=:80" in traefik
    assert "--entrypoints.websecure.address=:443" in traefik
    assert ("KUBECONFIG", "/etc/kubernetes/traefik.conf") in p.component("traefik").env  # type: ignore[union-attr]
    assert [f.path for f in p.files] == ["/etc/containerd/config.toml", CNI_TEMPLATE]
    assert {k.path for k in p.kubeconfigs} == {
        "/etc/kubernetes/admin.conf", "/etc/kubernetes/controller-manager.conf",
        "/etc/kubernetes/kubelet.conf", "/etc/kubernetes/scheduler.conf",
        "/etc/kubernetes/kube-proxy.conf", "/etc/kubernetes/traefik.conf"}
    assert all(k.mode == 0o600 for k in p.kubeconfigs)
    assert p.admin_copy == "/etc/rancher/k3s/k3s.yaml" and p.admin_copy_mode == 0o600
    certs = {s.name for s in p.certs}
    assert {"ca", "etcd/ca", "front-proxy-ca", "sa", "apiserver", "kubelet", "admin"} <= certs


def test_the_plan_is_a_pure_function() -> None:
    data = {"k3s": {"enabled": True, "args": ["--node-label=a=b"]}}
    assert plan(data) == plan(data)


def test_the_apiserver_certificate_names_every_address() -> None:
    p = plan({"k3s": {"enabled": True, "args": ["--tls-san=vip.example.com,10.0.0.100"]}})
    api = next(s for s in p.certs if s.name == "apiserver")
    assert {"10.43.0.1", "127.0.0.1", "192.168.1.10", "10.0.0.100"} <= set(api.ips)  # type: ignore[union-attr]
    assert {"kubernetes.default.svc.cluster.local", "edge-1", "vip.example.com"} <= set(api.dns)  # type: ignore[union-attr]
    kubelet = next(s for s in p.certs if s.name == "kubelet")
    assert kubelet.cn == "system:node:edge-1" and kubelet.orgs == ("system:nodes",)  # type: ignore[union-attr]


def test_labels_and_taints() -> None:
    p = plan({"k3s": {"enabled": True, "args": [
        "--node-label=env=edge", "--node-label=node.kubernetes.io/pool=a",
        "--node-label=kubernetes.io/role=special", "--node-taint=edge=true:NoSchedule"]}})
    assert dict(p.labels)["env"] == "edge"
    kubelet = argv(p, "kubelet")
    labels = next(f for f in kubelet if f.startswith("--node-labels="))
    # The kubelet may set its own pool label, not kubernetes.io/role: that one is reconciled
    # with the admin credentials.
    assert labels == "--node-labels=env=edge,node.kubernetes.io/pool=a"
    assert dict(p.labels)["kubernetes.io/role"] == "special"
    assert "--register-with-taints=edge=true:NoSchedule" in kubelet


def test_an_agent_joins_with_token_and_server() -> None:
    p = plan({"k3s-agent": {"enabled": True, "args": ["--node-label=env=edge"]},
              "kubernetes": {"token": "shared", "server": "192.168.1.2"}})
    assert p.role == "agent" and p.server_url == "https://192.168.1.2:6443"
    assert p.local_api == p.server_url
    assert p.token == derive("shared") and not p.token_generated and p.tokens == ()
    assert names(p) == ["containerd", "kubelet", "kube-proxy"]
    kubelet = argv(p, "kubelet")
    assert "--bootstrap-kubeconfig=/etc/kubernetes/agent/bootstrap-kubelet.conf" in kubelet
    assert "--rotate-certificates=true" in kubelet
    assert "--client-ca-file=/etc/kubernetes/agent/ca.crt" in kubelet
    assert "--node-labels=env=edge" in kubelet
    assert dict(p.labels) == {"env": "edge"}
    assert p.certs == ()
    specs = {k.path: k for k in p.kubeconfigs}
    assert specs["/etc/kubernetes/agent/bootstrap-kubelet.conf"].bootstrap
    assert specs["/etc/kubernetes/agent/kube-proxy.conf"].cert_file == \
        "/var/lib/kubelet/pki/kubelet-client-current.pem"


@pytest.mark.parametrize("data", [
    {"k3s-agent": {"enabled": True, "args": ["--token=t", "--server=https://s:6443"]}},
    {"k3s-agent": {"enabled": True, "env": {"K3S_TOKEN": "t", "K3S_URL": "https://s:6443"}}},
    {"k3s-agent": {"enabled": True}, "kubernetes": {"token": "t", "server": "s"}},
    {"k3s-agent": {"enabled": True, "args": ["-t", "t"]}, "kubernetes": {"server": "s:6443"}},
])
def test_the_join_can_be_written_the_k3s_way_or_ours(data: dict[str, Any]) -> None:
    p = plan(data)
    assert p.server_url == "https://s:6443" and p.token == derive("t")


@pytest.mark.parametrize("data,words", [
    ({"k3s-agent": {"enabled": True}, "kubernetes": {"server": "s"}}, "needs the cluster's token"),
    ({"k3s-agent": {"enabled": True}, "kubernetes": {"token": "t"}}, "address of a server"),
    ({"k3s-agent": {"enabled": True, "args": ["--token=a"]},
      "kubernetes": {"token": "b", "server": "s"}}, "set differently"),
    ({"k3s-agent": {"enabled": True, "env": {"K3S_URL": "https://x:6443"}},
      "kubernetes": {"token": "b", "server": "y"}}, "server address is set differently"),
    ({"k3s-agent": {"enabled": True},
      "kubernetes": {"token": "b", "server": "http://s:6443"}}, "not a server address"),
    ({"k3s-agent": {"enabled": True, "env": {"K3S_CLUSTER_SECRET": "x"}},
      "kubernetes": {"token": "b", "server": "s"}}, "K3S_CLUSTER_SECRET: unknown k3s variable"),
    ({"k3s-agent": {"enabled": True, "args": ["--node-label=node-role.kubernetes.io/x=y"]},
      "kubernetes": {"token": "b", "server": "s"}}, "may not set labels"),
    ({"k3s": {"enabled": True, "args": ["--cluster-cidr=10.43.0.0/16"]}}, "overlap"),
    ({"k3s": {"enabled": True, "args": ["--cluster-cidr=10.42.0.0/25"]}}, "smaller than"),
    ({"k3s": {"enabled": True, "embedded_registry": True}}, "embedded_registry"),
    ({"k3s": {"enabled": True, "args": ["--flannel-iface=wg0"]}}, "no IPv4 address"),
])
def test_bad_plans_are_refused(data: dict[str, Any], words: str) -> None:
    with pytest.raises(BadInput) as err:
        plan(data)
    assert words in err.value.message


def test_node_ip_and_name_choices() -> None:
    assert plan({"k3s": {"enabled": True, "args": ["--node-ip=10.99.0.5"]}}).node_ip == "10.99.0.5"
    assert plan({"k3s": {"enabled": True, "args": ["--flannel-iface=eth1"]}}).node_ip == \
        "10.99.0.5"
    assert plan({"k3s": {"enabled": True, "args": ["--node-name=n1"]}}).node_name == "n1"
    assert plan({"k3s": {"enabled": True, "env": {"K3S_NODE_NAME": "n2"}}}).node_name == "n2"
    assert plan({"k3s": {"enabled": True, "args": ["--with-node-id"]}}).node_name == \
        "edge-1-01234567"
    with pytest.raises(BadInput, match="no IPv4 address"):
        plan({"k3s": {"enabled": True}}, replace(FACTS, addresses=()))
    with pytest.raises(BadInput, match="not a valid Kubernetes node name"):
        plan({"k3s": {"enabled": True}}, replace(FACTS, hostname="under_score"))


def test_network_and_listener_flags() -> None:
    p = plan({"k3s": {"enabled": True, "args": [
        "--cluster-cidr=10.52.0.0/16", "--service-cidr=10.53.0.0/16",
        "--cluster-dns=10.53.0.10", "--cluster-domain=edge.local",
        "--advertise-address=192.168.1.99", "--bind-address=192.168.1.10",
        "--https-listen-port=7443", "--service-node-port-range=30000-30100"]}})
    assert p.service_ip == "10.53.0.1" and p.api_port == 7443
    assert p.server_url == "https://192.168.1.99:7443"
    assert p.local_api == "https://192.168.1.10:7443"
    api = argv(p, "kube-apiserver")
    assert "--bind-address=192.168.1.10" in api and "--secure-port=7443" in api
    assert "--service-node-port-range=30000-30100" in api
    assert "--service-account-issuer=https://kubernetes.default.svc.edge.local" in api
    kubelet = argv(p, "kubelet")
    assert "--cluster-dns=10.53.0.10" in kubelet and "--cluster-domain=edge.local" in kubelet
    assert "--cluster-cidr=10.52.0.0/16" in argv(p, "kube-proxy")
    api_cert = next(s for s in p.certs if s.name == "apiserver")
    assert "10.53.0.1" in api_cert.ips and "192.168.1.99" in api_cert.ips  # type: ignore[union-attr]


def test_disabling_components() -> None:
    p = plan({"k3s": {"enabled": True, "args": ["--disable=traefik", "--disable-kube-proxy",
                                                "--disable-scheduler",
                                                "--flannel-backend=none"]}})
    assert names(p) == ["containerd", "etcd", "kube-apiserver", "kube-controller-manager",
                        "kubelet"]
    assert [f.path for f in p.files] == ["/etc/containerd/config.toml"]
    assert 'conf_template = ""' in p.files[0].content
    assert {k.path for k in p.kubeconfigs} == {"/etc/kubernetes/admin.conf",
                                               "/etc/kubernetes/controller-manager.conf",
                                               "/etc/kubernetes/kubelet.conf"}


def test_user_component_flags_replace_the_providers() -> None:
    p = plan({"k3s": {"enabled": True, "args": ["--kubelet-arg=fail-swap-on=true",
                                                "--kubelet-arg=max-pods=20",
                                                "--kube-proxy-arg=proxy-mode=ipvs"]}})
    kubelet = argv(p, "kubelet")
    assert "--fail-swap-on=false" not in kubelet and kubelet[-2:] == ["--fail-swap-on=true",
                                                                      "--max-pods=20"]
    assert "--proxy-mode=iptables" not in argv(p, "kube-proxy")


def test_containerd_config_follows_the_image_and_the_flags() -> None:
    p = plan({"k3s": {"enabled": True, "args": ["--pause-image=my/pause:9",
                                                "--snapshotter=native", "--debug"]}},
             replace(FACTS, systemd=False))
    conf = p.files[0].content
    assert 'sandbox_image = "my/pause:9"' in conf and 'snapshotter = "native"' in conf
    assert "SystemdCgroup = false" in conf and "restrict_oom_score_adj = true" in conf
    assert "--cgroup-driver=cgroupfs" in argv(p, "kubelet")
    assert "--v=2" in argv(p, "kube-apiserver")


def test_env_goes_to_every_component_but_k3s_variables_are_read() -> None:
    p = plan({"k3s": {"enabled": True, "env": {"HTTP_PROXY": "http://proxy:3128",
                                               "K3S_KUBECONFIG_MODE": "0644",
                                               "K3S_TOKEN": "t"}}})
    assert p.env == (("HTTP_PROXY", "http://proxy:3128"),)
    assert all(("HTTP_PROXY", "http://proxy:3128") in c.env for c in p.components)
    assert p.admin_copy_mode == 0o644 and p.token == derive("t") and not p.token_generated


def test_tokens_of_a_server() -> None:
    stored = replace(FACTS, stored_token="ghijkl.0123456789ghijkl")
    p = plan({"k3s": {"enabled": True}}, stored)
    assert p.token.value == "ghijkl.0123456789ghijkl" and not p.token_generated
    p = plan({"k3s": {"enabled": True, "args": ["--token=a", "--agent-token=b"]}})
    assert p.tokens == (derive("a"), derive("b"))
    assert "--token" not in str(p.to_json()) and p.token.secret not in str(p.to_json())


def test_k0s_blocks_map_to_the_same_roles() -> None:
    p = plan({"k0s": {"enabled": True, "args": ["--single", "--labels=a=b"]}})
    assert p.distro == "k0s" and p.role == "server" and dict(p.labels)["a"] == "b"
    p = plan({"k0s-worker": {"enabled": True, "args": ["--taints=x=y:NoSchedule"]},
              "kubernetes": {"token": "t", "server": "s"}})
    assert p.role == "agent" and [str(t) for t in p.taints] == ["x=y:NoSchedule"]


def test_a_role_decided_elsewhere_overrides_the_config() -> None:
    decision = Decision(role="agent", server="10.0.0.1", token="p2p-token",
                        args=("--node-label=p2p=yes",))
    p = plan({"k3s": {"enabled": True, "args": ["--node-label=own=yes"]}}, decision=decision)
    assert p.role == "agent" and p.server_url == "https://10.0.0.1:6443"
    assert p.token == derive("p2p-token")
    assert dict(p.labels) == {"p2p": "yes", "own": "yes"}
    # replace_args: only the user's flags.
    p = plan({"k3s": {"enabled": True, "replace_args": True, "args": ["--node-label=own=yes"]}},
             decision=decision)
    assert dict(p.labels) == {"own": "yes"}
    # server-only flags of a k3s block do not fit an agent role
    with pytest.raises(BadInput, match="server flag"):
        plan({"k3s": {"enabled": True, "args": ["--tls-san=x"]}}, decision=decision)


def test_versions_and_a_missing_manifest() -> None:
    assert plan({"k3s": {"enabled": True}, "kubernetes": {"version": "v1.20"}}).warnings == ()
    p = plan({"k3s": {"enabled": True}, "kubernetes": {"version": "1.21"}})
    assert any("carries Kubernetes 1.20.2" in w for w in p.warnings)
    p = plan({"k3s": {"enabled": True}}, manifest=None)
    assert p.version == "" and any("no /usr/lib/kairos/kubernetes.json" in w for w in p.warnings)
    assert version_matches("1.20", "1.20.2") and not version_matches("1.2", "1.20.2")


def test_server_urls() -> None:
    assert parse_server_url("10.0.0.1", "x") == "https://10.0.0.1:6443"
    assert parse_server_url("https://k.example.com:7443/", "x") == "https://k.example.com:7443"
    assert parse_server_url("[fd00::1]:6443", "x") == "https://[fd00::1]:6443"
    for bad in ("ftp://x", "https://x:6443/api", "https://u@x", "https://x:99999"):
        with pytest.raises(BadInput):
            parse_server_url(bad, "x")


def test_which_labels_a_kubelet_may_set() -> None:
    assert kubelet_may_set("env") and kubelet_may_set("example.com/x")
    assert kubelet_may_set("node.kubernetes.io/pool")
    assert kubelet_may_set("topology.kubernetes.io/zone")
    assert not kubelet_may_set("node-role.kubernetes.io/master")
    assert not kubelet_may_set("kubernetes.io/role")
    assert not kubelet_may_set("foo.k8s.io/x")


def test_manifest_parsing() -> None:
    m = parse_manifest('{"kubernetes_version": "1.20.2", "pause_image": "p:1", '
                       '"images": ["/usr/share/kairos/images/pause.tar"]}')
    assert m.kubernetes_version == "1.20.2" and m.images == ("/usr/share/kairos/images/pause.tar",)
    for bad in ("[]", "{", '{"pause_image": ""}', '{"pause_image": "p", "images": ["rel"]}',
                '{"pause_image": "p", "etcd_version": 3}'):
        with pytest.raises(BadInput):
            parse_manifest(bad)


def test_the_builds_manifest_names_binaries_and_the_cni_dir() -> None:
    """The standard build's manifest has more keys (its own) and may place programs."""
    m = parse_manifest('{"kubernetes_version": "1.20.2", "pause_image": "p:1", '
                       '"images": [], "binaries": {"kubelet": "/opt/k8s/kubelet", '
                       '"traefik": "/usr/bin/traefik"}, "cni_bin_dir": "/opt/cni/bin", '
                       '"traefik_args": ["--global.checknewversion=false"], '
                       '"disabled_units": ["containerd.service"], "packages": {}}')
    p = plan({"k3s": {"enabled": True}}, manifest=m)
    assert argv(p, "kubelet")[0] == "/opt/k8s/kubelet"
    assert argv(p, "etcd")[0] == "/usr/bin/etcd"
    assert 'bin_dir = "/opt/cni/bin"' in p.files[0].content
    with pytest.raises(BadInput, match="malformed"):
        parse_manifest('{"pause_image": "p", "binaries": {"kubelet": "kubelet"}}')
