"""`kairos interactive-install`: ask a person at a terminal, then install as `kairos install`.

The questions, one a line, each with its default in brackets (Enter takes it):

1. the disk, from the candidates (real disks `kairos install --device` would accept: not the
   boot medium, nothing mounted or in use, large enough); the default is the one
   `device: auto` picks (the largest without partitions), or the base config's
   `install.device` when it names one of them; none at all is refused before the first
   question;
2. the user name (default `kairos`), who joins the `admin` group (passwordless sudo);
3. how they log in: a password (typed twice, never echoed, stored as a SHA-512 crypt hash),
   a pasted SSH public key, or a GitHub user's keys (`github:HANDLE` in
   `ssh_authorized_keys`, fetched by the `network` stage at each boot);
4. the hostname (default the base config's, else `kairos-{{ trunc 4 .MachineID }}`).

Every answer is checked and a bad one asked again with a one-line reason. The answers become
a cloud-config merged over a base (`--cloud-config`, else what the system collects), and the
install runs on `kairos install`'s own path with that config (it lands in /oem); the plan is
shown with the answers, and only `y` goes on (the default is No). End of input or Ctrl-C at
any question stops with one line and nothing written; a terminal that goes away (SIGHUP)
counts as Ctrl-C, so the temporary config with the password hash is removed too.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import getpass
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

from kairos.agent import devices, installer
from kairos.agent.devices import Disk, Inventory
from kairos.agent.install import check_slot_image, minimum_size
from kairos.agent.installer import Request, Result
from kairos.config.merge import merge
from kairos.disk.mounts import tempdir
from kairos.errors import BadInput, KairosError
from kairos.stages.sha512crypt import sha512_crypt

DEFAULT_USER = "kairos"
DEFAULT_HOSTNAME = "kairos-{{ trunc 4 .MachineID }}"
ADMIN_GROUP = "admin"  # the image's sudoers give it passwordless sudo (10_accounting.yaml)
CONFIG_NAME = "interactive-install.yaml"
HOST_NAME_MAX = 64  # what the Linux kernel takes
METHODS = ("password", "ssh-key", "github")
_METHOD_WORDS = {"1": "password", "password": "password", "p": "password",
                 "2": "ssh-key", "ssh": "ssh-key", "key": "ssh-key", "ssh-key": "ssh-key",
                 "3": "github", "github": "github", "gh": "github"}
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256",
                 "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
                 "sk-ecdsa-sha2-nistp256@openssh.com")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")
_RESERVED_USERS = frozenset({"root", "daemon", "bin", "sys", "sync", "nobody", "sshd",
                             "messagebus", "systemd-network", "systemd-resolve", ADMIN_GROUP})
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_HANDLE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}\Z")
T = TypeVar("T")


class Invalid(ValueError):
    """A bad answer; its text is the one-line reason shown before asking again."""


class Cancelled(BadInput):
    """The person said no (or stopped answering): nothing was written."""


class Interrupted(KairosError):
    """Ctrl-C at a question: nothing was written."""

    exit_code = 130


# ------------------------------------------------------------------------------ validators

def check_user_name(text: str) -> str:
    name = text.strip()
    if not _USER.match(name):
        raise Invalid(f"{name!r} is not a user name: use up to 32 lowercase letters, digits, "
                      "'_' and '-', starting with a letter or '_'")
    if name in _RESERVED_USERS:
        raise Invalid(f"{name!r} is a system account or group: pick another name")
    return name


def check_hostname(text: str) -> str:
    """A host name as RFC 1123 has it (dot-separated labels), short enough for Linux."""
    name = text.strip()
    if not name:
        raise Invalid("the hostname is empty")
    if len(name) > HOST_NAME_MAX:
        raise Invalid(f"the hostname is {len(name)} characters, Linux takes at most "
                      f"{HOST_NAME_MAX}")
    for label in name.split("."):
        if not _LABEL.match(label):
            raise Invalid(f"{name!r} is not a hostname: use letters, digits and '-' (not "
                          "first or last), labels of 1-63 separated by dots")
    return name


def check_ssh_key(text: str) -> str:
    """An OpenSSH public key line: TYPE BASE64 [COMMENT], the blob naming the same type."""
    fields = text.strip().split(None, 2)
    if not fields:
        raise Invalid("no key given: paste the one line of your .pub file")
    if fields[0] not in SSH_KEY_TYPES:
        raise Invalid(f"a public key starts with its type ({', '.join(SSH_KEY_TYPES[:3])}, "
                      f"…), not {fields[0][:30]!r}")
    if len(fields) < 2:
        raise Invalid(f"the {fields[0]} key has no key data after its type")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("the key data is not base64: paste the whole line of the .pub file "
                      "(the private key is never needed)") from None
    parts = _ssh_strings(blob)
    if not parts or parts[0] != fields[0].encode() or len(parts) < 2:
        raise Invalid(f"the key data does not hold a {fields[0]} key: the line is cut or "
                      "mixed up")
    if any(not c.isprintable() for c in text.strip()):
        raise Invalid("the key holds control characters")
    return " ".join(fields)


def _ssh_strings(blob: bytes) -> list[bytes]:
    """The length-prefixed strings a key blob is made of; [] when it does not split into
    them exactly (a cut or garbled key)."""
    parts, pos = [], 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            return []
        size = int.from_bytes(blob[pos:pos + 4], "big")
        pos += 4
        if pos + size > len(blob):
            return []
        parts.append(blob[pos:pos + size])
        pos += size
    return parts


def check_github_handle(text: str) -> str:
    handle = text.strip()
    for prefix in ("github:", "@", "https://github.com/"):
        if handle.startswith(prefix):
            handle = handle[len(prefix):]
    handle = handle.removesuffix(".keys").rstrip("/")
    if not _HANDLE.match(handle):
        raise Invalid(f"{handle!r} is not a GitHub user name: letters, digits and single "
                      "hyphens, at most 39, not starting or ending with '-'")
    return handle


def check_password(first: str, second: str) -> str:
    if not first:
        raise Invalid("the password is empty (nothing is shown while you type)")
    if first != second:
        raise Invalid("the two passwords differ; type it again")
    if any(not c.isprintable() for c in first):
        raise Invalid("the password holds control characters")
    return first


def check_method(text: str) -> str:
    method = _METHOD_WORDS.get(text.strip().lower())
    if method is None:
        raise Invalid(f"{text.strip()!r} is not a choice: type 1, 2 or 3")
    return method


def check_yes_no(text: str) -> bool:
    answer = text.strip().lower()
    if answer in ("y", "yes"):
        return True
    if answer in ("", "n", "no"):
        return False
    raise Invalid("answer y or n")


# ------------------------------------------------------------------------------ disks

@dataclass(frozen=True)
class DiskChoice:
    """The disks offered, the default, and the disks left out with why."""

    candidates: tuple[Disk, ...]
    default: Disk | None
    unusable: tuple[str, ...]  # one line per real disk that cannot be used

    def lines(self) -> list[str]:
        out = ["Disks this system can be installed to (everything on the chosen one is "
               "erased):"]
        for number, disk in enumerate(self.candidates, start=1):
            state = (f"has partitions {', '.join(disk.partitions)}" if disk.partitions
                     else "empty")
            out.append(f"  {number}) {disk.describe()}: {state}")
        out += [f"  not usable: {why}" for why in self.unusable]
        return out


def _refusal(disk: Disk, need: int) -> str | None:
    try:
        devices.check_target(disk, need)
    except BadInput as exc:
        return exc.message
    return None


def default_disk(candidates: Sequence[Disk]) -> Disk | None:
    """What `device: auto` takes among the candidates: the largest without partitions (the
    first of equals)."""
    empty = [d for d in candidates if not d.partitions]
    return max(empty, key=lambda d: d.size) if empty else None


def disk_choice(inventory: Inventory, need: int = 0, *, virtual: bool = False) -> DiskChoice:
    """The candidates (loop and other virtual devices only with `virtual`, for a restricted
    inventory); BadInput listing what was seen when there is none."""
    candidates: list[Disk] = []
    unusable: list[str] = []
    for disk in inventory.disks:
        if disk.kind and not virtual:
            continue
        why = _refusal(disk, need)
        if why is None:
            candidates.append(disk)
        else:
            unusable.append(why)
    if not candidates:
        seen = "; ".join(unusable) or "no disks at all"
        raise BadInput(f"no disk to install to: {seen}",
                       "attach a disk (it is erased), or unmount the one you want")
    return DiskChoice(tuple(candidates), default_disk(candidates), tuple(unusable))


def restrict(inventory: Inventory, paths: Sequence[str]) -> Inventory:
    """Only the disks named (tests: a loop device, so the host's disks never appear)."""
    names = []
    for path in paths:
        name = os.path.basename(os.path.realpath(path))
        if inventory.get(name) is None:
            raise BadInput(f"--device-candidates {path} is not a whole disk this machine has",
                           "name a disk such as /dev/loop0")
        names.append(name)
    return Inventory(tuple(d for d in inventory.disks if d.name in names), inventory.parents)


def configured_default(choice: DiskChoice, data: dict[str, Any]) -> DiskChoice:
    """The base config's install.device as the default, when it names a disk offered."""
    block = data.get("install")
    device = block.get("device") if isinstance(block, dict) else None
    if isinstance(device, str) and device.startswith("/dev/"):
        with contextlib.suppress(Invalid):
            return dataclasses.replace(choice, default=check_disk(device, choice))
    return choice


def check_disk(text: str, choice: DiskChoice) -> Disk:
    """A candidate by its number, path (or /dev/disk/by-* link) or kernel name."""
    answer = text.strip()
    if answer.isdigit() and 1 <= int(answer) <= len(choice.candidates):
        return choice.candidates[int(answer) - 1]
    name = os.path.basename(os.path.realpath(answer)) if answer.startswith("/dev/") \
        else answer
    for disk in choice.candidates:
        if disk.name == name:
            return disk
    raise Invalid(f"{answer!r} is not one of the disks listed: type its number or its "
                  "/dev path")


# ------------------------------------------------------------------------------ answers

@dataclass(frozen=True)
class Login:
    method: str  # one of METHODS
    value: str  # a $6$ hash, a public key, or a GitHub user name

    def user_keys(self) -> dict[str, Any]:
        """The keys of the user's cloud-config entry this login needs."""
        if self.method == "password":
            return {"passwd": self.value}
        if self.method == "ssh-key":
            return {"ssh_authorized_keys": [self.value]}
        return {"ssh_authorized_keys": [f"github:{self.value}"]}

    def describe(self) -> str:
        if self.method == "password":
            return "password (stored as a SHA-512 hash)"
        if self.method == "ssh-key":
            kind, _, rest = self.value.partition(" ")
            comment = rest.partition(" ")[2]
            return f"SSH key {kind} {comment or rest[:16] + '…'} (no password)"
        return (f"the SSH keys of GitHub user {self.value}, fetched at each boot once the "
                "network is up (no password)")


@dataclass(frozen=True)
class Answers:
    disk: Disk
    user: str
    login: Login
    hostname: str

    def lines(self) -> list[str]:
        return [f"  user:     {self.user} (group {ADMIN_GROUP}: sudo)",
                f"  login:    {self.login.describe()}",
                f"  hostname: {self.hostname}"]


def answers_config(answers: Answers) -> dict[str, Any]:
    """The cloud-config the answers make."""
    user: dict[str, Any] = {"name": answers.user, "groups": [ADMIN_GROUP],
                            **answers.login.user_keys()}
    return {"hostname": answers.hostname, "users": [user]}


def merged_config(base: dict[str, Any], answers: Answers) -> dict[str, Any]:
    """The answers over `base`: a user of the same name in the base gets the answers merged
    into it (not a second entry), the other keys merge by Kairos's rules."""
    from kairos.stages.cloudinit import user_entries
    ours = answers_config(answers)
    mine = ours["users"][0]
    users: list[dict[str, Any]] = []
    found = False
    for entry in user_entries(base.get("users"), "users"):
        if entry["name"] == mine["name"]:
            entry = merge(entry, mine, "the cloud-config", "the answers")
            found = True
        users.append(entry)
    if not found:
        users.append(mine)
    rest = {k: v for k, v in base.items() if k != "users"}
    data: dict[str, Any] = merge(rest, {"hostname": ours["hostname"]}, "the cloud-config",
                                 "the answers")
    data["users"] = users
    return data


def config_text(data: dict[str, Any]) -> str:
    return ("#cloud-config\n# written by `kairos interactive-install`\n"
            + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


# ------------------------------------------------------------------------------ terminal

class Terminal(Protocol):
    def ask(self, prompt: str) -> str: ...  # one line; EOFError, KeyboardInterrupt
    def secret(self, prompt: str) -> str: ...  # the same, not echoed
    def say(self, text: str) -> None: ...


class TtyTerminal:
    """The process's terminal: input() and getpass (which reads /dev/tty without echo)."""

    def ask(self, prompt: str) -> str:
        return input(prompt)

    def secret(self, prompt: str) -> str:
        return getpass.getpass(prompt)

    def say(self, text: str) -> None:
        with contextlib.suppress(OSError):  # the terminal went away: the error says why
            sys.stdout.write(text + "\n")
            sys.stdout.flush()


@contextlib.contextmanager
def hangup_interrupts() -> Iterator[None]:
    """A terminal that goes away (SIGHUP) stops the run like Ctrl-C, so its temporary
    files (the password hash) and mounts are cleaned up rather than left behind."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGHUP, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, old)


@contextlib.contextmanager
def _answering(term: Terminal) -> Iterator[None]:
    """EOF and Ctrl-C at a question: one line, nothing written."""
    try:
        yield
    except EOFError:
        term.say("")
        raise Cancelled("no answer (end of input): interactive install stopped, nothing was "
                        "written") from None
    except KeyboardInterrupt:
        term.say("")
        raise Interrupted("interrupted: interactive install stopped, nothing was "
                          "written") from None


def ask(term: Terminal, question: str, check: Callable[[str], T], default: str = "") -> T:
    """Ask until `check` takes the answer; Enter gives `default` (shown in brackets)."""
    prompt = f"{question} [{default}]: " if default else f"{question}: "
    while True:
        with _answering(term):
            text = term.ask(prompt)
        try:
            return check(text.strip() or default)
        except Invalid as exc:
            term.say(f"  {exc}")


def ask_password(term: Terminal, user: str) -> str:
    while True:
        with _answering(term):
            first = term.secret(f"Password for {user}: ")
            second = term.secret("The same password again: ")
        try:
            return check_password(first, second)
        except Invalid as exc:
            term.say(f"  {exc}")


def ask_login(term: Terminal, user: str) -> Login:
    term.say(f"How does {user} log in?\n  1) a password\n  2) an SSH public key (pasted)\n"
             "  3) the SSH keys of a GitHub user")
    method = ask(term, "Login", check_method, "1")
    if method == "password":
        return Login(method, sha512_crypt(ask_password(term, user)))
    if method == "ssh-key":
        return Login(method, ask(term, "SSH public key (the line of your .pub file)",
                                 check_ssh_key))
    return Login(method, ask(term, "GitHub user name", check_github_handle))


def ask_answers(term: Terminal, choice: DiskChoice, hostname_default: str) -> Answers:
    term.say("Install kairos: Enter takes the default in [brackets], Ctrl-C stops (nothing "
             "is written before you confirm).")
    for line in choice.lines():
        term.say(line)
    default = str(choice.default.path) if choice.default else ""
    disk = ask(term, "Disk to install to", lambda t: check_disk(t, choice), default)
    user = ask(term, "User name", check_user_name, DEFAULT_USER)
    login = ask_login(term, user)
    if hostname_default == DEFAULT_HOSTNAME:
        term.say("Hostname (the default is kairos- and 4 characters of the machine id, "
                 "set at first boot)")
    hostname = ask(term, "Hostname", _hostname_or(hostname_default), hostname_default)
    return Answers(disk, user, login, hostname)


def _hostname_or(default: str) -> Callable[[str], str]:
    """The default (a template, or the base config's) is taken as is; typed names are
    checked."""
    return lambda text: text if text == default else check_hostname(text)


def confirm(term: Terminal, plan: str, answers: Answers, device: Path) -> None:
    """The plan and the answers; anything but y stops here."""
    term.say("")
    term.say(plan)
    for line in answers.lines():
        term.say(line)
    if not ask(term, f"Erase {device} and install? [y/N]", check_yes_no):
        raise Cancelled(f"installation cancelled: nothing was written to {device}")


# ------------------------------------------------------------------------------ run

def _local_slot(req: Request, source: str) -> Path | None:
    """The slot image when it is a local file (its size bounds the disks offered)."""
    if req.image_dir is not None:
        from kairos.artifacts.disk import find_images
        return find_images(req.image_dir)[0]
    if source.startswith("file:"):
        from kairos.agent.upgradesource import parse_source
        return parse_source(source).path
    if not source:
        from kairos.boot.live import LIVE_SLOT_IMAGE
        if not LIVE_SLOT_IMAGE.is_file():
            raise BadInput(f"no slot image at {LIVE_SLOT_IMAGE}: this is not a live system",
                           "boot the live ISO, or give --source file:PATH (a slot image), "
                           "oci:REF, ocifile:PATH or dir:PATH")
        return LIVE_SLOT_IMAGE
    return None  # oci:/ocifile:/dir: are made later; the install checks the size then


def needed_size(req: Request, opts: installer.Options) -> int:
    slot = _local_slot(req, opts.source)
    if slot is None:
        return 0
    size = check_slot_image(slot, "slot image")
    return minimum_size(size, size, opts.layout)


def is_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def run_interactive(req: Request, *, term: Terminal | None = None,
                    candidates: Sequence[str] = (),
                    inventory: Callable[[], Inventory] = devices.read_inventory,
                    install: Callable[..., Result | None] = installer.run_install) -> Result:
    """Check what can be checked, ask, then install on `kairos install`'s path (on this
    process's terminal unless `term` is given)."""
    def disks() -> Inventory:
        found = inventory()
        return restrict(found, candidates) if candidates else found

    if term is not None:
        return _run(req, term, disks, install, virtual=bool(candidates))
    if not is_terminal():
        raise BadInput("interactive-install needs a terminal to ask its questions",
                       "without one, use `kairos install --yes --device DEV "
                       "--cloud-config FILE`")
    with hangup_interrupts():
        return _run(req, TtyTerminal(), disks, install, virtual=bool(candidates))


def _run(req: Request, term: Terminal, disks: Callable[[], Inventory],
         install: Callable[..., Result | None], *, virtual: bool) -> Result:
    with tempdir(prefix="kairos-interactive-") as work:
        base = installer.load_config(req, work)
        data = dict(base.data)
        if base.name == "collected":  # merged in already; the node must not depend on it
            data.pop("config_url", None)
        opts = installer.options(data, dataclasses.replace(req, device="auto"))
        choice = configured_default(
            disk_choice(disks(), needed_size(req, opts), virtual=virtual), data)
        hostname = data.get("hostname")
        answers = ask_answers(term, choice, hostname if isinstance(hostname, str) and hostname
                              else DEFAULT_HOSTNAME)
        config = work / CONFIG_NAME
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(config_text(merged_config(data, answers)))
        final = dataclasses.replace(req, device=str(answers.disk.path),
                                    cloud_config=str(config), yes=False, auto=False)
        result = install(final, interactive=True, inventory=disks,
                         ask_confirmation=lambda plan, dev: confirm(term, plan, answers, dev))
    assert result is not None  # not --auto: an install always happens or raises
    return result
