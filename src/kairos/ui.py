"""Progress and messages for people: plain lines when there is no terminal."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator

log = logging.getLogger("kairos")


def setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(message)s" if not debug else "%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """Log a step's start and end with its duration (mkosi's complete_step)."""
    log.info("‣ %s…", title)
    start = time.monotonic()
    try:
        yield
    except BaseException:
        log.info("✗ %s failed after %.1fs", title, time.monotonic() - start)
        raise
    log.info("✓ %s (%.1fs)", title, time.monotonic() - start)


class Progress:
    """A byte counter printed at most once a second; plain lines on a non-terminal."""

    def __init__(self, title: str, total: int | None = None) -> None:
        self.title = title
        self.total = total
        self.done = 0
        self._last = 0.0
        self._start = time.monotonic()
        self._tty = sys.stderr.isatty()

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= (0.2 if self._tty else 5.0):
            self._last = now
            self._print()

    def _print(self) -> None:
        mib = self.done / 2**20
        pct = f" {100 * self.done // self.total}%" if self.total else ""
        secs = time.monotonic() - self._start
        rate = f" {mib / secs:.1f} MiB/s" if secs >= 0.5 else ""
        text = f"  {self.title}: {mib:.1f} MiB{pct}{rate}"
        if self._tty:
            sys.stderr.write("\r" + text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def finish(self) -> None:
        self._print()
        if self._tty:
            sys.stderr.write("\n")
