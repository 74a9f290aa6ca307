"""A minimal QMP client: one short connection per command, so a hung guest never blocks us."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from kairos.errors import KairosError


class QMPError(KairosError):
    """QEMU's monitor refused a command or could not be reached."""


def _read_message(stream: Any) -> dict[str, Any]:
    line = stream.readline()
    if not line:
        raise QMPError("QEMU closed the QMP connection", "QEMU has probably exited")
    msg: dict[str, Any] = json.loads(line)
    return msg


def execute(sock_path: Path, command: str, arguments: dict[str, Any] | None = None,
            *, timeout: float = 10.0) -> Any:
    """Run one QMP command and return its `return` value.

    `quit` may close the socket before answering; that counts as success.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(sock_path))
        except OSError as exc:
            raise QMPError(f"cannot reach QEMU's QMP socket {sock_path}: {exc}",
                           "QEMU is not running or has not started yet") from exc
        stream = sock.makefile("rwb")
        _read_message(stream)  # greeting
        for name, args in (("qmp_capabilities", None), (command, arguments)):
            request: dict[str, Any] = {"execute": name}
            if args:
                request["arguments"] = args
            stream.write(json.dumps(request).encode() + b"\n")
            stream.flush()
            while True:  # skip asynchronous events until the reply
                try:
                    msg = _read_message(stream)
                except (QMPError, OSError):
                    if name == "quit":
                        return None
                    raise
                if "return" in msg:
                    result = msg["return"]
                    break
                if "error" in msg:
                    err = msg["error"]
                    raise QMPError(f"QMP {name} failed: {err.get('desc', err)}",
                                   "see QEMU's QMP reference for the command")
    return result


def wait_ready(sock_path: Path, timeout: float, alive: Any = None) -> None:
    """Wait until QEMU answers on QMP; `alive()` returning False aborts early."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise QMPError("QEMU exited before its monitor came up", "see QEMU's messages above")
        if sock_path.exists():
            try:
                execute(sock_path, "query-status", timeout=2.0)
                return
            except (QMPError, OSError) as exc:
                last = exc
        time.sleep(0.05)
    raise QMPError(f"QEMU's QMP socket did not answer within {timeout:.0f}s: {last}",
                   "QEMU may be stuck; run with --debug to see its command line")


# SHUTDOWN reasons that mean the machine reset rather than powered off (QEMU's ShutdownCause).
RESET_REASONS = frozenset({"guest-reset", "host-qmp-system-reset", "guest-panic"})


class EventWatch:
    """Records QEMU's SHUTDOWN events on a monitor of its own, held for the process's life.

    With -no-reboot a reset ends QEMU like a poweroff does; the event's reason tells them
    apart. A second monitor because a QMP socket serves one client at a time and `execute`
    must stay free for commands.
    """

    def __init__(self, sock_path: Path, timeout: float = 10.0) -> None:
        self.reasons: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(str(sock_path))
            stream = self._sock.makefile("rwb")
            _read_message(stream)  # greeting
            stream.write(b'{"execute": "qmp_capabilities"}\n')
            stream.flush()
            _read_message(stream)  # {"return": {}}: events flow from here on
        except (OSError, QMPError) as exc:
            self._sock.close()
            raise QMPError(f"cannot watch QEMU's events on {sock_path}: {exc}",
                           "QEMU exited while starting; see its messages") from exc
        self._sock.settimeout(None)
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True,
                                        name="qmp-events")
        self._thread.start()

    def _read(self, stream: Any) -> None:
        try:
            while True:
                msg = _read_message(stream)
                if msg.get("event") == "SHUTDOWN":
                    self.reasons.append(str(msg.get("data", {}).get("reason", "")))
        except (QMPError, OSError, ValueError):
            pass  # QEMU exited: the socket closed
        finally:
            self._sock.close()

    def reset_seen(self, timeout: float = 5.0) -> bool:
        """After QEMU exited: did the machine reset (rather than power off or get killed)?"""
        self._thread.join(timeout)  # the reader ends at the socket's EOF
        return bool(self.reasons) and self.reasons[-1] in RESET_REASONS
