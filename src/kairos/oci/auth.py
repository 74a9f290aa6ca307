"""Registry credentials and challenges: Docker-style config.json, WWW-Authenticate, tokens.

Credential helpers (`credHelpers`, `credsStore`) run programs that a device does not have;
they are refused with a hint to store the credentials inline (`auths.HOST.auth`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kairos.errors import BadInput

DEFAULT_AUTH_FILE = Path("/root/.docker/config.json")
AUTH_FILE_ENV = "REGISTRY_AUTH_FILE"
# A token without expires_in lives 60 s (distribution's token spec); renew a little early.
DEFAULT_TOKEN_TTL = 60
TOKEN_SLACK = 10
HINT_INLINE = ("store them inline: \"auths\": {\"HOST\": {\"auth\": \"<base64 of user:password>\"}}"
               " (podman login --authfile FILE HOST writes that)")

_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(,?)')
_SCHEME_RE = re.compile(r"\s*([A-Za-z][A-Za-z0-9_.-]*)(?:\s+|$)")


@dataclass(frozen=True)
class Credentials:
    """What config.json holds for one registry."""

    username: str = ""
    password: str = ""
    identity_token: str = ""  # an OAuth2 refresh token (docker login with an identity provider)
    source: str = ""  # the file they came from, for error messages

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Challenge:
    """One WWW-Authenticate challenge: scheme (lowercase) and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse `Bearer realm="…",service="…",scope="…"` (several challenges may follow)."""
    out: list[Challenge] = []
    pos = 0
    while pos < len(header):
        m = _SCHEME_RE.match(header, pos)
        if not m:
            break
        scheme = m.group(1).lower()
        pos = m.end()
        params: dict[str, str] = {}
        while pos < len(header):
            pm = _PARAM_RE.match(header, pos)
            if not pm:
                break
            key, value = pm.group(1).lower(), pm.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[key] = value
            pos = pm.end()
            if not pm.group(3):  # no comma: the next word starts a new challenge
                break
        out.append(Challenge(scheme, params))
        while pos < len(header) and header[pos] in " ,":
            pos += 1
    return out


def auth_file_path(explicit: Path | None = None,
                   environ: Mapping[str, str] | None = None) -> tuple[Path, bool]:
    """The config.json to read and whether the user named it (then it must exist)."""
    if explicit is not None:
        return explicit, True
    env = os.environ if environ is None else environ
    if env.get(AUTH_FILE_ENV):
        return Path(env[AUTH_FILE_ENV]), True
    return DEFAULT_AUTH_FILE, False


def _host_of(key: str) -> str:
    """The host[:port] a config.json key names: keys may be bare or full URLs with a path."""
    key = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", key.strip())
    return key.split("/", 1)[0].lower()


def load_credentials(registry: str, path: Path | None = None,
                     environ: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for `registry` (host[:port]) from a Docker-style config.json, or None."""
    file, named = auth_file_path(path, environ)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        if named:
            raise BadInput(f"registry auth file {file} does not exist",
                           "check the path given by --auth-file or $REGISTRY_AUTH_FILE") from None
        return None
    except OSError as exc:
        raise BadInput(f"cannot read registry auth file {file}: {exc.strerror}",
                       "check its permissions") from None
    return credentials_from_json(data, registry, str(file))


def credentials_from_json(data: bytes, registry: str, where: str) -> Credentials | None:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"registry auth file {where} is not valid JSON ({exc})",
                       "fix the file, or log in again to rewrite it") from None
    if not isinstance(doc, dict):
        raise BadInput(f"registry auth file {where} is not a JSON object",
                       "fix the file, or log in again to rewrite it")
    host = registry.lower()
    auths = doc.get("auths")
    if isinstance(auths, dict):
        for key, entry in auths.items():
            if isinstance(key, str) and _host_of(key) == host and isinstance(entry, dict):
                creds = _entry_credentials(entry, registry, where)
                if creds is not None:
                    return creds
    helpers = doc.get("credHelpers")
    if (isinstance(helpers, dict) and any(_host_of(str(k)) == host for k in helpers)) \
            or doc.get("credsStore"):
        raise BadInput(f"{where} keeps the credentials for {registry} in a credential helper, "
                       "which is not supported", HINT_INLINE.replace("HOST", registry))
    return None


def _entry_credentials(entry: dict[str, object], registry: str, where: str) -> Credentials | None:
    token = entry.get("identitytoken")
    auth = entry.get("auth")
    user, password = entry.get("username"), entry.get("password")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise BadInput(f"{where}: auths.{registry}.auth is not valid base64",
                           "it must be the base64 of user:password") from None
        if ":" not in decoded:
            raise BadInput(f"{where}: auths.{registry}.auth does not hold user:password",
                           "it must be the base64 of user:password")
        user, password = decoded.split(":", 1)
    ident = token if isinstance(token, str) else ""
    if isinstance(user, str) and isinstance(password, str) and (user or password):
        return Credentials(user, password, ident, where)
    if ident:
        return Credentials(user if isinstance(user, str) else "", "", ident, where)
    return None


@dataclass
class _Token:
    value: str
    expires: float


@dataclass
class TokenCache:
    """Bearer tokens by (realm, service, scope); dropped when expired or refused."""

    _tokens: dict[tuple[str, str, str], _Token] = field(default_factory=dict)

    def get(self, key: tuple[str, str, str]) -> str | None:
        tok = self._tokens.get(key)
        if tok is None or time.monotonic() >= tok.expires:
            self._tokens.pop(key, None)
            return None
        return tok.value

    def put(self, key: tuple[str, str, str], value: str, ttl: float) -> None:
        self._tokens[key] = _Token(value, time.monotonic() + max(ttl - TOKEN_SLACK, 1.0))

    def drop(self, key: tuple[str, str, str]) -> None:
        self._tokens.pop(key, None)


def token_from_response(body: bytes, where: str) -> tuple[str, float]:
    """The token and its lifetime from a token endpoint's JSON answer."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        doc = None
    if not isinstance(doc, dict):
        raise BadInput(f"the token service {where} did not answer with JSON",
                       "check the registry's auth configuration")
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise BadInput(f"the token service {where} answered without a token",
                       "check the registry's auth configuration")
    ttl = doc.get("expires_in")
    return token, float(ttl) if isinstance(ttl, int | float) and ttl > 0 else DEFAULT_TOKEN_TTL
