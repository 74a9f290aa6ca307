"""Bootstrap tokens and the detached JWS that signs `cluster-info`: Kubernetes' own join.

A Kubernetes bootstrap token is `[a-z0-9]{6}.[a-z0-9]{16}`: a public id and a secret. Users
write any shared secret (`kubernetes.token`, `k3s --token`, `K3S_TOKEN`); every node turns it
into the same bootstrap token with HMAC-SHA256, so no node has to tell another one. A secret
that already has the bootstrap form (what `kubeadm token create` prints) is used as it is.

The controller-manager's bootstrapsigner signs the kubeconfig in kube-public/cluster-info with
every token that may sign: a JWS (RFC 7515) with HS256, the token secret as the key, the token
id as `kid`, and the payload left out (Appendix F, "detached"): `HEADER..SIGNATURE`. A joining
node that knows the token checks the signature before it trusts the CA inside: a server that
does not know the token cannot forge it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field

from kairos.errors import BadInput

TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
# Domain separation: the id and the secret come from different HMAC messages, so knowing the
# public id tells nothing about the secret.
_ID_LABEL = b"kairos bootstrap token id v1"
_SECRET_LABEL = b"kairos bootstrap token secret v1"
JWS_PREFIX = "jws-kubeconfig-"


@dataclass(frozen=True)
class BootstrapToken:
    id: str
    secret: str = field(repr=False)

    @property
    def value(self) -> str:
        """`id.secret`, what a bearer token header carries."""
        return f"{self.id}.{self.secret}"


def _base36(digest: bytes, length: int) -> str:
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        number, rest = divmod(number, 36)
        chars.append(ALPHABET[rest])
    return "".join(chars)


def derive(shared: str) -> BootstrapToken:
    """The bootstrap token every node computes from the shared secret."""
    text = shared.strip()
    if not text:
        raise BadInput("the cluster token is empty",
                       "set kubernetes.token (or k3s --token) to a shared secret")
    found = TOKEN_RE.match(text)
    if found:
        return BootstrapToken(found.group(1), found.group(2))
    key = text.encode()
    return BootstrapToken(_base36(hmac.new(key, _ID_LABEL, hashlib.sha256).digest(), 6),
                          _base36(hmac.new(key, _SECRET_LABEL, hashlib.sha256).digest(), 16))


def random_token() -> str:
    """A new random token in bootstrap form (a server that was given none makes one)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(6)) + "." + \
        "".join(secrets.choice(ALPHABET) for _ in range(16))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _header(token_id: str) -> str:
    # What go-jose writes for this signer: compact JSON, keys in this order.
    return _b64(json.dumps({"alg": "HS256", "kid": token_id}, separators=(",", ":")).encode())


def detached_signature(content: bytes, token: BootstrapToken) -> str:
    """The detached JWS of `content` the bootstrapsigner would write for `token`."""
    header = _header(token.id)
    mac = hmac.new(token.secret.encode(), f"{header}.{_b64(content)}".encode(), hashlib.sha256)
    return f"{header}..{_b64(mac.digest())}"


def verify_detached(signature: str, content: bytes, token: BootstrapToken) -> bool:
    """True when `signature` is an HS256 detached JWS of `content` made with `token`."""
    parts = signature.strip().split(".")
    if len(parts) != 3 or parts[1] != "":
        return False
    try:
        header = json.loads(_unb64(parts[0]))
        given = _unb64(parts[2])
    except (ValueError, binascii.Error):
        return False
    if not isinstance(header, dict) or header.get("alg") != "HS256" \
            or header.get("kid") != token.id:
        return False
    mac = hmac.new(token.secret.encode(), f"{parts[0]}.{_b64(content)}".encode(),
                   hashlib.sha256).digest()
    return hmac.compare_digest(mac, given)
