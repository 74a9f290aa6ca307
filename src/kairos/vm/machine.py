"""One QEMU guest under test or at a person's terminal: start, watch, talk, cut power.

A VM object outlives its QEMU processes: after kill() (a power cut) or poweroff(), start()
boots the same disk again with the same firmware variables, SSH port and serial log, as a
real machine would. With `reboot="restart"` a guest's reset does the same by itself: QEMU
exits and the next look at the VM (running, the waits) starts a fresh one. close() (and
leaving the `with` block) ends QEMU and removes temp files.
"""

from __future__ import annotations

import ctypes
import logging
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from kairos.errors import BadInput, CommandFailed, KairosError
from kairos.run import Result, popen, require, run
from kairos.vm import netboot, qmp
from kairos.vm.argv import QEMU, Wiring, build_argv
from kairos.vm.cidata import build_cidata
from kairos.vm.config import VMConfig, detect_format, find_ovmf
from kairos.vm.net import free_port, preauth_failure, ssh_argv, ssh_banner, wait_banner
from kairos.vm.serial import SerialLog, tail

log = logging.getLogger("kairos.vm")

# Printed on every (re)boot: SeaBIOS's banner, OVMF's boot manager, the kernel's first line.
BOOT_MARKER = r"SeaBIOS \(version|BdsDxe: |Linux version \d"
_PR_SET_PDEATHSIG = 1
_PORT_CLASH = re.compile(r"host ?forward|hostfwd|Address already in use", re.IGNORECASE)


# Pauses between ssh tries when the connection ends before authentication (no command ran).
# OpenSSH 9.8+ (Debian 13) refuses a source for a while once its failed or unauthenticated
# connections add up (PerSourcePenalties), and every guest connection comes from QEMU's
# 10.0.2.2: probes and logins tried before the user exists count, so ride out ~30 s.
PREAUTH_BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0)


class VM:
    """A QEMU (TCG) guest; use as a context manager so QEMU never outlives the caller."""

    def __init__(self, config: VMConfig) -> None:
        self.config = config
        self.workdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.wiring: Wiring | None = None
        self.started_at = 0.0  # time.monotonic() when the current QEMU process started
        self._run_offset = 0  # serial log size when the current QEMU process started
        self._stderr: IO[bytes] | None = None
        self._http: netboot.DirServer | None = None  # serves config.netboot while wired
        self._events: qmp.EventWatch | None = None  # SHUTDOWN reasons (reboot="restart")
        self.restarts = 0  # fresh QEMU processes started for guest resets

    # -- set-up ---------------------------------------------------------------------------

    def prepare(self) -> list[str]:
        """Resolve files and ports (once per VM object) and return QEMU's argv."""
        if self.wiring is None:
            self.wiring = self._wire()
        return build_argv(self.config, self.wiring)

    def _wire(self) -> Wiring:
        cfg = self.config
        require(QEMU, "qemu-img")
        fmt = detect_format(cfg.disk) if cfg.disk is not None else None
        extra = tuple(detect_format(d) for d in cfg.extra_disks)
        firmware = find_ovmf(cfg.ovmf_dir) if cfg.uefi else None
        if cfg.netboot is not None:  # refuse a bad directory before anything is made
            netboot.find_script(cfg.netboot)
            netboot.check_rom()
        self.workdir = Path(tempfile.mkdtemp(prefix="kairos-vm-"))
        ovmf_vars = None
        if firmware is not None:
            # A private, writable vars store: boot entries the guest writes stay with this VM.
            ovmf_vars = self.workdir / "OVMF_VARS.fd"
            shutil.copyfile(firmware.vars_template, ovmf_vars)
        cidata = None
        if cfg.cloud_config is not None:
            cidata = build_cidata(cfg.cloud_config, self.workdir / "cidata.iso",
                                  hostname=cfg.hostname)
        serial_log = cfg.serial_log or self.workdir / "serial.log"
        serial_log.parent.mkdir(parents=True, exist_ok=True)
        serial_log.write_bytes(b"")  # a fresh log per VM; restarts append to it
        nb = None
        if cfg.netboot is not None:  # last: a thread that close() ends
            self._http = netboot.DirServer(cfg.netboot)
            nb = netboot.prepare(cfg.netboot, self.workdir, self._http)
        events = self.workdir / "events.sock" if cfg.reboot == "restart" else None
        return Wiring(disk_format=fmt, ssh_port=cfg.ssh_port or free_port(),
                      serial_log=serial_log, qmp_socket=self.workdir / "qmp.sock",
                      events_socket=events,
                      firmware=firmware, ovmf_vars=ovmf_vars, cidata=cidata,
                      extra_formats=extra, netboot=nb)

    def _w(self) -> Wiring:
        if self.wiring is None:
            raise KairosError("the VM has not been started", "call start() first")
        return self.wiring

    @property
    def ssh_port(self) -> int:
        return self._w().ssh_port

    @property
    def serial_log(self) -> SerialLog:
        return SerialLog(self._w().serial_log)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # -- process lifecycle ----------------------------------------------------------------

    def start(self, *, qmp_timeout: float = 30.0) -> VM:
        """Start QEMU and return once its monitor answers (the guest is then booting)."""
        if self.running:
            raise KairosError("the VM is already running", "stop() or kill() it first")
        for attempt in range(3):
            argv = self.prepare()
            self._spawn(argv)
            try:
                self._monitors_up(qmp_timeout)
                return self
            except qmp.QMPError:
                self.kill()
                err = self._stderr_tail()
                if self.config.ssh_port is None and _PORT_CLASH.search(err) and attempt < 2:
                    # Someone took the port we picked between bind and QEMU: pick another.
                    self.wiring = _replace_port(self._w(), free_port())
                    continue
                raise KairosError(f"QEMU did not start: {err or 'no error output'}",
                                  "run with --debug to see QEMU's command line") from None
        raise AssertionError("unreachable")

    def _monitors_up(self, timeout: float) -> None:
        w = self._w()
        qmp.wait_ready(w.qmp_socket, timeout, alive=self._alive)
        if w.events_socket is not None:
            self._events = qmp.EventWatch(w.events_socket)

    def _revive(self) -> None:
        """reboot="restart": QEMU ended because the guest reset: start a fresh one."""
        events = self._events
        if events is None or self.proc is None or self.proc.poll() is None:
            return
        self._events = None
        if not events.reset_seen():
            return  # powered off, quit or killed: stays off
        self.restarts += 1
        log.debug("the guest reset; starting a fresh QEMU (restart %d)", self.restarts)
        self._spawn(self.prepare())
        try:
            self._monitors_up(30.0)
        except qmp.QMPError as exc:
            self.kill()
            raise KairosError(f"QEMU did not restart after the guest's reboot: {exc}",
                              "see qemu.log in the VM's directory") from None

    def _spawn(self, argv: list[str]) -> None:
        w = self._w()
        assert self.workdir is not None
        w.qmp_socket.unlink(missing_ok=True)
        if w.events_socket is not None:
            w.events_socket.unlink(missing_ok=True)
        self._run_offset = self.serial_log.size()
        interactive = self.config.console != "log"
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = None if interactive else open(self.workdir / "qemu.log", "ab")  # noqa: SIM115
        self.started_at = time.monotonic()
        self.proc = popen(
            argv,
            stdin=None if interactive else subprocess.DEVNULL,
            stdout=None if interactive else self._stderr,
            stderr=None if interactive else self._stderr,
            # Tests: own session, so a Ctrl-C aimed at pytest does not bypass our cleanup.
            # A person's terminal: QEMU must stay in the foreground group to read keys.
            start_new_session=not interactive,
            preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread()
            else None,
        )
        log.debug("QEMU pid %d, ssh port %d, serial log %s", self.proc.pid, w.ssh_port,
                  w.serial_log)

    @property
    def running(self) -> bool:
        """The machine is on (with reboot="restart", across the guest's reboots)."""
        self._revive()
        return self._alive()

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float | None = None) -> int:
        """Wait for the machine to go off (QEMU to end, not merely restart for a reboot);
        return QEMU's exit code. KairosError on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.proc is not None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                code = self.proc.wait(left)
            except subprocess.TimeoutExpired:
                raise KairosError(f"QEMU still running after {timeout:.0f}s",
                                  "the guest did not shut down; kill() cuts the power") from None
            if not self.running:
                return code
        return 0

    def kill(self) -> None:
        """Cut the power: SIGKILL QEMU, nothing in the guest gets to flush."""
        self._events = None  # a power cut is no reboot: nothing restarts
        if self._alive():
            assert self.proc is not None
            self.proc.kill()
        self._reap()

    def stop(self, timeout: float = 10.0) -> None:
        """End QEMU now (monitor `quit`, then SIGKILL if it lingers); files stay for start()."""
        if self._alive():
            try:
                self.qmp("quit")
                self.wait_exit(timeout)
            except KairosError as exc:
                log.debug("quit did not end QEMU (%s); killing it", exc)
        self.kill()

    def close(self) -> None:
        """Stop QEMU and remove every temp file (the serial log too, unless the config named it)."""
        try:
            self.stop()
        finally:
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None
            if self._http is not None:
                self._http.close()
                self._http = None
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None
            self.wiring = None  # a later start() prepares everything afresh

    def _reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _stderr_tail(self) -> str:
        if self.workdir is None or not (self.workdir / "qemu.log").exists():
            return ""
        text = (self.workdir / "qemu.log").read_text(errors="replace").strip()
        return text.splitlines()[-1] if text else ""

    def __enter__(self) -> VM:
        if not self.running:
            try:
                self.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- monitor --------------------------------------------------------------------------

    def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Send one QMP command (system_reset, system_powerdown, quit, query-status, …)."""
        return qmp.execute(self._w().qmp_socket, command, arguments)

    # -- serial ---------------------------------------------------------------------------

    def serial_mark(self) -> int:
        """The current end of the serial log; pass it as `since` to wait for newer output."""
        return self.serial_log.size()

    def serial_text(self, since: int | None = None) -> str:
        """Serial output of the current QEMU run (or after byte `since`)."""
        return self.serial_log.read(self._run_offset if since is None else since)

    def wait_for_serial(self, pattern: str, timeout: float = 600.0, *,
                        since: int | None = None) -> str:
        """Wait for a regex in the serial output of the current QEMU run (or after `since`);
        return the matched text. KairosError with the last 30 lines on timeout."""
        return self.serial_log.wait_for(pattern, timeout,
                                        since=self._run_offset if since is None else since,
                                        alive=lambda: self.running)

    # -- ssh ------------------------------------------------------------------------------

    def _identity(self, user: str | None, key: Path | None) -> tuple[str, Path]:
        key = key or self.config.ssh_key
        if key is None:
            raise BadInput("no SSH key for the guest",
                           "pass key=… or set VMConfig.ssh_key (kairos.vm.keys.ensure_keypair)")
        return user or self.config.ssh_user, key

    def ssh(self, command: str, *, user: str | None = None, key: Path | None = None,
            check: bool = True, timeout: float = 300.0, input: str | None = None) -> Result:
        """Run a shell command in the guest over SSH (OpenSSH client on 127.0.0.1)."""
        user, key = self._identity(user, key)
        self._revive()
        argv = ssh_argv(self.ssh_port, user, key, command)
        try:
            for pause in (*PREAUTH_BACKOFF, None):
                res = run(argv, check=False, timeout=timeout, input=input)
                if pause is None or not preauth_failure(res.returncode, res.stderr):
                    break
                time.sleep(pause)
        except subprocess.TimeoutExpired:
            raise KairosError(f"ssh command timed out after {timeout:.0f}s: {command}",
                              "the guest may be hung; see its serial log") from None
        if check and res.returncode != 0:
            raise CommandFailed(argv, res.returncode, res.stderr[-4000:] or res.stdout[-4000:])
        return res

    def wait_for_ssh(self, timeout: float = 900.0, *, user: str | None = None,
                     key: Path | None = None) -> float:
        """Wait until the guest's sshd answers and, when a key is known, a command succeeds.

        Returns seconds from QEMU's start to that moment: the boot time to SSH.
        """
        deadline = time.monotonic() + timeout
        login = (key or self.config.ssh_key) is not None
        last = "no SSH banner yet"
        while time.monotonic() < deadline:
            if not self.running:
                raise KairosError(f"QEMU exited while waiting for SSH; serial log tail:\n"
                                  f"{tail(self.serial_text())}", "see the serial log")
            # A loaded one-vCPU guest's sshd (a fork and re-exec per connection) took over
            # 2 s to send its banner; probes given up sooner piled up in sshd as unfinished
            # connections and none ever got through. So each probe waits up to 12 s, and
            # the loop comes back every 30 s to notice a QEMU that died.
            window = min(30.0, max(0.1, deadline - time.monotonic()))
            if wait_banner(self.ssh_port, window, patience=12.0):
                if not login:
                    return time.monotonic() - self.started_at
                left = max(5.0, deadline - time.monotonic())
                res = self.ssh("true", user=user, key=key, check=False, timeout=min(60.0, left))
                if res.returncode == 0:
                    return time.monotonic() - self.started_at
                last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else last
                time.sleep(2.0)  # each refused login adds to sshd's penalty for this source
        raise KairosError(f"no SSH login to 127.0.0.1:{self.ssh_port} within {timeout:.0f}s "
                          f"({last}); serial log tail:\n{tail(self.serial_text())}",
                          "check that sshd runs and the key is authorized for the user")

    def boot_time_to_ssh(self, timeout: float = 900.0, *, user: str | None = None,
                         key: Path | None = None) -> float:
        """Seconds from QEMU's start to the first successful SSH command."""
        self._identity(user, key)  # a banner alone is not a login: insist on a key
        return self.wait_for_ssh(timeout, user=user, key=key)

    def ssh_host_key_fingerprint(self, key_type: str = "ed25519") -> str:
        """The SHA256 fingerprint of the guest's host key, e.g. to prove it survives upgrades."""
        # -T bounds the key exchange, slow on a loaded TCG guest (see net.SSH_OPTIONS).
        for _ in range(3):
            scan = run(["ssh-keyscan", "-T", "30", "-t", key_type, "-p", str(self.ssh_port),
                        "127.0.0.1"], check=False, timeout=90)
            if scan.stdout.strip():
                break
        if not scan.stdout.strip():
            raise KairosError(f"ssh-keyscan got no {key_type} host key from the guest",
                              "is sshd up? call wait_for_ssh() first")
        fp = run(["ssh-keygen", "-lf", "-"], input=scan.stdout, timeout=30)
        for line in fp.stdout.splitlines():
            for word in line.split():
                if word.startswith("SHA256:"):
                    return word
        raise KairosError("ssh-keygen printed no fingerprint", fp.stdout.strip())

    # -- power ----------------------------------------------------------------------------

    def _privileged(self, command: str, user: str | None) -> str:
        who = user or self.config.ssh_user
        return command if who == "root" else f"sudo -n {command}"

    def reboot(self, *, method: Literal["ssh", "reset"] = "ssh", timeout: float = 900.0,
               user: str | None = None, key: Path | None = None,
               boot_marker: str = BOOT_MARKER) -> float:
        """Reboot the guest and wait until SSH works in the *new* boot.

        The old sshd may answer for a while after `reboot` is issued, so first wait for the
        serial log to show a new boot (firmware or kernel banner after this point) or for SSH
        to go away; only then wait for SSH. Returns seconds from the reboot to SSH.
        """
        begin = time.monotonic()
        mark = self.serial_mark()
        if method == "reset":
            self.qmp("system_reset")
        else:
            try:  # the connection drops as the guest goes down: any exit code is fine
                self.ssh(self._privileged("reboot", user), user=user, key=key, check=False,
                         timeout=60)
            except KairosError as exc:
                log.debug("reboot over ssh: %s", exc)
        self._wait_went_down(mark, boot_marker, timeout)
        left = max(1.0, timeout - (time.monotonic() - begin))
        self.wait_for_ssh(left, user=user, key=key)
        return time.monotonic() - begin

    def _wait_went_down(self, mark: int, boot_marker: str, timeout: float) -> None:
        regex = re.compile(boot_marker)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise KairosError("QEMU exited during reboot", "see the serial log")
            if regex.search(self.serial_log.read(mark)):
                return
            if ssh_banner(self.ssh_port, timeout=2.0) is None:
                return
            time.sleep(0.5)
        raise KairosError(f"the guest did not go down within {timeout:.0f}s of reboot",
                          "is the user allowed to reboot (sudo)? try method='reset'")

    def poweroff(self, *, method: Literal["ssh", "acpi"] = "ssh", timeout: float = 300.0,
                 user: str | None = None, key: Path | None = None) -> int:
        """Shut the guest down cleanly and wait for QEMU to exit; return QEMU's exit code.

        If the guest does not stop in time, QEMU is killed and KairosError is raised.
        """
        if method == "acpi":
            self.qmp("system_powerdown")
        else:
            try:
                self.ssh(self._privileged("poweroff", user), user=user, key=key, check=False,
                         timeout=60)
            except KairosError as exc:
                log.debug("poweroff over ssh: %s", exc)
        try:
            return self.wait_exit(timeout)
        except KairosError:
            self.kill()
            raise


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL QEMU when the process that started it dies, so a
    killed test run leaves no guest behind. Only used from the main thread, because the
    kernel ties this to the thread, not the process."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _replace_port(wiring: Wiring, port: int) -> Wiring:
    return replace(wiring, ssh_port=port)


def qemu_available() -> bool:
    """True when QEMU and qemu-img are installed (tests skip otherwise)."""
    return all(shutil.which(t) for t in (QEMU, "qemu-img"))
