"""Free ports, the SSH banner probe, ssh argv and the test keypair."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kairos.vm.keys import ensure_keypair
from kairos.vm.net import free_port, preauth_failure, ssh_argv, ssh_banner, ssh_hint, wait_banner


def test_free_port_is_bindable_on_localhost() -> None:
    port = free_port()
    assert 1024 <= port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # raises if taken


def test_free_port_skips_a_listening_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert all(free_port() != taken for _ in range(20))


def serve_once(reply: bytes) -> Iterator[int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def handle() -> None:
        conn, _ = srv.accept()
        with conn:
            if reply:
                conn.sendall(reply)

    t = threading.Thread(target=handle, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    srv.close()


@pytest.fixture
def sshd() -> Iterator[int]:
    yield from serve_once(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n")


@pytest.fixture
def slirp_like() -> Iterator[int]:
    # What QEMU's user network does when nothing listens in the guest: accept, then close.
    yield from serve_once(b"")


def test_banner_of_a_real_looking_sshd(sshd: int) -> None:
    assert ssh_banner(sshd) == "SSH-2.0-OpenSSH_9.2p1 Debian"


def test_accept_then_close_is_not_ssh(slirp_like: int) -> None:
    assert ssh_banner(slirp_like) is None


def test_closed_port_is_not_ssh() -> None:
    assert ssh_banner(free_port(), timeout=1.0) is None


@pytest.fixture
def silent_first() -> Iterator[int]:
    """Like QEMU while the guest has no network: the first connection is accepted and held
    without a byte; sshd "comes up" for the connections after it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    held: list[socket.socket] = []

    def handle() -> None:
        conn, _ = srv.accept()
        held.append(conn)  # silent until the test ends
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n")

    threading.Thread(target=handle, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()
    for conn in held:
        conn.close()


def test_a_silent_probe_does_not_hide_a_later_banner(silent_first: int) -> None:
    # One probe at a time would sit on the silent connection until the timeout and miss it.
    assert wait_banner(silent_first, 3.0, interval=0.2, patience=10.0) == \
        "SSH-2.0-OpenSSH_9.2p1 Debian"


def test_wait_banner_gives_up_on_a_closed_port_and_on_accept_then_close(
        slirp_like: int) -> None:
    assert wait_banner(free_port(), 0.5) is None
    assert wait_banner(slirp_like, 0.5) is None


def test_ssh_argv(tmp_path: Path) -> None:
    key = tmp_path / "id"
    argv = ssh_argv(2222, "kairos", key, "cat /proc/cmdline")
    assert argv[0] == "ssh" and argv[-2:] == ["kairos@127.0.0.1", "cat /proc/cmdline"]
    for opt in ("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "BatchMode=yes",
                "ConnectTimeout=30"):
        assert argv[argv.index(opt) - 1] == "-o"
    assert argv[argv.index("-i") + 1] == str(key)
    assert argv[argv.index("-p") + 1] == "2222"
    assert "-p 2222 kairos@127.0.0.1" in ssh_hint(2222, "kairos")


def test_ensure_keypair_creates_once(tmp_path: Path) -> None:
    private, public = ensure_keypair(tmp_path / "keys")
    assert public.read_text().startswith("ssh-ed25519 ")
    assert private.stat().st_mode & 0o077 == 0
    first = private.read_bytes()
    assert ensure_keypair(tmp_path / "keys") == (private, public)
    assert private.read_bytes() == first  # reused, not regenerated


@pytest.mark.parametrize(("code", "stderr", "retry"), [
    (255, "kex_exchange_identification: Connection closed by remote host", True),
    (255, "ssh: connect to host 127.0.0.1 port 2222: Connection refused", True),
    (255, "kairos@127.0.0.1: Permission denied (publickey).", False),  # the key is wrong
    (1, "Connection closed by remote host", False),  # the remote command's own failure
])
def test_only_failures_before_authentication_are_retried(code: int, stderr: str,
                                                         retry: bool) -> None:
    assert preauth_failure(code, stderr) is retry
