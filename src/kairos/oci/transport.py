"""Talking to one registry host over HTTP(S), on the standard library.

A RegistrySession learns each host's scheme (HTTPS, or plain HTTP for registries named
insecure) and auth challenge from one /v2/ ping, then sends requests with the right
Authorization: anonymous, Bearer tokens (cached per scope, renewed once on 401) or Basic, with
credentials from a Docker-style config.json. It follows redirects (credentials stay home) and
turns every refusal or socket failure into one line with a hint.

Kept apart from kairos.oci.registry, which builds the distribution API (manifests, blobs,
tags, pushes) on top of it: this module knows HTTP and auth, not what an image is.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NoReturn

from kairos.errors import BadInput, KairosError
from kairos.oci.auth import (
    Challenge,
    Credentials,
    TokenCache,
    auth_file_path,
    load_credentials,
    parse_challenges,
    token_from_response,
)
from kairos.oci.media import MAX_JSON_BYTES
from kairos.oci.reference import Reference

log = logging.getLogger("kairos.oci.transport")

MAX_REDIRECTS = 5
HINT_INSECURE = "if {host} is plain HTTP, add --allow-insecure-registries"


# ---------------------------------------------------------------------------- HTTP

class Response:
    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
                 url: str) -> None:
        self.conn = conn
        self.resp = resp
        self.url = url
        self.status = resp.status
        self.headers = resp.headers

    def read(self, n: int) -> bytes:
        return self.resp.read(n)

    def read_small(self, what: str) -> bytes:
        data = self.resp.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            raise BadInput(f"{what} is too large ({len(data)}+ bytes)",
                           "this is not an image manifest; check the reference")
        return data

    def close(self) -> None:
        self.resp.close()
        self.conn.close()


def error_detail(body: bytes) -> str:
    """The first message of a registry's {"errors": [...]} body, if any."""
    try:
        doc = json.loads(body)
        err = doc["errors"][0]
        return f"{err.get('code', '')}: {err.get('message', '')}".strip(": ")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""


def error_code(body: bytes) -> str:
    return error_detail(body).split(":", 1)[0]


# ---------------------------------------------------------------------------- session

class RegistrySession:
    """Per-host state of one command run: schemes, challenges, credentials and tokens."""

    def __init__(self, *, auth_file: Path | None = None, insecure: Iterable[str] = (),
                 timeout: float = 60.0, retries: int = 3,
                 environ: Mapping[str, str] | None = None) -> None:
        self.auth_file = auth_file
        self.insecure = frozenset(insecure)
        self.timeout = timeout
        self.retries = retries
        self.environ = environ
        self.tokens = TokenCache()
        self._scheme: dict[str, str] = {}
        self._challenge: dict[str, Challenge | None] = {}
        self._creds: dict[str, Credentials | None] = {}
        self._verified_ctx = ssl.create_default_context()
        self._unverified_ctx = ssl.create_default_context()
        self._unverified_ctx.check_hostname = False
        self._unverified_ctx.verify_mode = ssl.CERT_NONE

    # -- requests, auth --------------------------------------------------------

    def _url(self, registry: str, path: str) -> str:
        return f"{self._ensure_scheme(registry)}://{registry}{path}"

    def _is_insecure(self, registry: str) -> bool:
        host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
        return registry in self.insecure or host in self.insecure

    def _ensure_scheme(self, registry: str) -> str:
        """Ping /v2/ once per registry: learn the scheme and the auth challenge."""
        if registry in self._scheme:
            return self._scheme[registry]
        schemes = ["https", "http"] if self._is_insecure(registry) else ["https"]
        resp: Response | None = None
        for scheme in schemes:
            try:
                resp = self._send("GET", f"{scheme}://{registry}/v2/", {}, registry)
                break
            except KairosError:
                # An insecure registry may be plain HTTP: TLS failing on it is expected.
                if scheme == schemes[-1]:
                    raise
        assert resp is not None
        try:
            if resp.status == 401:
                challenges = parse_challenges(resp.headers.get("WWW-Authenticate") or "")
                self._challenge[registry] = _best_challenge(challenges, registry)
            elif resp.status in (200, 403):
                self._challenge[registry] = None
            elif resp.status == 404:
                raise BadInput(f"{registry} is not an OCI registry (no /v2/ API)",
                               "check the registry's host and port")
            else:
                self._fail(resp, None, "the API check", registry)
        finally:
            resp.close()
        self._scheme[registry] = resp.url.split("://", 1)[0]
        return self._scheme[registry]

    def _credentials(self, registry: str) -> Credentials | None:
        if registry not in self._creds:
            self._creds[registry] = load_credentials(registry, self.auth_file, self.environ)
        return self._creds[registry]

    def _request(self, ref: Reference, method: str, url: str,
                 headers: dict[str, str]) -> Response:
        """A request with auth: a refused cached token is renewed once, then we give up."""
        resp = self._authed(ref, f"repository:{ref.repository}:pull", method, url, headers)
        if resp is None:
            raise self._denied(ref)
        return resp

    def _authed(self, ref: Reference, scope: str, method: str, url: str,
                headers: dict[str, str], body: bytes | None = None) -> Response | None:
        """The response, with a token for `scope` (renewed once when refused); None when
        the registry still says 401."""
        for attempt in range(2):
            auth = self._authorization(ref.registry, scope, renew=attempt > 0)
            resp = self._follow(method, url, {**headers, **auth}, ref.registry, body)
            if resp.status != 401:
                return resp
            challenges = parse_challenges(resp.headers.get("WWW-Authenticate") or "")
            resp.close()
            if challenges:
                self._challenge[ref.registry] = _best_challenge(challenges, ref.registry)
        return None

    def _authorization(self, registry: str, scope: str, renew: bool) -> dict[str, str]:
        challenge = self._challenge.get(registry)
        if challenge is None:
            return {}
        creds = self._credentials(registry)
        if challenge.scheme == "basic":
            return {"Authorization": creds.basic_header()} if creds else {}
        key = (challenge.realm, challenge.params.get("service", ""), scope)
        if renew:
            self.tokens.drop(key)
        token = self.tokens.get(key)
        if token is None:
            token, ttl = self._fetch_token(registry, challenge, scope, creds)
            self.tokens.put(key, token, ttl)
        return {"Authorization": f"Bearer {token}"}

    def _fetch_token(self, registry: str, challenge: Challenge, scope: str,
                     creds: Credentials | None) -> tuple[str, float]:
        realm = challenge.realm
        parsed = urllib.parse.urlsplit(realm)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise BadInput(f"registry {registry} names an invalid token service {realm!r}",
                           "check the registry's auth configuration")
        params = {"scope": scope}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        headers: dict[str, str] = {}
        body: bytes | None = None
        if creds is not None and creds.identity_token:
            # OAuth2 refresh-token grant (what docker does with an identity token).
            method = "POST"
            body = urllib.parse.urlencode({**params, "grant_type": "refresh_token",
                                           "refresh_token": creds.identity_token,
                                           "client_id": "kairos"}).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            url = realm
        else:
            method = "GET"
            sep = "&" if parsed.query else "?"
            url = realm + sep + urllib.parse.urlencode(params)
            if creds is not None:
                headers["Authorization"] = creds.basic_header()
        resp = self._follow(method, url, headers, parsed.netloc, body)
        try:
            if resp.status in (401, 403):
                raise self._denied_creds(registry, creds)
            if resp.status != 200:
                self._fail(resp, None, "the token request", parsed.netloc)
            return token_from_response(resp.read_small("the token answer"), parsed.netloc)
        finally:
            resp.close()

    def _denied(self, ref: Reference) -> BadInput:
        return self._denied_creds(ref.registry, self._credentials(ref.registry), ref)

    def _denied_creds(self, registry: str, creds: Credentials | None,
                      ref: Reference | None = None) -> BadInput:
        file, _ = auth_file_path(self.auth_file, self.environ)
        if creds is None:
            what = f" to pull {ref.repository}" if ref else ""
            return BadInput(f"registry {registry} requires credentials{what}",
                            f"add them to {file} as auths.\"{registry}\".auth "
                            "(base64 of user:password), or pass --auth-file")
        who = f" (user {creds.username})" if creds.username else ""
        return BadInput(f"wrong credentials for {registry}{who}, or no access to "
                        f"{ref.repository if ref else 'the repository'}",
                        f"check auths.\"{registry}\" in {creds.source}")

    def _fail(self, resp: Response, ref: Reference | None, what: str,
              host: str | None = None) -> NoReturn:
        host = host or (ref.registry if ref else "?")
        detail = error_detail(resp.read(65536))
        tail = f": {detail}" if detail else ""
        if resp.status == 403:
            raise BadInput(f"{host} denied access to {ref.name if ref else what}{tail}",
                           "check that your credentials may pull this repository")
        if resp.status == 429:
            raise KairosError(f"{host} is rate-limiting requests{tail}",
                              "wait a while, then run again")
        raise KairosError(f"{host} answered {resp.status} {resp.resp.reason} to {what}{tail}",
                          "try again later; if it persists, check the registry")

    def _follow(self, method: str, url: str, headers: dict[str, str], registry: str,
                body: bytes | None = None) -> Response:
        """Send, following redirects (blob stores redirect to CDNs); credentials stay home."""
        origin = urllib.parse.urlsplit(url).netloc
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._send(method, url, headers, registry, body)
            location = resp.headers.get("Location")
            if resp.status not in (301, 302, 303, 307, 308) or not location:
                return resp
            resp.close()
            url = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(url).netloc != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if resp.status == 303:
                method, body = "GET", None
        raise KairosError(f"{registry} redirects too often", "check the registry's setup")

    def _send(self, method: str, url: str, headers: dict[str, str], registry: str,
              body: bytes | None = None) -> Response:
        parts = urllib.parse.urlsplit(url)
        host = parts.netloc
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            insecure = self._is_insecure(host) or self._is_insecure(registry)
            ctx = self._unverified_ctx if insecure else self._verified_ctx
            conn = http.client.HTTPSConnection(host, timeout=self.timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, timeout=self.timeout)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request(method, target or "/", body=body,
                         headers={"User-Agent": "kairos", **headers})
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _connect_error(host, exc) from exc
        log.debug("%s %s -> %d", method, url, resp.status)
        return Response(conn, resp, url)

    def _push_request(self, ref: Reference, method: str, url: str, headers: dict[str, str],
                      body: bytes | None = None) -> Response:
        """Like _request, with a token scoped for pull and push."""
        resp = self._authed(ref, f"repository:{ref.repository}:pull,push", method, url,
                            headers, body)
        if resp is not None:
            return resp
        file, _ = auth_file_path(self.auth_file, self.environ)
        raise BadInput(f"registry {ref.registry} refused to let us push to {ref.repository}",
                       f"add credentials that may push to auths.\"{ref.registry}\" in {file}, "
                       "or pass --auth-file")


# ---------------------------------------------------------------------------- helpers

def _connect_error(host: str, exc: OSError | http.client.HTTPException) -> KairosError:
    """One line for a person from whatever the socket layer raised."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return BadInput(f"the TLS certificate of {host} is not trusted ({exc.verify_message})",
                        "install its CA certificate in the system store, or name it in "
                        "--allow-insecure-registries")
    if isinstance(exc, ssl.SSLError):
        return BadInput(f"TLS with {host} failed ({exc.reason or exc})",
                        HINT_INSECURE.format(host=host))
    if isinstance(exc, socket.gaierror):
        return BadInput(f"cannot reach registry {host}: the name does not resolve",
                        "check the name and the network")
    if isinstance(exc, ConnectionRefusedError):
        return BadInput(f"cannot reach registry {host}: connection refused",
                        "check the name, the port and the network")
    if isinstance(exc, http.client.BadStatusLine | http.client.RemoteDisconnected):
        return KairosError(f"registry {host} closed the connection without answering",
                           "check the name and the network; if it speaks TLS do not name it "
                           "insecure")
    return KairosError(f"cannot reach registry {host}: {exc}", "check the name and the network")


def _best_challenge(challenges: list[Challenge], registry: str) -> Challenge:
    for scheme in ("bearer", "basic"):
        for ch in challenges:
            if ch.scheme == scheme:
                if scheme == "bearer" and not ch.realm:
                    raise BadInput(f"registry {registry} asks for a token but names no realm",
                                   "check the registry's auth configuration")
                return ch
    shown = ", ".join(c.scheme for c in challenges) or "nothing"
    raise BadInput(f"registry {registry} asks for an unsupported authentication ({shown})",
                   "only Bearer tokens and Basic auth are supported")
