"""Health checks (agent/health.py): cloud-config parsing and schema, which health.d files may
run as root and why others are skipped, and real processes: exit codes, output, a hanging
check killed at its timeout with its whole process group, the total timeout."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from kairos.agent import health
from kairos.agent.health import HealthCheck
from kairos.config.validate import validate_data

ME = os.geteuid()


def cfg(data: dict[str, Any]) -> health.AssessmentConfig:
    from kairos.config.collect import MergedConfig
    return health.parse_config(MergedConfig(data=data).get)


def script(path: Path, body: str, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    return path


def check(argv: list[str], timeout: float = 10, name: str = "c") -> HealthCheck:
    return HealthCheck(name, tuple(argv), timeout, health.CONFIG)


def _gone(pid: int) -> bool:
    """The process is gone (or a zombie nobody has reaped yet: it runs no more)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


# -- configuration ---------------------------------------------------------------------------


def test_defaults_without_config() -> None:
    c = cfg({})
    assert (c.tries, c.timeout, c.checks, c.problems) == (1, 300.0, (), ())


def test_checks_from_config() -> None:
    c = cfg({"boot_assessment": {"tries": 3, "timeout": 120},
             "health_checks": [{"name": "k3s-api", "command": "curl -fsk https://127.0.0.1:6443/ping",
                                "timeout": 5},
                               {"command": ["/usr/bin/test", "-e", "/run/ok"]}]})
    assert (c.tries, c.timeout, c.problems) == (3, 120.0, ())
    api, second = c.checks
    assert api == HealthCheck("k3s-api", ("/bin/sh", "-c", "curl -fsk https://127.0.0.1:6443/ping"),
                              5.0, "cloud-config")
    assert second.name == "health_checks[1]" and second.argv[0] == "/usr/bin/test"
    assert second.timeout == health.DEFAULT_CHECK_TIMEOUT


def test_entries_that_cannot_run_are_problems(caplog: pytest.LogCaptureFixture) -> None:
    c = cfg({"boot_assessment": {"timeout": "soon"},
             "health_checks": [{"name": "no-command"}, "just text", {"command": "true",
                                                                      "timeout": 0},
                               {"command": [1, 2]}, {"command": "true"}]})
    assert c.timeout == health.DEFAULT_TOTAL_TIMEOUT and "boot_assessment.timeout" in caplog.text
    assert len(c.checks) == 1
    assert [p.split(" ")[0] for p in c.problems] == [
        "health_checks[0]", "health_checks[1]", "health_checks[2]", "health_checks[3]"]
    assert "no command" in c.problems[0] and "timeout" in c.problems[2]
    # Each problem is a failed check: a boot whose checks cannot be read is not good.
    report = health.run_checks(c.checks, 10, problems=c.problems)
    assert not report.ok and [r.ok for r in report.results] == [False] * 4 + [True]


def test_schema_validates_the_keys() -> None:
    good = {"boot_assessment": {"tries": 9, "timeout": 30.5},
            "health_checks": [{"name": "a", "command": "true", "timeout": 1},
                              {"command": ["/bin/true"]}]}
    assert validate_data(good) == []
    for bad, words in (({"boot_assessment": {"tries": 0}}, "at least 1"),
                       ({"boot_assessment": {"tries": 10}}, "at most 9"),
                       ({"health_checks": [{"name": "x"}]}, "command"),
                       ({"health_checks": [{"command": "true", "timeout": "5s"}]}, "number"),
                       ({"health_checks": {"command": "true"}}, "list")):
        found = [d for d in validate_data(bad) if d.is_error]
        assert found and words in found[0].message, (bad, [d.message for d in found])
    warn = validate_data({"health_checks": [{"command": "true", "retries": 2}]})
    assert [d.severity for d in warn] == ["warning"]


# -- health.d --------------------------------------------------------------------------------


def test_executables_in_name_order_across_directories(tmp_path: Path) -> None:
    local, oem = tmp_path / "local/health.d", tmp_path / "oem/health.d"
    script(local / "20-b", "exit 0")
    script(oem / "10-a", "exit 0")
    script(oem / "30-c", "exit 0")
    for d in (local, oem):
        d.chmod(0o755)
    checks, skipped = health.find_executables((local, oem), trusted_uid=ME)
    assert [c.name for c in checks] == ["10-a", "20-b", "30-c"] and skipped == []
    assert checks[0].argv == (str(oem / "10-a"),) and checks[0].source == str(oem / "10-a")
    assert health.find_executables((tmp_path / "missing",), trusted_uid=ME) == ([], [])


def test_unsafe_files_are_skipped_with_the_reason(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "health.d"
    script(d / "ok", "exit 0")
    script(d / "plain", "exit 0", mode=0o644)
    script(d / "group-writable", "exit 0", mode=0o775)
    script(d / "world-writable", "exit 0", mode=0o757)
    script(d / ".hidden", "exit 0")
    (d / "link").symlink_to(d / "ok")
    (d / "subdir").mkdir()
    d.chmod(0o755)
    checks, skipped = health.find_executables((d,), trusted_uid=ME)
    assert [c.name for c in checks] == ["ok"]
    why = {Path(s.path).name: s.reason for s in skipped}
    assert why == {".hidden": "a hidden file",
                   "group-writable": "writable by group (mode 0775)",
                   "link": "not a regular file (links are not followed)",
                   "plain": "not executable",
                   "subdir": "not a regular file (links are not followed)",
                   "world-writable": "writable by others (mode 0757)"}
    assert "world-writable skipped: writable by others" in caplog.text
    # Files the trusted owner (root on a device) does not own are not run either.
    checks, skipped = health.find_executables((d,), trusted_uid=ME + 1)
    assert checks == []
    assert f"owned by uid {ME}, not root" in skipped[0].reason
    assert "nothing in it is run" in skipped[0].reason  # the directory itself


def test_a_writable_directory_runs_nothing(tmp_path: Path) -> None:
    d = tmp_path / "health.d"
    script(d / "ok", "exit 0")
    d.chmod(0o777)
    checks, skipped = health.find_executables((d,), trusted_uid=ME)
    assert checks == [] and len(skipped) == 1
    assert skipped[0].path == str(d)
    assert "directory is writable by group and others (mode 0777)" in skipped[0].reason
    link = tmp_path / "link.d"
    link.symlink_to(d)
    assert health.find_executables((link,), trusted_uid=ME)[1][0].reason.startswith(
        "not a directory")


# -- running ---------------------------------------------------------------------------------


def test_exit_codes_and_output(tmp_path: Path) -> None:
    ok = health.run_check(check(["/bin/sh", "-c", "echo fine"]))
    assert ok.ok and ok.exit_code == 0 and ok.log == "fine\n" and not ok.timed_out
    bad = health.run_check(check(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]))
    assert (bad.ok, bad.exit_code, bad.error) == (False, 3, "")
    assert "out\n" in bad.log and "err\n" in bad.log
    noisy = health.run_check(check(["/bin/sh", "-c", "yes line | head -c 100000"]))
    assert noisy.ok and len(noisy.log) == health.LOG_TAIL
    missing = health.run_check(check([str(tmp_path / "nope")]))
    assert not missing.ok and missing.error.startswith("cannot start") and missing.exit_code is None
    killed = health.run_check(check(["/bin/sh", "-c", "kill -9 $$"]))
    assert not killed.ok and killed.error == "killed by signal 9"


def test_a_hanging_check_is_killed_with_its_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hang = check(["/bin/sh", "-c", f"sleep 60 & echo $! > {pids}; echo started; sleep 60"],
                 timeout=0.5, name="hang")
    start = time.monotonic()
    result = health.run_check(hang)
    took = time.monotonic() - start
    assert took < 5, took
    assert (result.ok, result.timed_out, result.exit_code) == (False, True, None)
    assert result.error == "killed after 0.5 s (its timeout)" and result.log == "started\n"
    background = int(pids.read_text())
    deadline = time.monotonic() + 5
    while not _gone(background) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(background), "the check's background child survived"


def test_what_a_passing_check_leaves_running_is_killed(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    result = health.run_check(check(["/bin/sh", "-c", f"sleep 60 & echo $! > {pids}; exit 0"]))
    assert result.ok
    background = int(pids.read_text())
    deadline = time.monotonic() + 5
    while not _gone(background) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(background)


def test_the_total_timeout_bounds_all_checks(tmp_path: Path) -> None:
    checks = [check(["/bin/sh", "-c", "sleep 0.2"], name="quick"),
              check(["sleep", "30"], timeout=60, name="slow"),
              check(["/bin/true"], name="late")]
    start = time.monotonic()
    report = health.run_checks(checks, 1.0)
    assert time.monotonic() - start < 5
    quick, slow, late = report.results
    assert quick.ok
    assert slow.timed_out and "what was left of boot_assessment.timeout" in slow.error
    assert not late.ok and late.error.startswith("not run: the 1 s of boot_assessment.timeout")
    assert not report.ok


def test_assess_health_runs_config_then_files_and_is_json(tmp_path: Path) -> None:
    d = tmp_path / "health.d"
    order = tmp_path / "order"
    script(d / "10-file", f"echo file >> {order}")
    script(d / "20-fails", "echo broken; exit 1")
    script(d / "note.txt", "", mode=0o644)
    d.chmod(0o755)
    c = cfg({"health_checks": [{"name": "conf", "command": f"echo conf >> {order}"}]})
    report = health.assess_health(c, (d,), trusted_uid=ME)
    assert order.read_text().split() == ["conf", "file"]
    assert [(r.name, r.ok) for r in report.results] == [("conf", True), ("10-file", True),
                                                         ("20-fails", False)]
    assert not report.ok
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["skipped"] == [{"path": str(d / "note.txt"), "reason": "not executable"}]
    assert doc["results"][2]["log"] == "broken\n" and doc["results"][2]["exit_code"] == 1
    assert health.assess_health(cfg({}), (), trusted_uid=ME).ok  # no checks: a good boot
