"""The provider's PKI with the real openssl CLI, and an agent's discovery over real TLS on
127.0.0.1 (nothing beyond loopback)."""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kairos.errors import KairosError
from kairos.provider import join
from kairos.provider.certs import server_certs
from kairos.provider.pki import RENEW_BEFORE, CertSpec, KeyPairSpec, ensure, load_record
from kairos.provider.render import cluster_info_kubeconfig
from kairos.provider.token import derive, detached_signature

pytestmark = pytest.mark.integration

SPECS = server_certs(node_name="edge-1", hostname="edge-1", node_ip="192.168.1.10",
                     service_cidr="10.43.0.0/16", cluster_domain="cluster.local",
                     tls_sans=["vip.example.com", "10.0.0.100"])
PKI = "etc/kubernetes/pki"


def openssl(*args: str | Path) -> str:
    return subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True,
                          text=True).stdout


def _cert(spec: CertSpec | KeyPairSpec) -> CertSpec:
    assert isinstance(spec, CertSpec)
    return spec


@pytest.fixture(scope="module")
def pki_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    report, _ = ensure(root, SPECS)
    assert len(report.issued) == len(SPECS)
    return root


def test_every_certificate_chains_to_its_ca(pki_root: Path) -> None:
    pki = pki_root / PKI
    for spec in SPECS:
        if isinstance(spec, KeyPairSpec) or spec.is_ca:
            continue
        out = openssl("verify", "-CAfile", pki / f"{spec.issuer}.crt", pki / f"{spec.name}.crt")
        assert out.strip().endswith(": OK"), spec.name
        # ... and not to another CA of the cluster
        other = "etcd/ca" if spec.issuer != "etcd/ca" else "ca"
        res = subprocess.run(["openssl", "verify", "-CAfile", pki / f"{other}.crt",
                              pki / f"{spec.name}.crt"], capture_output=True, text=True)
        assert res.returncode != 0, spec.name


def test_names_usages_and_key_modes(pki_root: Path) -> None:
    pki = pki_root / PKI
    text = openssl("x509", "-noout", "-text", "-in", pki / "apiserver.crt")
    for san in ("DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local", "DNS:localhost", "DNS:edge-1",
                "DNS:vip.example.com", "IP Address:10.43.0.1", "IP Address:127.0.0.1",
                "IP Address:192.168.1.10", "IP Address:10.0.0.100"):
        assert san in text, san
    assert "TLS Web Server Authentication" in text and "CA:FALSE" in text
    subject = openssl("x509", "-noout", "-subject", "-in", pki / "kubelet.crt")
    assert "O = system:nodes" in subject and "CN = system:node:edge-1" in subject
    assert "O = system:masters" in openssl("x509", "-noout", "-subject", "-in",
                                           pki / "admin.crt")
    ca = openssl("x509", "-noout", "-text", "-in", pki / "ca.crt")
    assert "CA:TRUE" in ca and "Certificate Sign" in ca
    etcd = openssl("x509", "-noout", "-text", "-in", pki / "etcd/server.crt")
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in etcd
    for key in pki.rglob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key
    assert (pki / "kairos-pki.json").stat().st_mode & 0o777 == 0o600
    # The service-account pair belongs together.
    pub = openssl("pkey", "-in", pki / "sa.key", "-pubout")
    assert pub.strip() == (pki / "sa.pub").read_text().strip()


def test_an_unchanged_boot_reuses_everything_without_openssl(
        pki_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p: p.read_bytes() for p in (pki_root / PKI).rglob("*") if p.is_file()}

    def no_openssl(*args: object, **kw: object) -> None:
        raise AssertionError("openssl ran")

    monkeypatch.setattr("kairos.provider.pki.run", no_openssl)
    report, pairs = ensure(pki_root, SPECS)
    assert report.issued == [] and len(report.kept) == len(SPECS)
    assert {p: p.read_bytes() for p in before} == before
    assert pairs["ca"][0] == before[pki_root / PKI / "ca.crt"]


def test_only_what_changed_is_issued_again(tmp_path: Path) -> None:
    report, _ = ensure(tmp_path, SPECS)
    ca = (tmp_path / PKI / "ca.crt").read_bytes()
    # A new node IP: the serving certificates change, the CAs and clients do not.
    moved = server_certs(node_name="edge-1", hostname="edge-1", node_ip="192.168.1.11",
                         service_cidr="10.43.0.0/16", cluster_domain="cluster.local",
                         tls_sans=["vip.example.com", "10.0.0.100"])
    report, _ = ensure(tmp_path, moved)
    assert sorted(report.issued) == ["apiserver", "etcd/peer", "etcd/server"]
    assert (tmp_path / PKI / "ca.crt").read_bytes() == ca
    assert "192.168.1.11" in openssl("x509", "-noout", "-ext", "subjectAltName", "-in",
                                     tmp_path / PKI / "apiserver.crt")
    # Near its end, a certificate is renewed; the CA (ten years) is not.
    end = load_record(tmp_path)["admin"]["not_after"]
    report, _ = ensure(tmp_path, moved, now=end - RENEW_BEFORE + 60)
    assert "admin" in report.issued and "ca" not in report.issued
    # A key changed behind the provider's back (or half written): issued again.
    (tmp_path / PKI / "scheduler.key").write_bytes(b"junk")
    assert ensure(tmp_path, moved)[0].issued == ["scheduler"]
    # A deleted certificate comes back.
    (tmp_path / PKI / "traefik.crt").unlink()
    assert ensure(tmp_path, moved)[0].issued == ["traefik"]


def test_a_ca_is_never_replaced_behind_the_clusters_back(tmp_path: Path) -> None:
    ensure(tmp_path, SPECS[:1])
    (tmp_path / PKI / "ca.key").unlink()
    with pytest.raises(KairosError, match="missing but its pair is there"):
        ensure(tmp_path, SPECS[:1])
    # A pair restored by hand (not in the record) is adopted when it belongs together...
    other = tmp_path / "other"
    other.mkdir()
    ensure(other, SPECS[:2])
    (tmp_path / PKI / "ca.key").write_bytes((other / PKI / "ca.key").read_bytes())
    (tmp_path / PKI / "ca.crt").write_bytes((other / PKI / "ca.crt").read_bytes())
    assert ensure(tmp_path, SPECS[:1])[0].kept == ["ca"]
    # ... and refused when it does not.
    (tmp_path / PKI / "ca.key").write_bytes((other / PKI / "etcd/ca.key").read_bytes())
    with pytest.raises(KairosError, match="do not belong together"):
        ensure(tmp_path, SPECS[:1])


# -- discovery over TLS ------------------------------------------------------------------


def _serve(crt: Path, key: Path, body: bytes) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != join.CLUSTER_INFO:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _cluster_info(ca: bytes, token_text: str) -> bytes:
    kc = cluster_info_kubeconfig(server="https://192.168.1.10:6443", ca=ca)
    tok = derive(token_text)
    return json.dumps({"data": {"kubeconfig": kc, f"jws-kubeconfig-{tok.id}":
                                detached_signature(kc.encode(), tok)}}).encode()


def test_an_agent_learns_the_ca_from_a_real_tls_server(pki_root: Path) -> None:
    pki = pki_root / PKI
    ca = (pki / "ca.crt").read_bytes()
    for url in _serve(pki / "apiserver.crt", pki / "apiserver.key", _cluster_info(ca, "s3")):
        assert join.discover(url, derive("s3"), wait=5) == ca
        start = time.monotonic()
        with pytest.raises(join.NotReady, match="not signed for token id"):
            join.discover(url, derive("wrong"), wait=0, sleep=lambda s: None)
        assert time.monotonic() - start < 5


def test_a_server_whose_certificate_is_not_of_the_published_ca_is_refused(
        pki_root: Path, tmp_path: Path) -> None:
    """A man in the middle that relays a genuinely signed cluster-info, but serves TLS with
    its own certificate, is caught by the second, verified fetch."""
    ensure(tmp_path, SPECS)
    pki = pki_root / PKI
    ca = (pki / "ca.crt").read_bytes()
    evil = tmp_path / PKI
    for url in _serve(evil / "apiserver.crt", evil / "apiserver.key", _cluster_info(ca, "s3")):
        with pytest.raises(join.Refused, match="not signed by the CA"):
            join.discover(url, derive("s3"), wait=5)
