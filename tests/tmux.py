"""A terminal program driven as a person drives it: a detached tmux session on a server
socket of its own, keys typed with `send-keys`, the screen read with `capture-pane`. Used by
the interactive installer's tests (on the host, and over `ssh -tt` into a live guest)."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from kairos.run import run
from tests.helpers import ROOT

ANSWER_TIMEOUT = 60.0  # seconds a question may take to appear (the plan reads the slot image)


class Pane:
    """One detached tmux session on its own server socket, running one command."""

    def __init__(self, socket: str, exit_file: Path) -> None:
        self.socket = socket
        self.exit_file = exit_file

    def tmux(self, *args: str) -> str:
        return run(["tmux", "-L", self.socket, *args]).stdout

    def start(self, argv: list[str], tmpdir: Path) -> None:
        # The pane stays open after the command, so its last screen can still be read; the
        # shell traps Ctrl-C (a handler, not an ignore: the command still gets it) to live on.
        script = (f"trap : INT; {shlex.join(argv)}; rc=$?; echo \"EXIT=$rc\"; echo $rc > "
                  f"{shlex.quote(str(self.exit_file))}; exec sleep 3600")
        self.tmux("new-session", "-d", "-s", "install", "-x", "200", "-y", "50",
                  "-c", str(ROOT), "-e", f"TMPDIR={tmpdir}", "sh", "-c", script)

    def screen(self) -> str:
        """Everything the pane showed, the scrollback included, wrapped lines joined."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-3000", "-t", "install")

    def wait_for(self, text: str, count: int = 1, timeout: float = ANSWER_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if screen.count(text) >= count:
                return screen
            if self.exit_file.exists() or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} (x{count}) did not appear; the screen:\n"
                                     f"{screen}")
            time.sleep(0.2)

    def type(self, text: str) -> None:
        """Type a line and press Enter (an empty text: Enter alone takes the default)."""
        if text:
            self.tmux("send-keys", "-t", "install", "-l", "--", text)
        self.tmux("send-keys", "-t", "install", "Enter")

    def key(self, name: str) -> None:
        self.tmux("send-keys", "-t", "install", name)

    def exit_code(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while not self.exit_file.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"the installer did not finish; the screen:\n"
                                     f"{self.screen()}")
            time.sleep(0.5)
        time.sleep(0.2)  # the code is written once the file exists; let the shell finish
        return int(self.exit_file.read_text().strip())
