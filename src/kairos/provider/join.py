"""An agent's discovery of its server, the way `kubeadm join --token` does it.

1. Fetch kube-public/cluster-info from https://SERVER/ without trusting the TLS certificate
   (the agent has no CA yet; anyone may read this ConfigMap).
2. Check `jws-kubeconfig-<token id>` in it: a detached HS256 JWS of its kubeconfig, keyed
   with the token secret (token.py). Only a server that holds the token can have made it, so
   a wrong server, or someone in between, is refused.
3. Take the CA from that kubeconfig, and fetch cluster-info once more, now checking that
   the server's certificate chains to it.

The kubelet does the rest with the bootstrap token (TLS bootstrapping, plan.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import yaml

from kairos.errors import KairosError
from kairos.provider.token import JWS_PREFIX, BootstrapToken, verify_detached

log = logging.getLogger("kairos.provider")

CLUSTER_INFO = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
HINT = "check kubernetes.server and kubernetes.token against the server's"

Fetch = Callable[[str, bytes | None, float], bytes]


class NotReady(KairosError):
    """The server is not there yet, or has not published what the agent needs: try again."""


class Refused(KairosError):
    """What the server sent is not to be trusted: trying again will not help."""


def parse_cluster_info(body: bytes, token: BootstrapToken, server: str) -> bytes:
    """The CA (PEM) of a cluster-info ConfigMap (JSON) whose signature checks out."""
    try:
        doc: Any = json.loads(body)
    except ValueError:
        raise NotReady(f"{server} did not answer with JSON", HINT) from None
    data = doc.get("data") if isinstance(doc, dict) else None
    kubeconfig = data.get("kubeconfig") if isinstance(data, dict) else None
    if not isinstance(kubeconfig, str) or not kubeconfig:
        raise NotReady(f"{server} has no cluster-info yet", "the server may still be starting")
    signature = data.get(f"{JWS_PREFIX}{token.id}") if isinstance(data, dict) else None
    if not isinstance(signature, str):
        raise NotReady(f"cluster-info on {server} is not signed for token id {token.id}",
                       "the token is wrong, or the server's controller-manager is still "
                       "starting")
    if not verify_detached(signature, kubeconfig.encode(), token):
        raise Refused(f"cluster-info on {server} has a signature that does not match the "
                      "token: this is not the server the token belongs to", HINT)
    return _ca_of(kubeconfig, server)


def _ca_of(kubeconfig: str, server: str) -> bytes:
    try:
        doc: Any = yaml.safe_load(kubeconfig)
        cluster = doc["clusters"][0]["cluster"]
        ca = base64.b64decode(cluster["certificate-authority-data"], validate=True)
    except (yaml.YAMLError, KeyError, IndexError, TypeError, binascii.Error):
        raise Refused(f"the kubeconfig in cluster-info on {server} has no CA", HINT) from None
    if b"-----BEGIN CERTIFICATE-----" not in ca:
        raise Refused(f"the CA in cluster-info on {server} is not a PEM certificate", HINT)
    return ca


def fetch_cluster_info(server: str, ca: bytes | None, timeout: float) -> bytes:
    """GET cluster-info; with `ca`, the server's certificate must chain to it (its name is
    not checked: agents may reach the server by an address its certificate does not list)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    if ca is None:
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=ca.decode())
    request = urllib.request.Request(server + CLUSTER_INFO,
                                     headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
            body: bytes = resp.read(1 << 20)
            return body
    except urllib.error.HTTPError as exc:
        raise NotReady(f"{server} answered {exc.code} for cluster-info",
                       "the server may still be starting") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise Refused(f"{server}'s certificate is not signed by the CA in its "
                          f"cluster-info: {reason.verify_message}", HINT) from None
        raise NotReady(f"cannot reach {server}: {reason}", "is the server up?") from None


def discover(server: str, token: BootstrapToken, *, wait: float, fetch: Fetch = fetch_cluster_info,
             sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic, retry: float = 5.0) -> bytes:
    """The cluster's CA, checked with the token; waits up to `wait` seconds for the server."""
    deadline = clock() + wait
    while True:
        try:
            ca = parse_cluster_info(fetch(server, None, 10.0), token, server)
            again = parse_cluster_info(fetch(server, ca, 10.0), token, server)
            if again != ca:
                raise Refused(f"{server} gave two different CAs", HINT)
            return ca
        except NotReady as exc:
            if clock() + retry > deadline:
                raise NotReady(f"joining {server} timed out: {exc.message}", exc.hint) from None
            log.info("waiting for the server: %s", exc.message)
            sleep(retry)
