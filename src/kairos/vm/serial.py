"""Reading a guest's serial log while it grows: regex waits and a tail for error messages."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from kairos.errors import KairosError

# Control sequences firmware and consoles print (colours, cursor moves); stripped from tails
# so an error message stays readable.
_ANSI = re.compile(r"\x1b\[[0-9;?=]*[A-Za-z]|\x1b[c()][0-9A-Za-z]?|[\x00-\x08\x0b-\x1f\x7f]")


def clean(text: str) -> str:
    return _ANSI.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def tail(text: str, lines: int = 30) -> str:
    kept = [ln for ln in clean(text).splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


class SerialLog:
    """A log file that QEMU appends to; offsets are byte positions in it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def read(self, since: int = 0) -> str:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(since)
                return fh.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, pattern: str, timeout: float, *, since: int = 0,
                 alive: Callable[[], bool] | None = None,
                 poll: float = 0.2) -> str:
        """Return the first match of `pattern` in the log after byte `since`.

        On timeout (or when `alive()` says QEMU is gone) raise KairosError with the last 30
        lines of the log, so a failed boot explains itself.
        """
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        buf = b""
        offset = since
        while True:
            # Checked before reading, so what QEMU wrote just before exiting is still seen.
            gone = alive is not None and not alive()
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                buf += chunk
                offset += len(chunk)
                # Search the cleaned text: escape sequences may split a word on the wire.
                found = regex.search(clean(buf.decode("utf-8", errors="replace")))
                if found:
                    return found.group(0)
            if gone or time.monotonic() >= deadline:
                why = "QEMU exited" if gone else f"timed out after {timeout:.0f}s"
                last = tail(buf.decode("utf-8", errors="replace")) or "(no serial output)"
                raise KairosError(
                    f"serial log {self.path}: {why} waiting for /{pattern}/; last lines:\n{last}",
                    "the guest did not get that far; read the whole serial log",
                )
            time.sleep(poll)
