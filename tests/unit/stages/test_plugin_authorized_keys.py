from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

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


# --- a user's home is theirs: what they plant there is never followed or written through ---

SHADOW_TEXT = "root:$6$secret$hash:19000:0:99999:7:::\n"
ALICE = "alice:x:1000:1000::/home/alice:/bin/sh\n"


def hostile_home(ctx: Context) -> tuple[Path, Path]:
    """alice (uid 1000) with a home and a .ssh directory; the root's /etc/shadow."""
    with (ctx.root / "etc/passwd").open("a") as fh:
        fh.write(ALICE)
    ssh = ctx.root / "home/alice/.ssh"
    ssh.mkdir(parents=True)
    shadow = ctx.root / "etc/shadow"
    shadow.write_text(SHADOW_TEXT)
    shadow.chmod(0o640)
    return ssh, shadow


def lchown_to_alice(path: Path) -> None:
    if os.geteuid() == 0:
        os.chown(path, 1000, 1000, follow_symlinks=False)


def add_key(ctx: Context) -> None:
    authorized_keys.apply(make_step(authorized_keys={"alice": ["ssh-ed25519 NEW admin"]}), ctx)


def test_planted_authorized_keys_link_is_refused(ctx: Context) -> None:
    ssh, shadow = hostile_home(ctx)
    planted = ssh / "authorized_keys"
    planted.symlink_to("/etc/shadow")  # inside the root: the root's own shadow
    lchown_to_alice(planted)
    before = shadow.stat()
    with pytest.raises(PluginError, match=r"authorized_keys.*symbolic link"):
        add_key(ctx)
    assert shadow.read_text() == SHADOW_TEXT
    after = shadow.stat()
    assert (after.st_uid, after.st_mode, after.st_ino) == (before.st_uid, before.st_mode,
                                                           before.st_ino)
    assert planted.is_symlink() and os.readlink(planted) == "/etc/shadow"


def test_planted_ssh_dir_link_is_refused(ctx: Context) -> None:
    ssh, shadow = hostile_home(ctx)
    ssh.rmdir()
    ssh.symlink_to("/etc")
    lchown_to_alice(ssh)
    etc_before = (ctx.root / "etc").stat()
    with pytest.raises(PluginError, match=r"\.ssh.*symbolic link"):
        add_key(ctx)
    assert not (ctx.root / "etc/authorized_keys").exists()
    etc_after = (ctx.root / "etc").stat()
    assert (etc_after.st_uid, etc_after.st_mode) == (etc_before.st_uid, etc_before.st_mode)
    assert shadow.read_text() == SHADOW_TEXT


def test_planted_hard_link_is_neither_read_nor_written(ctx: Context) -> None:
    ssh, shadow = hostile_home(ctx)
    os.link(shadow, ssh / "authorized_keys")
    with pytest.raises(PluginError, match="hard links"):
        add_key(ctx)
    assert shadow.read_text() == SHADOW_TEXT
    assert (ssh / "authorized_keys").stat().st_ino == shadow.stat().st_ino  # not replaced
    assert shadow.stat().st_uid == os.geteuid()


def test_other_users_and_steps_go_on_after_a_refusal(ctx: Context) -> None:
    ssh, _ = hostile_home(ctx)
    (ssh / "authorized_keys").symlink_to("/etc/shadow")
    with pytest.raises(PluginError):
        authorized_keys.apply(make_step(authorized_keys={
            "alice": ["ssh-ed25519 NEW admin"], "root": ["ssh-ed25519 ROOT admin"]}), ctx)
    assert (ctx.root / "root/.ssh/authorized_keys").read_text() == "ssh-ed25519 ROOT admin\n"


def test_unchanged_keys_leave_the_file_alone(ctx: Context) -> None:
    step = make_step(authorized_keys={"root": ["ssh-ed25519 A x"]})
    authorized_keys.apply(step, ctx)
    target = ctx.root / "root/.ssh/authorized_keys"
    first = target.stat()
    authorized_keys.apply(step, ctx)
    second = target.stat()
    assert (second.st_ino, second.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)


def test_keys_are_added_by_atomic_replace(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    from kairos import safefs

    authorized_keys.apply(make_step(authorized_keys={"root": ["ssh-ed25519 A x"]}), ctx)
    ssh = ctx.root / "root/.ssh"
    old_inode = (ssh / "authorized_keys").stat().st_ino

    def power_cut(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(safefs.os, "fsync", power_cut)
    with pytest.raises(PluginError, match="Input/output error"):
        authorized_keys.apply(make_step(authorized_keys={"root": ["ssh-ed25519 B y"]}), ctx)
    monkeypatch.undo()
    assert (ssh / "authorized_keys").read_text() == "ssh-ed25519 A x\n"  # never half-written
    assert sorted(p.name for p in ssh.iterdir()) == ["authorized_keys"]  # no temp file left
    authorized_keys.apply(make_step(authorized_keys={"root": ["ssh-ed25519 B y"]}), ctx)
    assert (ssh / "authorized_keys").read_text() == "ssh-ed25519 A x\nssh-ed25519 B y\n"
    assert (ssh / "authorized_keys").stat().st_ino != old_inode


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a link owned by a user")
def test_home_behind_a_users_link_is_refused(ctx: Context) -> None:
    (ctx.root / "srv").mkdir()
    (ctx.root / "srv/bob").symlink_to("/etc")
    os.chown(ctx.root / "srv/bob", 1001, 1001, follow_symlinks=False)
    with (ctx.root / "etc/passwd").open("a") as fh:
        fh.write("bob:x:1001:1001::/srv/bob:/bin/sh\n")
    with pytest.raises(PluginError, match="owned by uid 1001; not followed"):
        authorized_keys.apply(make_step(authorized_keys={"bob": ["ssh-ed25519 K b"]}), ctx)
    assert not (ctx.root / "etc/.ssh").exists()
