"""A real registry for tests: Debian's docker-registry on 127.0.0.1, with optional htpasswd or
token auth (a tiny JWT-issuing token server), a proxy that counts, cuts and corrupts what the
registry serves, and skopeo to push images into it. Reused by the VM upgrade tests.

Nothing here touches the system's docker-registry service or its storage.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import http.server
import json
import os
import secrets
import socket
import subprocess
import threading
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kairos.oci.image import blob_path
from kairos.oci.media import (
    ANNOTATION_REF_NAME,
    INDEX_FILE,
    MT_INDEX,
    MT_MANIFEST,
    Descriptor,
    canonical_json,
    parse_json,
    sha256_digest,
)
from kairos.run import popen, run

REGISTRY_BIN = "/usr/bin/docker-registry"
TOKEN_SERVICE = "kairos-test-registry"
TOKEN_ISSUER = "kairos-test-token-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_http(host: str, proc: subprocess.Popen[bytes] | None, log: Path | None,
               timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"registry exited with {proc.returncode}:\n{text}")
        try:
            conn = http.client.HTTPConnection(host, timeout=2)
            conn.request("GET", "/v2/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on {host} after {timeout}s")


# ------------------------------------------------------------------------------ registry

@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def registry(work: Path, auth: dict[str, Any] | None = None) -> Iterator[Registry]:
    """docker-registry serving plain HTTP on 127.0.0.1:<free port>, storage under `work`."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(work / "storage")},
                    "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if auth:
        config["auth"] = auth
    cfg = work / "config.yml"
    cfg.write_text(yaml.safe_dump(config))
    log = work / "registry.log"
    with open(log, "wb") as out:
        # A clean environment: REGISTRY_* variables would override the config file.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        proc = popen([REGISTRY_BIN, "serve", str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                     env=env)
    reg = Registry(f"127.0.0.1:{port}", work, proc, log)
    try:
        _wait_http(reg.host, proc, log)
        yield reg
    finally:
        reg.stop()


def htpasswd(path: Path, users: dict[str, str]) -> Path:
    """An htpasswd file with bcrypt hashes (what docker-registry accepts), via libxcrypt."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # deprecated, but in Python 3.11 and enough for a test fixture

    lines = [f"{user}:{crypt.crypt(pw, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}"
             for user, pw in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def htpasswd_auth(work: Path, users: dict[str, str]) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    return {"htpasswd": {"realm": "kairos-test", "path": str(htpasswd(work / "htpasswd", users))}}


def write_auth_file(path: Path, host: str, user: str, password: str, *,
                    extra: dict[str, Any] | None = None) -> Path:
    """A Docker-style config.json with inline credentials for `host`."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    doc: dict[str, Any] = {"auths": {host: {"auth": token}}}
    doc.update(extra or {})
    path.write_text(json.dumps(doc))
    return path


# ------------------------------------------------------------------------------ token server

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Issues RS256 JWTs the registry's `auth: token` accepts; counts what it was asked."""

    work: Path
    users: dict[str, str]
    port: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    expired_first: int = 0  # this many tokens are issued already expired (to test renewal)
    _server: http.server.ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def cert(self) -> Path:
        return self.work / "token.crt"

    @property
    def key(self) -> Path:
        return self.work / "token.key"

    def registry_auth(self) -> dict[str, Any]:
        return {"token": {"realm": self.realm, "service": TOKEN_SERVICE,
                          "issuer": TOKEN_ISSUER, "rootcertbundle": str(self.cert)}}

    def start(self) -> TokenServer:
        self.work.mkdir(parents=True, exist_ok=True)
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=kairos-test-token", "-keyout", self.key, "-out", self.cert])
        der = self.work / "token.der"
        run(["openssl", "x509", "-in", self.cert, "-outform", "DER", "-out", der])
        self._x5c = base64.b64encode(der.read_bytes()).decode()
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _user(self, header: str | None) -> str | None:
        """The user the Basic credentials prove, "" for anonymous, None for wrong ones."""
        if not header:
            return ""
        try:
            user, _, pw = base64.b64decode(header.split(" ", 1)[1]).decode().partition(":")
        except (IndexError, ValueError):
            return None
        return user if self.users.get(user) == pw else None

    def _handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(req.path).query)
        user = self._user(req.headers.get("Authorization"))
        self.requests.append({"user": str(user), "scope": " ".join(query.get("scope", []))})
        if user is None:
            req.send_response(401)
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            # Anonymous users get nothing: every repository is private here.
            access.append({"type": kind, "name": name,
                           "actions": actions.split(",") if user else []})
        with self._lock:
            expired = self.expired_first > 0
            self.expired_first -= 1 if expired else 0
        body = json.dumps({"token": self._jwt(user, access, expired), "expires_in": 300}).encode()
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def _jwt(self, user: str, access: list[dict[str, Any]], expired: bool) -> str:
        now = int(time.time())
        # The registry allows 60 s of clock skew: an "expired" token is older than that.
        exp = now - 600 if expired else now + 300
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": TOKEN_ISSUER, "sub": user, "aud": TOKEN_SERVICE, "exp": exp,
                  "nbf": now - 900, "iat": now - 900 if expired else now,
                  "jti": secrets.token_hex(8), "access": access}
        signing = (_b64url(json.dumps(header).encode()) + "." +
                   _b64url(json.dumps(claims).encode()))
        sig = self.work / f"sig-{secrets.token_hex(6)}"
        run(["openssl", "dgst", "-sha256", "-sign", self.key, "-out", sig],
            input=signing.encode())
        signature = sig.read_bytes()
        sig.unlink()
        return signing + "." + _b64url(signature)


@contextlib.contextmanager
def token_server(work: Path, users: dict[str, str]) -> Iterator[TokenServer]:
    ts = TokenServer(work, users).start()
    try:
        yield ts
    finally:
        ts.stop()


# ------------------------------------------------------------------------------ proxy

@dataclass
class Fault:
    """What the proxy does to the next `times` requests whose path contains `match`."""

    match: str = "/blobs/"
    cut_after: int | None = None  # send this many body bytes, then drop the connection
    flip_at: int | None = None  # invert the body byte at this offset
    strip_range: bool = False  # forward without Range: the registry answers 200
    times: int = 1


@dataclass
class Served:
    method: str
    path: str
    status: int
    range: str | None
    sent: int  # body bytes that left the proxy


class Proxy:
    """An HTTP proxy in front of the registry on 127.0.0.1 that counts body bytes per request
    and injects faults (cut, corrupt, ignore Range)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.served: list[Served] = []
        # docker-registry 2.8 returns every tag at once; with this set the proxy pages the
        # list the way the distribution spec (and newer registries) do: ?n=&last=, Link.
        self.tag_page: int | None = None
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy._forward(self)

            def do_HEAD(self) -> None:
                proxy._forward(self)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def blob_bytes(self, digest: str | None = None) -> int:
        """Blob body bytes served (for one digest, or all)."""
        return sum(s.sent for s in self.served
                   if "/blobs/" in s.path and (digest is None or s.path.endswith(digest)))

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.match in path:
                fault.times -= 1
                return fault
        return None

    def _page_tags(self, path: str, body: bytes) -> tuple[bytes, list[tuple[str, str]]]:
        assert self.tag_page is not None
        doc = json.loads(body)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        n = int(query.get("n", [str(self.tag_page)])[0])
        last = query.get("last", [""])[0]
        rest = [t for t in sorted(doc.get("tags") or []) if t > last]
        doc["tags"] = rest[:n]
        links = []
        if len(rest) > n:
            base = path.split("?", 1)[0]
            nxt = urllib.parse.urlencode({"n": n, "last": rest[n - 1]})
            links.append(("Link", f'<{base}?{nxt}>; rel="next"'))
        return json.dumps(doc).encode(), links

    def _forward(self, req: http.server.BaseHTTPRequestHandler) -> None:
        fault = self._take_fault(req.path)
        headers = {k: v for k, v in req.headers.items()
                   if k.lower() not in ("host", "connection")}
        if fault and fault.strip_range:
            headers = {k: v for k, v in headers.items() if k.lower() != "range"}
        path = req.path
        paged = self.tag_page is not None and "/tags/list" in path
        if paged:
            path = path.split("?", 1)[0]
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        conn.request(req.command, path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        extra: list[tuple[str, str]] = []
        if paged and resp.status == 200:
            body, extra = self._page_tags(req.path, body)
        req.send_response(resp.status)
        for key, value in [*resp.getheaders(), *extra]:
            if key.lower() not in ("connection", "transfer-encoding", "content-length",
                                   "date", "server"):
                req.send_header(key, value)
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Connection", "close")
        req.end_headers()
        if fault and fault.flip_at is not None and fault.flip_at < len(body):
            body = body[:fault.flip_at] + bytes([body[fault.flip_at] ^ 0xFF]) + \
                body[fault.flip_at + 1:]
        if fault and fault.cut_after is not None:
            body = body[:fault.cut_after]
        # Recorded before the body goes out: a client that has read the response may look
        # at `served` at once, before this handler thread would get to run again.
        self.served.append(Served(req.command, req.path, resp.status,
                                  headers.get("Range"), len(body)
                                  if req.command != "HEAD" else 0))
        if req.command != "HEAD":
            req.wfile.write(body)
        req.wfile.flush()
        if fault and fault.cut_after is not None:
            with contextlib.suppress(OSError):
                req.connection.shutdown(socket.SHUT_RDWR)
        req.close_connection = True


@contextlib.contextmanager
def proxy(upstream: str) -> Iterator[Proxy]:
    p = Proxy(upstream)
    try:
        yield p
    finally:
        p.close()


# ------------------------------------------------------------------------------ pushing

def skopeo_env(work: Path) -> tuple[list[str], dict[str, str]]:
    """skopeo with a permissive policy and temp files under `work` (no host registries)."""
    conf = work / "containers"
    (conf / "tmp").mkdir(parents=True, exist_ok=True)
    (conf / "registries.conf").write_text("")
    (conf / "policy.json").write_text(json.dumps(
        {"default": [{"type": "insecureAcceptAnything"}]}))
    env = {"CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
           "TMPDIR": str(conf / "tmp")}
    return ["skopeo", "--policy", str(conf / "policy.json")], env


def push(work: Path, source: str, dest: str, *, creds: str | None = None,
         all_images: bool = False) -> None:
    """skopeo copy SOURCE (e.g. oci:LAYOUT:TAG) to docker://DEST over plain HTTP."""
    argv, env = skopeo_env(work)
    args = [*argv, "copy", "--quiet", "--dest-tls-verify=false"]
    if creds:
        args += ["--dest-creds", creds]
    if all_images:
        args.append("--all")
    run([*args, source, f"docker://{dest}"], env=env, timeout=300)


def add_index(layout: Path, refs: list[str], name: str) -> str:
    """Add to an OCI layout an image index named `name` over the manifests named `refs`
    (each entry keeps its platform); returns the index digest."""
    index_path = layout / INDEX_FILE
    top = parse_json(index_path.read_bytes(), str(index_path))
    entries = [Descriptor.from_json(e, "index.json") for e in top.get("manifests", [])]
    by_name = {(d.annotations or {}).get(ANNOTATION_REF_NAME): d for d in entries}
    members = [Descriptor(MT_MANIFEST, by_name[r].digest, by_name[r].size,
                          platform=by_name[r].platform) for r in refs]
    body = canonical_json({"schemaVersion": 2, "mediaType": MT_INDEX,
                           "manifests": [m.to_json() for m in members]})
    digest = sha256_digest(body)
    blob_path(layout, digest).write_bytes(body)
    entry = Descriptor(MT_INDEX, digest, len(body), annotations={ANNOTATION_REF_NAME: name})
    kept = [d.to_json() for d in entries if (d.annotations or {}).get(ANNOTATION_REF_NAME) != name]
    index_path.write_bytes(canonical_json({"schemaVersion": 2, "mediaType": MT_INDEX,
                                           "manifests": [*kept, entry.to_json()]}))
    return digest


def file_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


__all__ = ["Fault", "Proxy", "Registry", "Served", "TokenServer", "add_index", "file_digest",
           "free_port", "htpasswd", "htpasswd_auth", "proxy", "push", "registry", "skopeo_env",
           "token_server", "write_auth_file"]
