"""Health checks: what must pass for a boot to count as good (docs/lifecycle.md).

Two kinds, run in this order, all with a timeout:

- `health_checks:` in cloud-config: `{name, command, timeout}` each. A command string runs
  under `/bin/sh -c` (like a stage's `commands`), a list is an argv.
- executables in `/usr/local/lib/kairos/health.d/` and `/oem/health.d/` (greenboot's
  `check/required.d`), in name order across both directories.

/usr/local is the persistent partition and /oem holds user config: a file there runs as root
at every boot, so only regular executable files owned by root and not writable by group or
others are run, in a directory that is the same; anything else is skipped and the report says
why. A skipped file does not fail the boot: it would let whoever planted it force a rollback.

A check that does not exit within its timeout is killed together with its process group and
counts as failed. `boot_assessment.timeout` bounds all checks together: a check never gets
more than what is left of it, and checks left when it is spent fail without running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kairos.errors import KairosError
from kairos.run import popen

log = logging.getLogger("kairos.health")

HEALTH_DIRS = (Path("/usr/local/lib/kairos/health.d"), Path("/oem/health.d"))
DEFAULT_CHECK_TIMEOUT = 60.0
DEFAULT_TOTAL_TIMEOUT = 300.0
LOG_TAIL = 2000  # characters of a check's output kept in its result
POLL = 0.05  # seconds between looks at a running check
CONFIG = "cloud-config"


@dataclass(frozen=True)
class HealthCheck:
    name: str
    argv: tuple[str, ...]
    timeout: float
    source: str  # CONFIG, or the executable's path


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class CheckResult:
    name: str
    source: str
    ok: bool
    exit_code: int | None = None  # None: not run, or killed at its timeout
    timed_out: bool = False
    seconds: float = 0.0
    log: str = ""  # the tail of its stdout and stderr
    error: str = ""  # why it failed when the exit code does not say

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AssessmentConfig:
    """`boot_assessment` and `health_checks` of the merged cloud-config. `problems` are
    entries that cannot be run (each becomes a failed check: an assessment that cannot read
    a check must not call the boot good)."""

    tries: int = 1
    timeout: float = DEFAULT_TOTAL_TIMEOUT
    checks: tuple[HealthCheck, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass
class HealthReport:
    ok: bool
    results: list[CheckResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "seconds": self.seconds,
                "results": [r.to_json() for r in self.results],
                "skipped": [asdict(s) for s in self.skipped]}


# -- configuration ---------------------------------------------------------------------------


def _positive(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def _check_from(entry: Any, index: int) -> HealthCheck | str:
    """One `health_checks` entry as a check, or the reason it cannot be run."""
    where = f"health_checks[{index}]"
    if not isinstance(entry, Mapping):
        return f"{where} is not a map with a command"
    name = entry.get("name")
    name = str(name) if isinstance(name, str | int | float) and str(name).strip() else where
    command = entry.get("command")
    argv: tuple[str, ...]
    if isinstance(command, str) and command.strip():
        argv = ("/bin/sh", "-c", command)
    elif (isinstance(command, list) and command
          and all(isinstance(a, str) for a in command)):
        argv = tuple(command)
    else:
        return f"{where} ({name}) has no command (a string or a list of strings)"
    timeout = entry.get("timeout")
    seconds = DEFAULT_CHECK_TIMEOUT if timeout is None else _positive(timeout)
    if seconds is None:
        return f"{where} ({name}): timeout must be a number of seconds above 0"
    return HealthCheck(name, argv, seconds, CONFIG)


def parse_config(get: Callable[[str], Any]) -> AssessmentConfig:
    """From a cloud-config getter (`MergedConfig.get`, or `dict.get` of a flat mapping of
    dotted keys in tests). Bad `boot_assessment` values fall back to the defaults with a
    warning; `kairos upgrade` refuses a bad `tries` itself (tries_from)."""
    timeout = get("boot_assessment.timeout")
    total = DEFAULT_TOTAL_TIMEOUT if timeout is None else _positive(timeout)
    if total is None:
        log.warning("boot_assessment.timeout %r is not a number of seconds above 0; "
                    "using %d", timeout, DEFAULT_TOTAL_TIMEOUT)
        total = DEFAULT_TOTAL_TIMEOUT
    tries = get("boot_assessment.tries")
    if not (isinstance(tries, int) and not isinstance(tries, bool) and 1 <= tries <= 9):
        tries = 1
    entries = get("health_checks")
    checks: list[HealthCheck] = []
    problems: list[str] = []
    if entries is not None and not isinstance(entries, list):
        problems.append("health_checks is not a list")
        entries = []
    for i, entry in enumerate(entries or []):
        found = _check_from(entry, i)
        if isinstance(found, str):
            problems.append(found)
        else:
            checks.append(found)
    return AssessmentConfig(tries, total, tuple(checks), tuple(problems))


# -- executables in health.d -----------------------------------------------------------------


def _unsafe(st: os.stat_result, trusted_uid: int) -> str:
    """Why a file or directory with this stat may not be trusted to run as root ("" if it
    may)."""
    if st.st_uid != trusted_uid:
        return f"owned by uid {st.st_uid}, not root"
    who = [w for bit, w in ((0o020, "group"), (0o002, "others")) if st.st_mode & bit]
    if who:
        return f"writable by {' and '.join(who)} (mode {st.st_mode & 0o7777:04o})"
    return ""


def scan_dir(directory: Path, *, timeout: float = DEFAULT_CHECK_TIMEOUT,
             trusted_uid: int = 0) -> tuple[list[HealthCheck], list[Skipped]]:
    """The executables of one health.d directory that may run, and the files that may not,
    with why. A missing directory is no checks."""
    try:
        dst = os.lstat(directory)
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    if not stat.S_ISDIR(dst.st_mode):
        return [], [Skipped(str(directory), "not a directory (a link is not followed)")]
    why = _unsafe(dst, trusted_uid)
    if why:
        return [], [Skipped(str(directory), f"the directory is {why}: nothing in it is run")]
    checks: list[HealthCheck] = []
    skipped: list[Skipped] = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        path = Path(entry.path)
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            skipped.append(Skipped(str(path), f"cannot stat it: {exc.strerror}"))
            continue
        if entry.name.startswith("."):
            why = "a hidden file"
        elif not stat.S_ISREG(st.st_mode):
            why = "not a regular file (links are not followed)"
        elif not st.st_mode & 0o111:
            why = "not executable"
        else:
            why = _unsafe(st, trusted_uid)
        if why:
            skipped.append(Skipped(str(path), why))
        else:
            checks.append(HealthCheck(entry.name, (str(path),), timeout, str(path)))
    return checks, skipped


def find_executables(dirs: Sequence[Path] = HEALTH_DIRS, *, trusted_uid: int = 0
                     ) -> tuple[list[HealthCheck], list[Skipped]]:
    """Every health.d executable, in name order across the directories (a tie keeps the
    directories' order), and every skipped file."""
    checks: list[HealthCheck] = []
    skipped: list[Skipped] = []
    for directory in dirs:
        found, left = scan_dir(directory, trusted_uid=trusted_uid)
        checks += found
        skipped += left
    order = {str(d): i for i, d in enumerate(dirs)}
    checks.sort(key=lambda c: (c.name, order.get(str(Path(c.source).parent), 0)))
    for s in skipped:
        log.warning("health check %s skipped: %s", s.path, s.reason)
    return checks, skipped


# -- running ---------------------------------------------------------------------------------


def _exited(pid: int, deadline: float) -> bool:
    """Wait for `pid` to exit without reaping it (its process group stays addressable), until
    `deadline` (monotonic); whether it exited."""
    while True:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is not None and info.si_pid == pid:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(POLL, left))


def _kill_group(pgid: int) -> None:
    # The leader is not reaped yet, so the group id cannot belong to anyone else.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(fh: Any) -> str:
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(max(0, size - LOG_TAIL * 4))
    text: str = fh.read().decode("utf-8", "replace")
    return text[-LOG_TAIL:]


def run_check(check: HealthCheck, timeout: float | None = None) -> CheckResult:
    """Run one check in its own process group with stdin closed and its output in a temp
    file (a pipe would wait for any child that keeps it open); `timeout` overrides the
    check's own (what is left of the total). Whatever the check left running in its group
    is killed when it ends."""
    limit = check.timeout if timeout is None else timeout
    start = time.monotonic()
    result = CheckResult(check.name, check.source, ok=False)
    with tempfile.TemporaryFile() as out:
        try:
            proc = popen(list(check.argv), stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
        except (OSError, KairosError) as exc:
            result.error = f"cannot start {check.argv[0]}: {getattr(exc, 'strerror', None) or exc}"
            return result
        try:
            finished = _exited(proc.pid, start + limit)
        finally:
            _kill_group(proc.pid)
            proc.wait()
        result.seconds = round(time.monotonic() - start, 3)
        result.log = _tail(out)
    if not finished:
        result.timed_out = True
        result.error = f"killed after {limit:g} s (its timeout)"
        return result
    result.exit_code = proc.returncode
    result.ok = proc.returncode == 0
    if proc.returncode < 0:
        result.error = f"killed by signal {-proc.returncode}"
    return result


def run_checks(checks: Sequence[HealthCheck], total: float, *,
               problems: Sequence[str] = (), skipped: Sequence[Skipped] = ()) -> HealthReport:
    """Every check in order within `total` seconds; `problems` (config entries that cannot
    run) are failed results first."""
    start = time.monotonic()
    deadline = start + total
    report = HealthReport(ok=True, skipped=list(skipped))
    for problem in problems:
        report.results.append(CheckResult(problem.split(" ", 1)[0], CONFIG, ok=False,
                                          error=problem))
    for check in checks:
        left = deadline - time.monotonic()
        if left <= 0:
            report.results.append(CheckResult(
                check.name, check.source, ok=False,
                error=f"not run: the {total:g} s of boot_assessment.timeout were spent"))
            continue
        result = run_check(check, min(check.timeout, left))
        if result.timed_out and left < check.timeout:
            result.error = f"killed after {left:.3g} s (what was left of boot_assessment.timeout)"
        report.results.append(result)
    for r in report.results:
        if r.ok:
            log.info("health check %s: ok (%.1f s)", r.name, r.seconds)
        else:
            why = r.error or f"exit code {r.exit_code}"
            last = r.log.strip().splitlines()[-1:] if r.log.strip() else []
            log.warning("health check %s failed: %s%s", r.name, why,
                        f" ({last[0][:200]})" if last else "")
    report.ok = all(r.ok for r in report.results)
    report.seconds = round(time.monotonic() - start, 3)
    return report


def assess_health(cfg: AssessmentConfig, dirs: Sequence[Path] = HEALTH_DIRS, *,
                  trusted_uid: int = 0) -> HealthReport:
    """All checks of this device: cloud-config's, then health.d's."""
    files, skipped = find_executables(dirs, trusted_uid=trusted_uid)
    return run_checks([*cfg.checks, *files], cfg.timeout, problems=cfg.problems,
                      skipped=skipped)
