"""Run a device action in step mode and snapshot the disk at each of its markers.

The agent's long actions (upgrade, rollback, reset; src/kairos/agent/phases.py) print a
marker at each phase and, in step mode, pause there until SIGUSR1. At each pause the test
takes an internal snapshot of the boot disk through QMP: the disk exactly as a power cut at
that moment would leave it. Reverting to a snapshot and cold-booting is then the cut.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from kairos.vm.machine import VM

DISK_DEVICE = "d0"  # the boot disk's id in src/kairos/vm/argv.py


@dataclass
class Stepped:
    """What one stepped run left: the snapshots in the order taken, its exit code."""

    prefix: str
    taken: list[str] = field(default_factory=list)
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""

    def snapshot(self, name: str) -> str:
        return f"{self.prefix}-{name}"


def snapshot(vm: VM, name: str) -> None:
    vm.qmp("blockdev-snapshot-internal-sync", {"device": DISK_DEVICE, "name": name})


def step_through(vm: VM, command: str, env: dict[str, str], who: str,
                 names: Sequence[str], cut: Collection[str], prefix: str, *,
                 timeout: float = 1200.0, random_after: Mapping[str, float] | None = None,
                 after: Callable[[str], None] | None = None) -> Stepped:
    """Start `command` as root with `env` (its pause/step variables), in the background; at
    each marker of `names` snapshot the disk if the name is in `cut`; once it goes on, for a
    name in `random_after` wait that many seconds and snapshot `random-after-NAME` (a cut
    while the next step is under way), then call `after(name)`; return when the command has
    ended."""
    run = Stepped(prefix)
    assign = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    out = f"/run/{prefix}"
    # The action's own pid gets the signals (`env` execs it): the shell around it would
    # die of SIGUSR1.
    script = (f"env {assign} {command} > {out}.out 2> {out}.err < /dev/null & "
              f"echo $! > {out}.pid; wait $!; echo $? > {out}.rc")
    vm.ssh(f"sudo -n rm -f {out}.rc {out}.pid; sudo -n setsid sh -c {shlex.quote(script)} "
           "> /dev/null 2>&1 < /dev/null &")
    mark: int | None = None
    for name in names:
        vm.wait_for_serial(f"{who}: paused at {name}", timeout=timeout, since=mark)
        if name in cut:
            snapshot(vm, run.snapshot(name))
            run.taken.append(name)
        mark = vm.serial_mark()
        vm.ssh(f"sudo -n sh -c 'kill -USR1 $(cat {out}.pid)'")
        if random_after and name in random_after:
            time.sleep(random_after[name])
            snapshot(vm, run.snapshot(f"random-after-{name}"))
            run.taken.append(f"random-after-{name}")
        if after is not None:
            after(name)
    deadline = time.monotonic() + timeout
    while vm.ssh(f"test -e {out}.rc", check=False).returncode != 0:
        assert time.monotonic() < deadline, vm.ssh(f"tail -5 {out}.err", check=False).stdout
        time.sleep(2)
    run.returncode = int(vm.ssh(f"cat {out}.rc").stdout.strip())
    run.stdout = vm.ssh(f"cat {out}.out").stdout
    run.stderr = vm.ssh(f"cat {out}.err").stdout
    return run
