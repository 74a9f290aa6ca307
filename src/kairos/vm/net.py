"""Host-side networking for guests: free ports and SSH reachability on 127.0.0.1."""

from __future__ import annotations

import selectors
import socket
import time
from pathlib import Path

LOCALHOST = "127.0.0.1"

# Options for throw-away guests: their host keys change with every image, so no known_hosts;
# BatchMode so a missing key fails at once instead of prompting for a password. QEMU accepts
# the TCP connection at once, so ConnectTimeout bounds the handshake and key exchange: a
# one-vCPU TCG guest sharing two cores with others took over 10 s for it.
SSH_OPTIONS: tuple[str, ...] = (
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes",
    "-o", "ConnectTimeout=30",
    "-o", "LogLevel=ERROR",
)


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nobody listens on right now (the kernel picks it; a race is possible,
    so the VM retries with a new one if QEMU cannot bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ssh_banner(port: int, host: str = LOCALHOST, timeout: float = 3.0) -> str | None:
    """The guest sshd's identification line, or None.

    QEMU's user network accepts the TCP connection on the forwarded port even when nothing
    listens in the guest, so only a banner proves that sshd is up.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            data = sock.recv(256)
    except OSError:
        return None
    line = data.split(b"\n", 1)[0].decode("ascii", errors="replace").strip()
    return line if line.startswith("SSH-") else None


def wait_banner(port: int, timeout: float, *, host: str = LOCALHOST, interval: float = 0.5,
                patience: float = 5.0) -> str | None:
    """Wait up to `timeout` seconds for the guest sshd's identification line.

    While the guest has no network, QEMU holds each accepted connection open, silent, for as
    long as its own SYN retries last; one probe at a time would see sshd seconds after it
    started. So a new probe opens every `interval` seconds (at most three at a time) and each
    stays `patience` seconds: the first banner on any of them ends the wait.
    """
    sel = selectors.DefaultSelector()
    opened: dict[socket.socket, float] = {}
    # Probes held by QEMU all reach sshd at once when the guest comes up; more than a few
    # would count against its MaxStartups and get the login right after them dropped.
    most = 3

    def drop(sock: socket.socket) -> None:
        sel.unregister(sock)
        opened.pop(sock, None)
        sock.close()

    end = time.monotonic() + timeout
    next_probe = 0.0
    try:
        while (now := time.monotonic()) < end:
            if now >= next_probe and len(opened) < most:
                next_probe = now + interval
                try:
                    sock = socket.create_connection((host, port), timeout=1.0)
                except OSError:
                    pass
                else:
                    sock.setblocking(False)
                    sel.register(sock, selectors.EVENT_READ)
                    opened[sock] = now
            for sock, since in list(opened.items()):
                if now - since >= patience:
                    drop(sock)
            # until the next probe is due, or, with all probes out, the oldest one gives up
            due = next_probe if len(opened) < most else min(opened.values()) + patience
            wait = max(0.0, min(due, end) - time.monotonic())
            if not opened:
                time.sleep(wait)
                continue
            for key, _ in sel.select(wait):
                sock = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(256)
                except OSError:
                    data = b""
                line = data.split(b"\n", 1)[0].decode("ascii", errors="replace").strip()
                if line.startswith("SSH-"):
                    return line
                drop(sock)  # closed, reset, or not an sshd
        return None
    finally:
        for sock in list(opened):
            drop(sock)
        sel.close()


# What ssh prints when the connection ends before authentication, so no command ran and a
# retry is safe: a guest's sshd still starting, or dropping connections over MaxStartups.
PREAUTH_ERRORS = ("kex_exchange_identification", "Connection closed by remote host",
                  "Connection reset by peer", "Connection refused")


def preauth_failure(returncode: int, stderr: str) -> bool:
    return returncode == 255 and any(e in stderr for e in PREAUTH_ERRORS)


def ssh_argv(port: int, user: str, key: Path, command: str,
             host: str = LOCALHOST) -> list[str]:
    """The OpenSSH client command line for one remote command."""
    return ["ssh", *SSH_OPTIONS, "-i", str(key), "-p", str(port), f"{user}@{host}", command]


def ssh_hint(port: int, user: str, key: Path | None = None, host: str = LOCALHOST) -> str:
    """The line a person copies into a terminal to log into the guest."""
    ident = f" -i {key}" if key else ""
    return (f"ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null{ident}"
            f" -p {port} {user}@{host}")
