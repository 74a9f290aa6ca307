"""Named markers for long, resumable work (`kairos upgrade`'s phases, `kairos reset`'s steps).

Every marker is printed as `<marker> NAME` on stderr and, on a device, in the kernel log (so
on the serial console), with its time since the start. A name listed in the pause variable
(comma-separated, or `all`) stops the work there for good, so a test can cut the power at it;
with the step variable set to 1 it waits for SIGUSR1 and goes on instead, so a test can
snapshot the disk at each marker of one run. Child processes (mksquashfs) are stopped while
paused, so a pause mid-write stays mid-write.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

from kairos.errors import BadInput


class Markers:
    """Markers with their times; subclasses name them and their environment variables."""

    names: tuple[str, ...] = ()
    pause_env = ""
    step_env: str | None = None
    marker = ""
    who = ""
    kind = "phase"

    def __init__(self, pause: str = "", *, step: bool = False, kmsg: Path | None = None,
                 hook: Callable[[str], None] | None = None) -> None:
        names = {p.strip() for p in pause.split(",") if p.strip()}
        self.pause = set(self.names) if names == {"all"} else names
        unknown = self.pause - set(self.names)
        if unknown:
            raise BadInput(f"{self.pause_env} names unknown {self.kind}(s): "
                           f"{', '.join(sorted(unknown))}",
                           f"{self.kind}s: {', '.join(self.names)} (or all)")
        self.step = step
        if step:  # a stray SIGUSR1 must wait for the next pause, not kill the work
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        self.kmsg = kmsg
        self.hook = hook  # tests: called after each marker
        self.start = time.monotonic()
        self.times: dict[str, float] = {}

    @classmethod
    def from_env(cls, hook: Callable[[str], None] | None = None) -> Self:
        # The kernel log (hence the serial console) only on a device, not a build host.
        kmsg = Path("/dev/kmsg") if Path("/run/cos").is_dir() else None
        step = cls.step_env is not None and os.environ.get(cls.step_env) == "1"
        return cls(os.environ.get(cls.pause_env, ""), step=step, kmsg=kmsg, hook=hook)

    def mark(self, name: str) -> None:
        assert name in self.names, name
        if name in self.times:
            return
        self.times[name] = round(time.monotonic() - self.start, 3)
        self._say(f"{self.marker} {name}")
        if self.hook is not None:
            self.hook(name)
        if name in self.pause:
            self._hold(name)

    def _hold(self, name: str) -> None:
        children = signal_children(signal.SIGSTOP)
        if not self.step:
            self._say(f"{self.who}: paused at {name} (kill me)")
            while True:
                signal.pause()
        self._say(f"{self.who}: paused at {name} (SIGUSR1 goes on)")
        signal.sigwait({signal.SIGUSR1})
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)

    def _say(self, line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        if self.kmsg is not None and self.kmsg.exists():
            with contextlib.suppress(OSError), open(self.kmsg, "w") as fh:
                fh.write(f"<5>{line}\n")


# `kairos upgrade`'s phases: upgrade.py marks them, and so do the fetchers (agent/fetch.py,
# which reset and the installer reuse with markers that only log) and the flips (agent/slots.py).
PHASES = ("start", "preflight", "pulling", "pull-partial", "pulled", "unpacked",
          "slot-writing", "slot-written", "slot-synced", "records-written", "staged",
          "flipped", "checkpointed", "after-upgrade", "done")
PAUSE_ENV = "KAIROS_UPGRADE_PAUSE"
STEP_ENV = "KAIROS_UPGRADE_STEP"
MARK = "kairos-upgrade: phase"


class Phases(Markers):
    """The upgrade's phase markers."""

    names: tuple[str, ...] = PHASES
    pause_env = PAUSE_ENV
    step_env: str | None = STEP_ENV
    marker = MARK
    who = "kairos-upgrade"
    kind = "phase"


def signal_children(sig: int) -> list[int]:
    """Send `sig` to our child processes; returns their pids."""
    pids: list[int] = []
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            for pid in (task / "children").read_text().split():
                os.kill(int(pid), sig)
                pids.append(int(pid))
    return pids
