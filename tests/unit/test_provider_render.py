"""What the provider writes: units, containerd's config, the CNI template, kubeconfigs, the
join objects; and how it decides what changed."""

from __future__ import annotations

import base64
import json
import shlex
import tomllib
from pathlib import Path
from typing import Any

import yaml

from kairos.provider import kube, objects, units
from kairos.provider.args import Taint
from kairos.provider.components import Component
from kairos.provider.render import (
    UNIT_MARKER,
    cluster_info_kubeconfig,
    cni_template,
    containerd_config,
    kubeconfig,
    systemd_quote,
    unit_text,
)
from kairos.provider.token import derive


def test_systemd_quoting_reads_back_as_the_argv() -> None:
    words = ["--a=b", "with space", 'quote"d', "50%", "$HOME", "back\\slash"]
    line = " ".join(systemd_quote(w) for w in words)
    # systemd's ExecStart splitting of a quoted word is the shell's, after $$ and %% undone.
    assert [w.replace("$$", "$").replace("%%", "%") for w in shlex.split(line)] == words
    assert systemd_quote("--plain=1") == "--plain=1"


def test_unit_text() -> None:
    text = unit_text(description="kubelet", argv=["/usr/bin/kubelet", "--v=2"],
                     env=[("HTTP_PROXY", "http://p:3128")], after=["kairos-containerd.service"],
                     notify=True, service=[("Delegate", "yes")], inputs_hash="abc",
                     conflicts=["containerd.service"])
    assert UNIT_MARKER in text and "# inputs: abc" in text
    assert "Type=notify" in text and "ExecStart=/usr/bin/kubelet --v=2" in text
    assert 'Environment="HTTP_PROXY=http://p:3128"' not in text  # no quotes needed
    assert "Environment=HTTP_PROXY=http://p:3128" in text
    assert "After=kairos-containerd.service" in text and "Restart=always" in text
    assert "Delegate=yes" in text and "Conflicts=containerd.service" in text
    assert "[Install]" not in text  # started by the provider, never enabled


def test_containerd_config_is_valid_toml_with_what_the_cri_needs() -> None:
    text = containerd_config(sandbox_image="registry.k8s.io/pause:3.2",
                             cni_bin_dir="/usr/lib/cni", cni_conf_dir="/etc/cni/net.d",
                             cni_template="/etc/containerd/cni-template.conflist",
                             systemd_cgroup=True, snapshotter="overlayfs")
    doc = tomllib.loads(text)
    assert doc["version"] == 2
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "registry.k8s.io/pause:3.2"
    assert cri["restrict_oom_score_adj"] is True
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert cri["containerd"]["runtimes"]["runc"]["runtime_type"] == "io.containerd.runc.v2"
    assert cri["cni"] == {"bin_dir": "/usr/lib/cni", "conf_dir": "/etc/cni/net.d",
                          "conf_template": "/etc/containerd/cni-template.conflist"}
    assert doc["grpc"]["address"] == "/run/containerd/containerd.sock"


def test_cni_template_once_filled_is_a_bridge_conflist() -> None:
    text = cni_template().replace("{{.PodCIDR}}", "10.42.0.0/24")
    doc = json.loads(text)
    bridge, portmap = doc["plugins"]
    assert bridge["type"] == "bridge" and bridge["isGateway"] and bridge["ipMasq"]
    assert bridge["hairpinMode"]
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.42.0.0/24"}]]
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}


def test_kubeconfigs() -> None:
    doc = yaml.safe_load(kubeconfig(server="https://127.0.0.1:6443", ca=b"CA", user="admin",
                                    client_cert=b"CRT", client_key=b"KEY"))
    assert doc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]) == b"CA"
    assert base64.b64decode(doc["users"][0]["user"]["client-key-data"]) == b"KEY"
    assert doc["current-context"] == "admin@kubernetes"
    boot = yaml.safe_load(kubeconfig(server="https://s:6443", ca=b"CA", user="b", token="a.b"))
    assert boot["users"][0]["user"] == {"token": "a.b"}
    files = yaml.safe_load(kubeconfig(server="https://s:6443", ca=b"CA", user="n",
                                      cert_file="/var/lib/kubelet/pki/kubelet-client-current.pem"))
    assert files["users"][0]["user"]["client-key"] == \
        "/var/lib/kubelet/pki/kubelet-client-current.pem"
    info = yaml.safe_load(cluster_info_kubeconfig(server="https://10.0.0.1:6443", ca=b"CA"))
    assert info["clusters"][0]["name"] == "" and info["users"] == []


def test_the_join_objects() -> None:
    docs = list(yaml.safe_load_all(objects.server_objects([derive("t")], "kubeconfig: x\n")))
    secret = docs[0]
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    assert secret["metadata"] == {"name": f"bootstrap-token-{derive('t').id}",
                                  "namespace": "kube-system"}
    data = secret["stringData"]
    assert data["token-id"] == derive("t").id and data["token-secret"] == derive("t").secret
    assert data["usage-bootstrap-authentication"] == "true"
    assert data["usage-bootstrap-signing"] == "true"
    assert data["auth-extra-groups"].startswith("system:bootstrappers:")
    bindings = {d["metadata"]["name"]: (d["roleRef"]["name"], d["subjects"][0]["name"])
                for d in docs if d["kind"] == "ClusterRoleBinding"}
    group = objects.BOOTSTRAP_GROUP
    assert bindings["kairos:kubelet-bootstrap"] == ("system:node-bootstrapper", group)
    assert bindings["kairos:node-autoapprove-bootstrap"] == (
        "system:certificates.k8s.io:certificatesigningrequests:nodeclient", group)
    assert bindings["kairos:node-autoapprove-certificate-rotation"] == (
        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "system:nodes")
    assert bindings["kairos:node-proxier"] == ("system:node-proxier", "system:nodes")
    cm = docs[-1]
    assert cm["metadata"] == {"name": "cluster-info", "namespace": "kube-public"}
    assert cm["data"] == {"kubeconfig": "kubeconfig: x\n"}
    anon = next(d for d in docs if d["kind"] == "RoleBinding")
    assert anon["subjects"][0]["name"] == "system:anonymous"


# -- change detection --------------------------------------------------------------------


def test_diff_units() -> None:
    d = units.diff_units({"a": "1", "b": "2", "old": "x"}, {"a": "1", "b": "3", "new": "4"})
    assert d.write == ("b", "new") and d.same == ("a",) and d.remove == ("old",)


def test_inputs_hash_follows_the_files(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    f = tmp_path / "etc/a.conf"
    first = units.inputs_hash(tmp_path, ["/etc/a.conf"])
    f.write_text("one")
    second = units.inputs_hash(tmp_path, ["/etc/a.conf"])
    f.write_text("two")
    third = units.inputs_hash(tmp_path, ["/etc/a.conf"])
    assert len({first, second, third}) == 3
    f.write_text("one")
    assert units.inputs_hash(tmp_path, ["/etc/a.conf"]) == second


class Ctl:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *args: str) -> None:
        self.calls.append(args)


def test_units_are_written_reloaded_started_and_removed(tmp_path: Path) -> None:
    comp = Component(name="kubelet", argv=("/usr/bin/kubelet", "--v=1"))
    wanted = {comp.unit: units.render_unit(tmp_path, comp)}
    ctl = Ctl()
    diff, changes = units.write_units(tmp_path, wanted, ctl=ctl)
    assert diff.write == ("kairos-kubelet.service",) and ctl.calls == [("daemon-reload",)]
    units.start_units([comp.unit], diff, changes, ctl=ctl)
    assert ctl.calls[-1] == ("restart", "--no-block", "kairos-kubelet.service")
    # Same text: no reload, only a start (a no-op for a running unit).
    ctl = Ctl()
    diff, changes = units.write_units(tmp_path, wanted, ctl=ctl)
    units.start_units([comp.unit], diff, changes, wait=True, ctl=ctl)
    assert ctl.calls == [("start", "kairos-kubelet.service")]
    # A unit not of ours in the same directory is never touched.
    other = tmp_path / "run/systemd/system/kairos-other.service"
    other.write_text("[Unit]\n")
    ctl = Ctl()
    assert units.remove_all(tmp_path, ctl=ctl) == ["kairos-kubelet.service"]
    assert ctl.calls == [("stop", "kairos-kubelet.service"), ("daemon-reload",)]
    assert not (tmp_path / "run/systemd/system/kairos-kubelet.service").exists()
    assert other.exists()


def test_label_and_taint_changes() -> None:
    assert kube.label_changes({"a": "1", "b": "2", "mine": "x", "theirs": "y"},
                              {"a": "1", "b": "3", "c": "4"}, ["mine", "gone"]) == \
        ["b=3", "c=4", "mine-"]
    current = [Taint("a", "1", "NoSchedule"), Taint("old", "", "NoExecute"),
               Taint("theirs", "", "NoSchedule")]
    wanted = [Taint("a", "2", "NoSchedule"), Taint("new", "", "NoSchedule")]
    assert kube.taint_changes(current, wanted, ["old:NoExecute", "a:NoSchedule"]) == \
        ["a=2:NoSchedule", "new:NoSchedule", "old:NoExecute-"]
    assert kube.taint_changes(wanted, wanted, []) == []


def test_parse_node() -> None:
    node: dict[str, Any] = {
        "metadata": {"name": "n1", "labels": {"a": "b"}},
        "spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"},
                            {"key": "k2", "effect": "NoExecute"}]},
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                  {"type": "Ready", "status": "True"}],
                   "nodeInfo": {"kubeletVersion": "v1.20.2"}}}
    state = kube.parse_node(json.dumps(node))
    assert state.ready == "True" and state.labels == {"a": "b"}
    assert state.taints == (Taint("k", "v", "NoSchedule"), Taint("k2", "", "NoExecute"))
    assert state.kubelet_version == "v1.20.2"


def test_environment_values_keep_their_dollars() -> None:
    text = unit_text(description="x", argv=["/bin/x"], env=[("PASS", "a$b c%d")])
    assert 'Environment="PASS=a$b c%%d"' in text
