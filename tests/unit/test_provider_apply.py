"""`kairos provider apply` with the outside world faked: systemd, kubectl, ctr, the server.
What is written, what is started in which order, and that an unchanged apply restarts
nothing while a changed label restarts only the kubelet."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from kairos.cli import main
from kairos.errors import BadInput
from kairos.provider import images
from kairos.provider.apply import Io, apply
from kairos.provider.config import from_cloud_config
from kairos.provider.facts import Facts
from kairos.provider.manifest import Manifest
from kairos.provider.render import cluster_info_kubeconfig
from kairos.provider.status import kubernetes_state
from kairos.provider.token import derive, detached_signature
from kairos.run import Result

CA = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
FACTS = Facts(hostname="agent-1", machine_id="ab" * 16, addresses=(("eth0", "10.0.2.15"),),
              default_iface="eth0", cni_bin_dir="/usr/lib/cni", systemd=True)
MANIFEST = Manifest("1.20.2", "3.4.23", "1.6.20", "3.0.4", "registry.k8s.io/pause:3.2",
                    ("/usr/share/kairos/images/pause.tar",))


def oci_archive(path: Path, name: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:00",
         "size": 1, "annotations": {"io.containerd.image.name": name,
                                    "org.opencontainers.image.ref.name": "3.2"}}]}).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("index.json")
        info.size = len(index)
        tar.addfile(info, io.BytesIO(index))


@dataclass
class World:
    """The machine around the provider: what commands see and answer."""

    root: Path
    calls: list[list[str]] = field(default_factory=list)
    ctl: list[tuple[str, ...]] = field(default_factory=list)
    images: set[str] = field(default_factory=set)
    node: dict[str, Any] = field(default_factory=dict)
    fetched: list[bytes | None] = field(default_factory=list)
    token: str = "shared"

    def run(self, argv: Sequence[str], check: bool = True, input: str | None = None,
            **_: Any) -> Result:
        args = [str(a) for a in argv]
        self.calls.append(args)
        out, rc = "", 0
        if args[:2] == ["systemctl", "is-active"]:
            rc = 3
        elif args[0] == "ctr" and args[-2:] == ["ls", "-q"]:
            out = "\n".join(sorted(self.images))
        elif args[0] == "ctr" and "import" in args:
            self.images.add("registry.k8s.io/pause:3.2")
        elif args[0] == "kubectl" and "get" in args and "node" in args:
            if not self.node:
                rc = 1
            out = json.dumps(self.node)
        elif args[0] == "kubectl" and "label" in args:
            for change in args[args.index("--overwrite") + 1:]:
                labels = self.node["metadata"]["labels"]
                if change.endswith("-"):
                    labels.pop(change[:-1], None)
                else:
                    k, _, v = change.partition("=")
                    labels[k] = v
        return Result(args, rc, out, "")

    def systemctl(self, *args: str) -> None:
        self.ctl.append(args)
        if "kairos-kubelet.service" in args and args[0] in ("start", "restart"):
            self.kubelet_registers()

    def fetch(self, server: str, ca: bytes | None, timeout: float) -> bytes:
        self.fetched.append(ca)
        kc = cluster_info_kubeconfig(server=server, ca=CA)
        tok = derive(self.token)
        return json.dumps({"data": {"kubeconfig": kc, f"jws-kubeconfig-{tok.id}":
                                    detached_signature(kc.encode(), tok)}}).encode()

    def io(self) -> Io:
        return Io(systemctl=self.systemctl, runner=self.run, fetch=self.fetch,
                  sleep=lambda s: None, clock=lambda: 0.0)

    def kubelet_registers(self) -> None:
        """What the kubelet does once the controller-manager signed its certificate."""
        conf = self.root / "etc/kubernetes/agent/kubelet.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text("apiVersion: v1\n")
        if self.node:
            return
        self.node = {"metadata": {"name": "agent-1", "labels": {"env": "edge"}},
                     "spec": {}, "status": {"conditions": [{"type": "Ready",
                                                            "status": "True"}]}}


@pytest.fixture
def world(tmp_path: Path) -> World:
    oci_archive(tmp_path / "usr/share/kairos/images/pause.tar", "registry.k8s.io/pause:3.2")
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    return World(tmp_path)


def agent_config(labels: Sequence[str] = ("env=edge",)) -> Any:
    return from_cloud_config({"k3s-agent": {"enabled": True,
                                            "args": [f"--node-label={x}" for x in labels]},
                              "kubernetes": {"token": "shared", "server": "10.0.2.2"}})


def run_agent(world: World, labels: Sequence[str] = ("env=edge",)) -> Any:
    return apply(world.root, config=agent_config(labels), facts=FACTS, manifest=MANIFEST,
                 io=world.io(), wait=5)


def test_an_agent_joins_starts_and_imports(world: World) -> None:
    result = run_agent(world)
    root = world.root
    # Discovery: once without trust, once with the CA learnt.
    assert world.fetched == [None, CA]
    assert (root / "etc/kubernetes/agent/ca.crt").read_bytes() == CA
    boot = root / "etc/kubernetes/agent/bootstrap-kubelet.conf"
    doc = yaml.safe_load(boot.read_text())
    assert doc["users"][0]["user"]["token"] == derive("shared").value
    assert doc["clusters"][0]["cluster"]["server"] == "https://10.0.2.2:6443"
    assert boot.stat().st_mode & 0o777 == 0o600
    proxy = yaml.safe_load((root / "etc/kubernetes/agent/kube-proxy.conf").read_text())
    assert proxy["users"][0]["user"]["client-certificate"].endswith("kubelet-client-current.pem")
    assert (root / "etc/containerd/config.toml").is_file()
    unit_dir = root / "run/systemd/system"
    assert sorted(p.name for p in unit_dir.iterdir()) == [
        "kairos-containerd.service", "kairos-kube-proxy.service", "kairos-kubelet.service"]
    # containerd first and waited for, images imported, then the rest without waiting.
    assert world.ctl == [("daemon-reload",), ("restart", "kairos-containerd.service"),
                         ("restart", "--no-block", "kairos-kubelet.service",
                          "kairos-kube-proxy.service")]
    assert result.images_imported == ["/usr/share/kairos/images/pause.tar"]
    record = json.loads((root / "var/lib/kairos/k8s/images.json").read_text())
    assert record["/usr/share/kairos/images/pause.tar"]["names"] == ["registry.k8s.io/pause:3.2"]
    assert result.role == "agent" and result.node_changes == []
    run_record = json.loads((root / "run/kairos/provider.json").read_text())
    assert run_record["role"] == "agent" and run_record["node_name"] == "agent-1"


def test_an_unchanged_apply_restarts_nothing(world: World) -> None:
    run_agent(world)
    world.ctl.clear()
    world.fetched.clear()
    world.calls.clear()
    result = run_agent(world)
    # Joined already: no discovery; the same units: only started (no-ops); no import.
    assert world.fetched == []
    assert world.ctl == [("start", "kairos-containerd.service"),
                         ("start", "--no-block", "kairos-kubelet.service",
                          "kairos-kube-proxy.service")]
    assert result.units_written == [] and result.images_imported == []
    assert result.files_written == []
    assert not any("import" in c for c in world.calls)
    assert not any(c[0] == "kubectl" for c in world.calls)  # labels known to be right


def test_a_changed_label_restarts_only_the_kubelet_and_labels_the_node(world: World) -> None:
    run_agent(world)
    world.ctl.clear()
    result = run_agent(world, labels=("env=lab", "tier=2"))
    assert ("daemon-reload",) in world.ctl
    assert ("restart", "--no-block", "kairos-kubelet.service") in world.ctl
    assert ("start", "--no-block", "kairos-kube-proxy.service") in world.ctl
    assert result.units_written == ["kairos-kubelet.service"]
    # The running node gets the new labels (the kubelet only sets them at registration).
    assert world.node["metadata"]["labels"] == {"env": "lab", "tier": "2"}
    assert result.node_changes == ["env=lab", "tier=2"]
    # And a label dropped from the config goes; one set by someone else stays.
    world.node["metadata"]["labels"]["theirs"] = "x"
    run_agent(world, labels=("env=lab",))
    assert world.node["metadata"]["labels"] == {"env": "lab", "theirs": "x"}


def test_a_new_server_resets_the_kubelets_credentials(world: World) -> None:
    run_agent(world)
    pem = world.root / "var/lib/kubelet/pki/kubelet-client-current.pem"
    pem.parent.mkdir(parents=True)
    pem.write_text("old")
    conf = world.root / "etc/kubernetes/agent/kubelet.conf"
    conf.write_text("old credentials")
    cfg = from_cloud_config({"k3s-agent": {"enabled": True},
                             "kubernetes": {"token": "shared", "server": "10.0.2.3"}})
    apply(world.root, config=cfg, facts=FACTS, manifest=MANIFEST, io=world.io(), wait=5)
    assert not pem.exists()
    # Removed before the kubelet started again (which bootstraps a new one: the fake's).
    assert conf.read_text() != "old credentials"


def test_disabling_kubernetes_stops_what_ran(world: World) -> None:
    run_agent(world)
    world.ctl.clear()
    result = apply(world.root, config=from_cloud_config({}), facts=FACTS, manifest=MANIFEST,
                   io=world.io())
    assert not result.enabled
    assert world.ctl[0][0] == "stop" and set(world.ctl[0][1:]) == {
        "kairos-containerd.service", "kairos-kubelet.service", "kairos-kube-proxy.service"}
    assert not list((world.root / "run/systemd/system").iterdir())
    assert not (world.root / "run/kairos/provider.json").exists()


def test_a_dry_run_changes_nothing(world: World) -> None:
    result = apply(world.root, config=agent_config(), facts=FACTS, manifest=MANIFEST,
                   io=world.io(), dry_run=True)
    assert result.plan is not None and result.plan["role"] == "agent"
    assert world.calls == [] and world.ctl == []
    assert not (world.root / "etc").exists()


def test_apply_refuses_without_kubernetes_in_the_image_or_systemd(world: World) -> None:
    with pytest.raises(BadInput, match="no Kubernetes"):
        apply(world.root, config=agent_config(), facts=FACTS, io=world.io())
    with pytest.raises(BadInput, match="running systemd"):
        apply(world.root, config=agent_config(), facts=replace(FACTS, systemd=False),
              manifest=MANIFEST, io=world.io())


def test_images_are_imported_again_when_containerd_lost_them(world: World) -> None:
    run_agent(world)
    world.images.clear()  # the kubelet's image GC, or a wiped store
    assert run_agent(world).images_imported == ["/usr/share/kairos/images/pause.tar"]


def test_archive_names_and_import_decisions(tmp_path: Path) -> None:
    oci_archive(tmp_path / "a.tar", "example.org/app:1")
    assert images.archive_names(tmp_path / "a.tar") == ("example.org/app:1",)
    assert images.archive_names(tmp_path / "missing.tar") == ()
    a = images.Archive("/a.tar", 10, 5, "sha", ("example.org/app:1",))
    record = {"/a.tar": {"size": 10, "mtime_ns": 5, "sha256": "sha",
                         "names": ["example.org/app:1"]}}
    assert images.unchanged(a, record, {"example.org/app:1"})
    assert not images.unchanged(replace(a, size=11), record, {"example.org/app:1"})
    assert not images.needs_import(a, record, {"example.org/app:1"})
    assert images.needs_import(replace(a, sha256="other"), record, {"example.org/app:1"})
    assert images.needs_import(a, record, set())
    assert images.needs_import(a, {}, {"example.org/app:1"})


def test_state_shows_the_node(world: World) -> None:
    (world.root / "usr/lib/kairos").mkdir(parents=True)
    (world.root / "usr/lib/kairos/kubernetes.json").write_text(json.dumps(MANIFEST.to_json()))
    assert kubernetes_state(world.root, query=False)["enabled"] is False
    run_agent(world)
    state = kubernetes_state(world.root, query=False)
    assert state["enabled"] and state["role"] == "agent" and state["node_name"] == "agent-1"
    assert state["version"] == "1.20.2" and state["ready"] == ""


def test_cli_dry_run_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "oem").mkdir()
    (tmp_path / "oem/90_custom.yaml").write_text(
        "#cloud-config\nk3s:\n  enabled: true\n  args: [--node-ip=10.1.1.1, --node-name=n1]\n")
    assert main(["provider", "apply", "--dry-run", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "k3s server node n1 (10.1.1.1)" in out and "kairos-kube-apiserver.service" in out
    assert main(["provider", "apply", "--dry-run", "--json", "--root", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plan"]["node_name"] == "n1" and data["dry_run"]
    (tmp_path / "oem/90_custom.yaml").write_text(
        "#cloud-config\nk3s:\n  enabled: true\n  args: [--frobnicate]\n")
    assert main(["provider", "apply", "--dry-run", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown k3s flag --frobnicate" in err and "Traceback" not in err
    (tmp_path / "oem/90_custom.yaml").write_text("#cloud-config\nhostname: x\n")
    assert main(["provider", "apply", "--dry-run", "--root", str(tmp_path)]) == 0
    assert "not enabled" in capsys.readouterr().out


def test_cli_kubeconfig(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kubeconfig", "--root", str(tmp_path)]) == 2
    assert "not a Kubernetes server" in capsys.readouterr().err
    (tmp_path / "etc/kubernetes").mkdir(parents=True)
    (tmp_path / "etc/kubernetes/admin.conf").write_text(yaml.safe_dump(
        {"apiVersion": "v1", "clusters": [{"name": "k", "cluster": {
            "server": "https://127.0.0.1:6443"}}]}))
    (tmp_path / "run/kairos").mkdir(parents=True)
    (tmp_path / "run/kairos/provider.json").write_text(json.dumps(
        {"node_ip": "10.0.2.15", "api_port": 6443}))
    assert main(["kubeconfig", "--root", str(tmp_path)]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["clusters"][0]["cluster"]["server"] == "https://10.0.2.15:6443"
    assert main(["kubeconfig", "--local", "--root", str(tmp_path)]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"


def fake_ensure(root: Path, specs: Sequence[Any]) -> Any:
    from kairos.provider.pki import PkiReport
    return PkiReport(issued=[s.name for s in specs]), {
        s.name: (f"CRT {s.name}".encode(), f"KEY {s.name}".encode()) for s in specs}


def test_a_server_publishes_the_join_objects_once(world: World,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kairos.provider.apply.ensure", fake_ensure)
    applied: list[str] = []
    base_run = world.run

    def run(argv: Sequence[str], check: bool = True, input: str | None = None,
            **kw: Any) -> Result:
        if list(argv[:1]) == ["kubectl"] and "apply" in argv:
            applied.append(input or "")
        return base_run(argv, check=check, input=input, **kw)

    world.node = {"metadata": {"name": "server-1", "labels": {}}, "spec": {}, "status": {}}
    cfg = from_cloud_config({"k3s": {"enabled": True, "args": ["--node-label=env=edge"]},
                             "kubernetes": {"token": "shared"}})
    facts = replace(FACTS, hostname="server-1")
    io_ = replace(world.io(), runner=run)
    result = apply(world.root, config=cfg, facts=facts, manifest=MANIFEST, io=io_, wait=5)
    root = world.root
    assert result.role == "server" and result.objects_applied
    assert len(applied) == 1
    docs = list(yaml.safe_load_all(applied[0]))
    assert docs[0]["stringData"]["token-id"] == derive("shared").id
    info = yaml.safe_load(docs[-1]["data"]["kubeconfig"])
    assert info["clusters"][0]["cluster"]["server"] == "https://10.0.2.15:6443"
    # The secret went through stdin only: no file holds it.
    assert not any(derive("shared").secret in p.read_text(errors="replace")
                   for p in root.rglob("*") if p.is_file() and "kubernetes" not in str(p))
    admin = yaml.safe_load((root / "etc/kubernetes/admin.conf").read_text())
    assert admin["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert (root / "etc/rancher/k3s/k3s.yaml").stat().st_mode & 0o777 == 0o600
    assert (root / "var/lib/etcd").stat().st_mode & 0o777 == 0o700
    assert world.node["metadata"]["labels"] == {
        "env": "edge", "node-role.kubernetes.io/master": "true",
        "node-role.kubernetes.io/control-plane": "true"}
    # The server's token was given: nothing generated, nothing stored.
    assert not (root / "etc/kubernetes/node-token").exists()
    started = [u for call in world.ctl if call[0] in ("start", "restart") for u in call[1:]
               if u.endswith(".service")]
    assert started == ["kairos-containerd.service", "kairos-etcd.service",
                       "kairos-kube-apiserver.service", "kairos-kube-controller-manager.service",
                       "kairos-kube-scheduler.service", "kairos-kubelet.service",
                       "kairos-kube-proxy.service", "kairos-traefik.service"]
    applied.clear()
    apply(world.root, config=cfg, facts=facts, manifest=MANIFEST, io=io_, wait=5)
    assert applied == []  # unchanged objects are not applied again


def test_a_server_without_a_token_keeps_the_one_it_made(world: World,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kairos.provider.apply.ensure", fake_ensure)
    cfg = from_cloud_config({"k3s": {"enabled": True}})
    facts = replace(FACTS, new_token="abcdef.0123456789abcdef")
    result = apply(world.root, config=cfg, facts=facts, manifest=MANIFEST, io=world.io(),
                   wait=1)
    token = world.root / "etc/kubernetes/node-token"
    assert token.read_text() == "abcdef.0123456789abcdef\n"
    assert token.stat().st_mode & 0o777 == 0o600
    assert "/etc/kubernetes/node-token" in result.files_written
    assert result.plan is not None and result.plan["token_generated"]


def test_a_server_turned_agent_stops_the_control_plane(world: World,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kairos.provider.apply.ensure", fake_ensure)
    server = from_cloud_config({"k3s": {"enabled": True}, "kubernetes": {"token": "shared"}})
    apply(world.root, config=server, facts=FACTS, manifest=MANIFEST, io=world.io(), wait=1)
    world.ctl.clear()
    result = run_agent(world)
    assert sorted(result.units_removed) == [
        "kairos-etcd.service", "kairos-kube-apiserver.service",
        "kairos-kube-controller-manager.service", "kairos-kube-scheduler.service",
        "kairos-traefik.service"]
    assert world.ctl[0][0] == "stop"
    # The kubelet now bootstraps against the server; containerd's config did not change.
    assert "kairos-kubelet.service" in result.units_restarted
    assert "kairos-containerd.service" in result.units_started
    # The server's kubeconfigs stay for a later turn back; the agent's files are apart.
    assert (world.root / "etc/kubernetes/agent/ca.crt").exists()
    assert (world.root / "etc/kubernetes/admin.conf").exists()


def test_run_stage_reconcile_applies_the_provider(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "oem").mkdir()
    (tmp_path / "oem/90_custom.yaml").write_text(
        "#cloud-config\nk3s:\n  enabled: true\n  args: [--frobnicate]\n")
    # A core image (no manifest): the provider is not even loaded.
    assert main(["run-stage", "reconcile", "--root", str(tmp_path), "--cmdline", ""]) == 0
    assert "frobnicate" not in capsys.readouterr().err
    (tmp_path / "usr/lib/kairos").mkdir(parents=True)
    (tmp_path / "usr/lib/kairos/kubernetes.json").write_text(json.dumps(MANIFEST.to_json()))
    assert main(["run-stage", "reconcile", "--root", str(tmp_path), "--cmdline", ""]) == 0
    assert "kubernetes provider: k3s.args[0]: unknown k3s flag --frobnicate" in \
        capsys.readouterr().err
    assert main(["run-stage", "reconcile", "--strict", "--root", str(tmp_path),
                 "--cmdline", ""]) == 2
