"""k3s and k0s flags → what the components take; every refusal names the flag."""

from __future__ import annotations

import pytest

from kairos.errors import EXIT_BAD_INPUT, BadInput
from kairos.provider.args import Taint, parse_k0s_args, parse_k3s_args


def test_every_mapped_server_flag() -> None:
    o = parse_k3s_args([
        "--node-label=env=edge", "--node-label", "zone=a", "--node-taint=dedicated=edge:NoSchedule",
        "--node-taint", "gpu:NoExecute", "--node-ip=192.168.1.5", "--node-name=Edge-1",
        "--with-node-id", "--flannel-iface=eth1", "--cluster-cidr=10.52.0.0/16",
        "--service-cidr=10.53.0.0/16", "--cluster-dns=10.53.0.10",
        "--cluster-domain=edge.local", "--service-node-port-range=30000-31000",
        "--tls-san=a.example.com,10.9.9.9", "--tls-san", "B.example.com",
        "--disable=traefik,servicelb", "--disable", "coredns", "--disable-kube-proxy",
        "--disable-scheduler", "--token=secret", "--agent-token=agentsecret",
        "--advertise-address=192.168.1.6", "--bind-address=0.0.0.0",
        "--https-listen-port=7443", "--resolv-conf=/etc/my-resolv.conf",
        "--protect-kernel-defaults", "--pause-image=example.org/pause:1",
        "--snapshotter=native", "--write-kubeconfig=/root/k.yaml",
        "--write-kubeconfig-mode=0644", "--debug", "--cluster-init",
        "--disable-cloud-controller", "--disable-network-policy",
    ], "server")
    assert o.labels == {"env": "edge", "zone": "a"}
    assert o.taints == [Taint("dedicated", "edge", "NoSchedule"), Taint("gpu", "", "NoExecute")]
    assert str(o.taints[1]) == "gpu:NoExecute"
    assert (o.node_ip, o.node_name, o.with_node_id, o.flannel_iface) == \
        ("192.168.1.5", "edge-1", True, "eth1")
    assert (o.cluster_cidr, o.service_cidr, o.cluster_dns, o.cluster_domain) == \
        ("10.52.0.0/16", "10.53.0.0/16", "10.53.0.10", "edge.local")
    assert o.service_node_port_range == "30000-31000"
    assert o.tls_sans == ["a.example.com", "10.9.9.9", "b.example.com"]
    assert o.disable == {"traefik", "kube-proxy", "kube-scheduler"}
    assert (o.token, o.agent_token) == ("secret", "agentsecret")
    assert (o.advertise_address, o.bind_address, o.https_port) == \
        ("192.168.1.6", "0.0.0.0", 7443)
    assert o.resolv_conf == "/etc/my-resolv.conf" and o.protect_kernel_defaults
    assert (o.pause_image, o.snapshotter) == ("example.org/pause:1", "native")
    assert (o.write_kubeconfig, o.write_kubeconfig_mode) == ("/root/k.yaml", "0644")
    assert o.debug


def test_component_flags_pass_through_in_k3s_form_or_as_flags() -> None:
    o = parse_k3s_args(["--kubelet-arg=max-pods=50", "--kubelet-arg", "--v=3",
                        "--kube-apiserver-arg=audit-log-path=/var/log/audit.log",
                        "--kube-controller-manager-arg=node-monitor-period=2s",
                        "--kube-controller-arg=terminated-pod-gc-threshold=10",
                        "--kube-scheduler-arg=v=2", "--kube-proxy-arg=proxy-mode=ipvs",
                        "--etcd-arg=quota-backend-bytes=8589934592"], "server")
    assert o.extra == {
        "kubelet": ["--max-pods=50", "--v=3"],
        "kube-apiserver": ["--audit-log-path=/var/log/audit.log"],
        "kube-controller-manager": ["--node-monitor-period=2s",
                                    "--terminated-pod-gc-threshold=10"],
        "kube-scheduler": ["--v=2"], "kube-proxy": ["--proxy-mode=ipvs"],
        "etcd": ["--quota-backend-bytes=8589934592"]}


def test_one_item_with_spaces_is_split_like_a_shell() -> None:
    # Kairos joins args with spaces into one command line: "--flag value" is common.
    o = parse_k3s_args(["--node-label foo=bar --node-ip 10.1.2.3", "--tls-san 'x.example.com'"],
                       "server")
    assert o.labels == {"foo": "bar"} and o.node_ip == "10.1.2.3"
    assert o.tls_sans == ["x.example.com"]


def test_short_flags_and_boolean_values() -> None:
    o = parse_k3s_args(["-t", "tok", "-s", "https://s:6443", "--with-node-id=false",
                        "--protect-kernel-defaults=true"], "agent")
    assert (o.token, o.server) == ("tok", "https://s:6443")
    assert not o.with_node_id and o.protect_kernel_defaults


def _refused(args: list[str], role: str = "server", *, k0s: bool = False) -> str:
    with pytest.raises(BadInput) as err:
        (parse_k0s_args if k0s else parse_k3s_args)(args, role)
    assert err.value.exit_code == EXIT_BAD_INPUT
    return err.value.message


def test_an_unknown_flag_is_named() -> None:
    msg = _refused(["--node-label=a=b", "--frobnicate=1"])
    assert "unknown k3s flag --frobnicate" in msg and "k3s.args[1]" in msg


@pytest.mark.parametrize("flag", ["--data-dir=/x", "--datastore-endpoint=mysql://x",
                                  "--secrets-encryption", "--embedded-registry",
                                  "--token-file=/x", "--node-external-ip=1.2.3.4",
                                  "--private-registry=/x", "-d=/x", "--selinux",
                                  "--kube-cloud-controller-manager-arg=x=y"])
def test_known_but_unsupported_flags_say_why(flag: str) -> None:
    msg = _refused([flag])
    assert "not supported by this provider" in msg


@pytest.mark.parametrize("flag", ["--cluster-cidr=10.1.0.0/16", "--tls-san=x",
                                  "--disable=traefik", "--kube-apiserver-arg=v=2",
                                  "--etcd-arg=x=y", "--write-kubeconfig-mode=644",
                                  "--agent-token=x", "--flannel-backend=none"])
def test_server_flags_on_an_agent_are_refused(flag: str) -> None:
    msg = _refused([flag], "agent")
    assert flag.split("=")[0] in msg and ("server" in msg)


def test_server_flag_on_a_server_means_ha_which_is_refused() -> None:
    assert "HA" in _refused(["--server=https://other:6443"])


@pytest.mark.parametrize("args,words", [
    (["--node-ip"], "needs a value"),
    (["--node-label=novalue"], "not a node label"),
    (["--node-label=bad key=x"], "not a node label"),
    (["--node-taint=key=v:Sometimes"], "not a node taint"),
    (["--node-ip=fe80::1"], "IPv6"),
    (["--node-ip=10.0.0"], "not an IP address"),
    (["--cluster-cidr=10.42.0.0/16,fd00::/56"], "dual-stack"),
    (["--cluster-cidr=10.42.0.1/16"], "not a network CIDR"),
    (["--disable=dashboard"], "unknown component"),
    (["--flannel-backend=vxlan"], "no flannel"),
    (["--https-listen-port=99999"], "not a TCP port"),
    (["--write-kubeconfig-mode=rw"], "not a file mode"),
    (["--node-name=Not_Valid"], "not a valid node name"),
    (["--tls-san=bad_name!"], "neither an IP address nor a DNS name"),
    (["server"], "unexpected argument"),
    (["--node-label 'unterminated"], "cannot split"),
    (["--with-node-id=maybe"], "expected true or false"),
    (["--snapshotter=zfs"], "unknown snapshotter"),
])
def test_bad_values_are_refused_with_the_reason(args: list[str], words: str) -> None:
    assert words in _refused(args)


def test_k0s_flags_map() -> None:
    o = parse_k0s_args(["--single", "--enable-worker", "--no-taints",
                        "--labels=env=edge,zone=b", "--taints=gpu=true:NoSchedule",
                        "--kubelet-extra-args='--max-pods=30 --v=2'",
                        "--kube-controller-manager-extra-args='--node-monitor-period=3s'",
                        "--disable-components=kube-proxy,metrics-server,network-provider",
                        "-d"], "server")
    assert o.labels == {"env": "edge", "zone": "b"}
    assert o.taints == [Taint("gpu", "true", "NoSchedule")]
    assert o.extra == {"kubelet": ["--max-pods=30", "--v=2"],
                       "kube-controller-manager": ["--node-monitor-period=3s"]}
    assert o.disable == {"kube-proxy", "cni"} and o.debug


def test_k0s_worker_flags_and_refusals() -> None:
    o = parse_k0s_args(["--labels", "a=b", "--kubelet-extra-args", "--node-ip=10.0.0.9"],
                       "agent")
    assert o.labels == {"a": "b"} and o.extra == {"kubelet": ["--node-ip=10.0.0.9"]}
    assert "kubernetes.token" in _refused(["--token-file=/etc/k0s/token"], "agent", k0s=True)
    assert "ClusterConfig" in _refused(["--config=/etc/k0s/k0s.yaml"], k0s=True)
    assert "unknown k0s flag --frob" in _refused(["--frob"], k0s=True)
    assert "controller flag" in _refused(["--single"], "agent", k0s=True)
    assert "unknown component" in _refused(["--disable-components=x"], k0s=True)
