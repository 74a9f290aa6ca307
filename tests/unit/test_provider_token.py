"""Bootstrap tokens from the shared secret, and the detached JWS of cluster-info."""

from __future__ import annotations

import base64
import json

import pytest

from kairos.errors import BadInput
from kairos.provider import join
from kairos.provider.render import cluster_info_kubeconfig
from kairos.provider.token import (
    TOKEN_RE,
    BootstrapToken,
    derive,
    detached_signature,
    random_token,
    verify_detached,
)

# Kubernetes' own test vectors (cluster-bootstrap token/jws, go-jose v2 era): content, key,
# kid and the detached JWS the bootstrapsigner's function returns for them.
CONTENT = b"Hello from the other side. I must have called a thousand times."
K8S = BootstrapToken("joshua", "my voice is my passcode")
K8S_SIG = "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8"
K8S_EMPTY_SIG = ("eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9.."
                 "7Ui1ALizW4jXphVUB7xUqC9vLYLL9RZeOFfVLoB7Tgk")


def test_a_kubeadm_token_is_used_as_it_is() -> None:
    # The form `kubeadm token create` prints (the docs' example token).
    tok = derive("07401b.f395accd246ae52d")
    assert (tok.id, tok.secret) == ("07401b", "f395accd246ae52d")
    assert tok.value == "07401b.f395accd246ae52d"
    assert derive("  abcdef.0123456789abcdef\n").value == "abcdef.0123456789abcdef"


def test_any_secret_becomes_the_same_bootstrap_token_on_every_node() -> None:
    a, b = derive("my cluster secret"), derive("my cluster secret")
    assert a == b
    assert TOKEN_RE.match(a.value)
    assert derive("my cluster secret ") == a  # surrounding blanks are YAML noise
    assert derive("another secret") != a
    # A k3s-style token is just a secret here.
    assert TOKEN_RE.match(derive("K10abc::server:password").value)
    # Not the kubeadm form (upper case): derived, not taken.
    assert derive("ABCDEF.0123456789ABCDEF").value != "ABCDEF.0123456789ABCDEF"


def test_the_public_id_does_not_give_the_secret_away() -> None:
    # Two secrets sharing the id's HMAC would share ids; the secret comes from another
    # message, so ids and secrets are independent strings.
    tok = derive("s3cret")
    assert tok.secret[:6] != tok.id
    assert repr(tok).count(tok.secret) == 0


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(BadInput, match="empty"):
        derive("  ")


def test_random_tokens_have_the_bootstrap_form() -> None:
    values = {random_token() for _ in range(20)}
    assert len(values) == 20
    assert all(TOKEN_RE.match(v) for v in values)


def test_signatures_match_kubernetes_vectors() -> None:
    assert detached_signature(CONTENT, K8S) == K8S_SIG
    assert detached_signature(b"", K8S) == K8S_EMPTY_SIG
    assert verify_detached(K8S_SIG, CONTENT, K8S)
    assert verify_detached(K8S_EMPTY_SIG, b"", K8S)


@pytest.mark.parametrize("sig,content,token", [
    (K8S_SIG, CONTENT + b"!", K8S),  # changed content
    (K8S_SIG, CONTENT, BootstrapToken("joshua", "my voice is not my passcode")),  # key
    (K8S_SIG, CONTENT, BootstrapToken("joshub", "my voice is my passcode")),  # kid
    (K8S_SIG.replace("..", ".SGVsbG8.", 1), CONTENT, K8S),  # not detached
    ("not-a-jws", CONTENT, K8S),
    ("!!..!!", CONTENT, K8S),
])
def test_a_wrong_signature_is_refused(sig: str, content: bytes, token: BootstrapToken) -> None:
    assert not verify_detached(sig, content, token)


def test_a_header_with_another_algorithm_is_refused() -> None:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": "joshua"}).encode())
    sig = header.rstrip(b"=").decode() + ".." + K8S_SIG.split("..")[1]
    assert not verify_detached(sig, CONTENT, K8S)


CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _cluster_info(token: BootstrapToken | None, kubeconfig: str, *,
                  signer: BootstrapToken | None = None) -> bytes:
    """kube-public/cluster-info as the apiserver returns it, signed the way the
    controller-manager's bootstrapsigner signs it (key jws-kubeconfig-<token id>)."""
    data = {"kubeconfig": kubeconfig}
    if token is not None:
        data[f"jws-kubeconfig-{token.id}"] = detached_signature(kubeconfig.encode(),
                                                                signer or token)
    return json.dumps({"kind": "ConfigMap", "apiVersion": "v1",
                       "metadata": {"name": "cluster-info", "namespace": "kube-public"},
                       "data": data}).encode()


def test_cluster_info_signed_with_the_token_gives_the_ca() -> None:
    tok = derive("shared")
    body = _cluster_info(tok, cluster_info_kubeconfig(server="https://10.0.0.1:6443", ca=CA))
    assert join.parse_cluster_info(body, tok, "https://s") == CA


def test_cluster_info_without_our_signature_is_not_ready_yet() -> None:
    kc = cluster_info_kubeconfig(server="https://10.0.0.1:6443", ca=CA)
    with pytest.raises(join.NotReady, match="not signed for token id"):
        join.parse_cluster_info(_cluster_info(derive("other"), kc), derive("shared"), "s")
    with pytest.raises(join.NotReady):
        join.parse_cluster_info(b'{"data": {}}', derive("shared"), "s")
    with pytest.raises(join.NotReady):
        join.parse_cluster_info(b"<html>", derive("shared"), "s")


def test_a_forged_signature_is_refused() -> None:
    """A server that knows the token id (public) but not the secret cannot sign."""
    tok = derive("shared")
    kc = cluster_info_kubeconfig(server="https://10.0.0.1:6443", ca=CA)
    forged = _cluster_info(tok, kc, signer=BootstrapToken(tok.id, "0" * 16))
    with pytest.raises(join.Refused, match="does not match"):
        join.parse_cluster_info(forged, tok, "https://evil")


def test_a_signed_kubeconfig_without_a_ca_is_refused() -> None:
    tok = derive("shared")
    with pytest.raises(join.Refused, match="no CA"):
        join.parse_cluster_info(_cluster_info(tok, "clusters: []\n"), tok, "s")


def test_discover_waits_for_the_server_then_checks_the_ca_twice() -> None:
    tok = derive("shared")
    body = _cluster_info(tok, cluster_info_kubeconfig(server="https://s:6443", ca=CA))
    calls: list[bytes | None] = []
    answers = [join.NotReady("down"), body, body]

    def fetch(server: str, ca: bytes | None, timeout: float) -> bytes:
        calls.append(ca)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    slept: list[float] = []
    assert join.discover("https://s:6443", tok, wait=60, fetch=fetch, sleep=slept.append,
                         clock=lambda: 0.0) == CA
    assert calls == [None, None, CA]  # the second fetch trusts only the CA just learnt
    assert slept == [5.0]


def test_discover_gives_up_after_the_wait() -> None:
    now = [0.0]

    def fetch(server: str, ca: bytes | None, timeout: float) -> bytes:
        raise join.NotReady("cannot reach s", "is the server up?")

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(join.NotReady, match="timed out"):
        join.discover("https://s:6443", derive("x"), wait=12, fetch=fetch, sleep=sleep,
                      clock=lambda: now[0])
