from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator

import pytest

from kairos.stages.context import Context, PluginError
from kairos.stages.plugins import authorized_keys

from .helpers import make_step


@pytest.fixture
def key_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/alice.keys":
                body = b"ssh-ed25519 AAAA alice@one\nssh-rsa BBBB alice@two\n"
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_response(404)
                self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_literal_and_fetched_keys_idempotent(ctx: Context, key_server: str) -> None:
    ctx.key_urls = {"github": key_server + "/{user}.keys"}
    step = make_step(authorized_keys={"root": ["ssh-ed25519 LOCAL root@x", "github:alice"]})
    authorized_keys.apply(step, ctx)
    authorized_keys.apply(step, ctx)
    target = ctx.root / "root/.ssh/authorized_keys"
    assert target.read_text().splitlines() == [
        "ssh-ed25519 LOCAL root@x", "ssh-ed25519 AAAA alice@one", "ssh-rsa BBBB alice@two"]
    assert target.stat().st_mode & 0o777 == 0o600
    assert (ctx.root / "root/.ssh").stat().st_mode & 0o777 == 0o700
    if os.geteuid() == 0:
        assert target.stat().st_uid == 0


def test_unreachable_source_warns_and_keeps_the_rest(ctx: Context, key_server: str) -> None:
    ctx.key_urls = {"github": key_server + "/{user}.keys", "gitlab": "http://127.0.0.1:9/{user}"}
    ctx.http_timeout = 2
    with pytest.raises(PluginError) as err:
        authorized_keys.apply(make_step(authorized_keys={"root": [
            "gitlab:nobody", "github:missing", "ssh-rsa KEEP me"]}), ctx)
    assert "gitlab:nobody" in err.value.message and "github:missing" in err.value.message
    assert (ctx.root / "root/.ssh/authorized_keys").read_text() == "ssh-rsa KEEP me\n"


def test_unknown_user(ctx: Context) -> None:
    with pytest.raises(PluginError, match="user 'ghost' does not exist"):
        authorized_keys.apply(make_step(authorized_keys={"ghost": ["ssh-rsa X"]}), ctx)
