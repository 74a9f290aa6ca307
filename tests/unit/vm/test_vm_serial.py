"""Waiting on a growing serial log: matches, offsets, timeouts with the last 30 lines."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from kairos.errors import KairosError
from kairos.vm.serial import SerialLog, clean, tail


def test_finds_text_written_later(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"SeaBIOS (version 1.16)\r\n")

    def later() -> None:
        time.sleep(0.3)
        with open(log, "ab") as fh:
            fh.write(b"Welcome to \x1b[1mDebian\x1b[0m\r\nlogin: ")

    threading.Thread(target=later, daemon=True).start()
    assert SerialLog(log).wait_for(r"Welcome to Debian", timeout=30) == "Welcome to Debian"


def test_since_skips_earlier_output(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"login: \n")
    serial = SerialLog(log)
    mark = serial.size()
    with pytest.raises(KairosError):
        serial.wait_for("login:", timeout=0.3, since=mark, poll=0.05)
    with open(log, "ab") as fh:
        fh.write(b"second boot\nlogin: \n")
    assert serial.wait_for("login:", timeout=5, since=mark) == "login:"


def test_timeout_message_has_last_30_lines(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_text("".join(f"line {i:02d}\r\n" for i in range(1, 41)))
    with pytest.raises(KairosError) as err:
        SerialLog(log).wait_for("never appears", timeout=0.3, poll=0.05)
    msg = str(err.value)
    assert "timed out" in msg and "never appears" in msg
    assert "line 40" in msg and "line 11" in msg
    assert "line 10" not in msg
    assert "\r" not in msg


def test_exited_qemu_stops_the_wait(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_text("Kernel panic - not syncing\n")
    start = time.monotonic()
    with pytest.raises(KairosError) as err:
        SerialLog(log).wait_for("login:", timeout=600, alive=lambda: False)
    assert "QEMU exited" in str(err.value) and "Kernel panic" in str(err.value)
    assert time.monotonic() - start < 60


def test_missing_log_means_no_output(tmp_path: Path) -> None:
    with pytest.raises(KairosError) as err:
        SerialLog(tmp_path / "none.log").wait_for("x", timeout=0.1, poll=0.05)
    assert "(no serial output)" in str(err.value)


def test_clean_strips_escapes_and_tail_drops_blank_lines() -> None:
    assert clean("\x1b[2J\x1b[01;01HBdsDxe: ok\r\n") == "BdsDxe: ok\n"
    assert tail("a\n\n\nb\nc\n", lines=2) == "b\nc"
