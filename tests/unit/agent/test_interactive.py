"""`kairos interactive-install`: the checks of each answer, the disks offered, the questions
driven by a scripted terminal, and the cloud-config the answers make. No root, no disks."""

from __future__ import annotations

import base64
import os
import signal
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import kairos.cli as cli
from kairos.agent import interactive
from kairos.agent.devices import Disk, Inventory, choose_auto
from kairos.agent.installer import Request
from kairos.agent.interactive import (
    DEFAULT_HOSTNAME,
    Answers,
    Cancelled,
    DiskChoice,
    Interrupted,
    Invalid,
    Login,
    ask,
    ask_answers,
    check_disk,
    check_github_handle,
    check_hostname,
    check_method,
    check_password,
    check_ssh_key,
    check_user_name,
    check_yes_no,
    configured_default,
    disk_choice,
    merged_config,
    restrict,
    run_interactive,
)
from kairos.disk.sizes import GiB
from kairos.errors import BadInput
from kairos.stages.cloudinit import cloudinit_stages
from kairos.stages.sha512crypt import verify


def ssh_key(kind: str = "ssh-ed25519", comment: str = "me@laptop") -> str:
    blob = struct.pack(">I", len(kind)) + kind.encode() + struct.pack(">I", 32) + bytes(32)
    return f"{kind} {base64.b64encode(blob).decode()} {comment}".strip()


KEY = ssh_key()


class Script:
    """A terminal that answers from a list (an exception is raised instead of answering)
    and keeps everything shown."""

    def __init__(self, *answers: str | BaseException) -> None:
        self.answers = list(answers)
        self.shown: list[str] = []
        self.secrets: list[str] = []

    def _next(self, prompt: str) -> str:
        self.shown.append(prompt)
        if not self.answers:
            raise AssertionError(f"no answer scripted for {prompt!r}")
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def ask(self, prompt: str) -> str:
        return self._next(prompt)

    def secret(self, prompt: str) -> str:
        answer = self._next(prompt)
        self.secrets.append(answer)
        return answer

    def say(self, text: str) -> None:
        self.shown.append(text)

    @property
    def text(self) -> str:
        return "\n".join(self.shown)


def disk(name: str, gib: float = 20, **kw: Any) -> Disk:
    return Disk(name=name, size=int(gib * GiB), **kw)


def machine() -> Inventory:
    """vda: the running system; vdb: empty 40G; vdc: 100G with a partition; vdd: 60G
    mounted; more that are never offered."""
    disks = (disk("vda", 30, partitions=("vda1",), mounts=("/",), boot=True),
             disk("vdb", 40, transport="virtio", model="QEMU HARDDISK"),
             disk("vdc", 100, partitions=("vdc1",)),
             disk("vdd", 60, partitions=("vdd1",), mounts=("/srv",)),
             disk("sr0", 1, read_only=True, removable=True), disk("loop0", 2))
    return Inventory(disks, {p: d.name for d in disks for p in d.partitions})


# ------------------------------------------------------------------------------ validators

@pytest.mark.parametrize("name", ["kairos", "_svc", "ops-1", "a" * 32, " anna "])
def test_good_user_names(name: str) -> None:
    assert check_user_name(name) == name.strip()


@pytest.mark.parametrize(("name", "why"), [
    ("", "is not a user name"), ("Anna", "is not a user name"), ("1st", "is not a user name"),
    ("a b", "is not a user name"), ("a:b", "is not a user name"), ("a" * 33, "not a user"),
    ("-x", "is not a user name"), ("root", "system account"), ("admin", "system account"),
])
def test_bad_user_names(name: str, why: str) -> None:
    with pytest.raises(Invalid, match=why):
        check_user_name(name)


@pytest.mark.parametrize("name", ["node-1", "edge01.example.org", "A", "x" * 63])
def test_good_hostnames(name: str) -> None:
    assert check_hostname(name) == name


@pytest.mark.parametrize(("name", "why"), [
    ("", "empty"), ("-node", "is not a hostname"), ("node-", "is not a hostname"),
    ("no_de", "is not a hostname"), ("a..b", "is not a hostname"), ("x" * 64, "1-63"),
    ("a." + "b" * 63, "at most 64"), ("node 1", "is not a hostname"), ("node.", "hostname"),
])
def test_bad_hostnames(name: str, why: str) -> None:
    with pytest.raises(Invalid, match=why):
        check_hostname(name)


def test_good_ssh_keys() -> None:
    assert check_ssh_key(f"  {KEY}\n") == KEY
    rsa = ssh_key("ssh-rsa", "")
    assert check_ssh_key(rsa) == rsa
    assert check_ssh_key(ssh_key("ecdsa-sha2-nistp256", "a b  c")).endswith(" a b  c")


@pytest.mark.parametrize(("key", "why"), [
    ("", "no key given"),
    ("AAAAC3NzaC1lZDI1NTE5", "starts with its type"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "starts with its type"),
    ("ssh-ed25519", "no key data"),
    ("ssh-ed25519 not*base64 me", "not base64"),
    ("ssh-ed25519 " + KEY.split()[1][:20] + " me", "not base64|does not hold"),
    ("ssh-ed25519 " + KEY.split()[1][:24] + " me", "does not hold a ssh-ed25519 key"),
    ("ssh-ed25519 " + KEY.split()[1][:40] + " me", "does not hold a ssh-ed25519 key"),
    ("ssh-rsa " + KEY.split()[1] + " me", "does not hold a ssh-rsa key"),
    ("ssh-ed25519 " + KEY.split()[1] + " me\x1b[2J", "control characters"),
])
def test_bad_ssh_keys(key: str, why: str) -> None:
    with pytest.raises(Invalid, match=why):
        check_ssh_key(key)


@pytest.mark.parametrize(("text", "handle"), [
    ("octocat", "octocat"), ("@octo-cat", "octo-cat"), ("github:a1", "a1"),
    ("https://github.com/octocat.keys", "octocat"), ("x" * 39, "x" * 39),
])
def test_good_github_handles(text: str, handle: str) -> None:
    assert check_github_handle(text) == handle


@pytest.mark.parametrize("text", ["", "-octo", "octo-", "oc--to", "octo_cat", "x" * 40,
                                  "octo cat", "../etc"])
def test_bad_github_handles(text: str) -> None:
    with pytest.raises(Invalid, match="is not a GitHub user name"):
        check_github_handle(text)


def test_passwords_methods_and_yes_no() -> None:
    assert check_password("s3cret: x", "s3cret: x") == "s3cret: x"
    with pytest.raises(Invalid, match="empty"):
        check_password("", "")
    with pytest.raises(Invalid, match="differ"):
        check_password("a", "b")
    with pytest.raises(Invalid, match="control"):
        check_password("a\x03", "a\x03")
    assert [check_method(t) for t in ("1", "2", "3", "SSH", "github")] == [
        "password", "ssh-key", "github", "ssh-key", "github"]
    with pytest.raises(Invalid, match="type 1, 2 or 3"):
        check_method("4")
    assert [check_yes_no(t) for t in ("y", "YES", "", "n", "No")] == [
        True, True, False, False, False]
    with pytest.raises(Invalid, match="answer y or n"):
        check_yes_no("maybe")


# ------------------------------------------------------------------------------ disks

def test_the_disks_offered_and_the_default_auto_would_pick() -> None:
    inv = machine()
    choice = disk_choice(inv)
    assert [d.name for d in choice.candidates] == ["vdb", "vdc"]
    assert choice.default is not None and choice.default == choose_auto(inv).disk
    assert any("/dev/vda holds the running system" in u for u in choice.unusable)
    assert any("/dev/vdd is in use (mounted on /srv)" in u for u in choice.unusable)
    assert not any("sr0" in u or "loop0" in u for u in choice.unusable)
    lines = "\n".join(choice.lines())
    assert "1) /dev/vdb (40G, virtio, QEMU HARDDISK): empty" in lines
    assert "2) /dev/vdc (100G): has partitions vdc1" in lines


def test_with_partitions_only_there_is_no_default() -> None:
    inv = Inventory((disk("vdc", 100, partitions=("vdc1",)),), {"vdc1": "vdc"})
    choice = disk_choice(inv)
    assert [d.name for d in choice.candidates] == ["vdc"] and choice.default is None


def test_too_small_disks_are_left_out() -> None:
    choice = disk_choice(machine(), need=50 * GiB)
    assert [d.name for d in choice.candidates] == ["vdc"]
    assert any("/dev/vdb is too small" in u for u in choice.unusable)


def test_no_disk_at_all_is_refused_with_what_was_seen() -> None:
    inv = Inventory((disk("vda", 30, mounts=("/",), boot=True), disk("loop0")))
    with pytest.raises(BadInput, match=r"no disk to install to: /dev/vda holds the running"):
        disk_choice(inv)
    with pytest.raises(BadInput, match="no disks at all"):
        disk_choice(Inventory(()))


def test_the_configs_install_device_is_the_default_when_offered() -> None:
    choice = disk_choice(machine())
    assert configured_default(choice, {"install": {"device": "/dev/vdc"}}).default == \
        choice.candidates[1]
    for data in ({}, {"install": {"device": "auto"}}, {"install": {"device": "/dev/vda"}},
                 {"install": "x"}):
        assert configured_default(choice, data) == choice


def test_restricted_candidates_may_be_loop_devices() -> None:
    inv = restrict(machine(), ["/dev/loop0"])
    assert [d.name for d in inv.disks] == ["loop0"]
    choice = disk_choice(inv, virtual=True)
    assert choice.default is not None and choice.default.name == "loop0"
    with pytest.raises(BadInput, match="--device-candidates /dev/nope is not a whole disk"):
        restrict(machine(), ["/dev/nope"])


def test_a_disk_by_number_path_or_name() -> None:
    choice = disk_choice(machine())
    assert check_disk("1", choice).name == "vdb"
    assert check_disk("/dev/vdc", choice).name == "vdc"
    assert check_disk(" vdb ", choice).name == "vdb"
    for bad in ("3", "0", "/dev/vda", "vdd", "sda"):
        with pytest.raises(Invalid, match="is not one of the disks listed"):
            check_disk(bad, choice)


# ------------------------------------------------------------------------------ questions

def test_enter_takes_the_default_and_a_bad_answer_is_asked_again() -> None:
    term = Script("Bad User", "", "  ops ")
    assert ask(term, "User name", check_user_name, "kairos") == "kairos"
    assert term.shown[:3] == ["User name [kairos]: ",
                              "  'Bad User' is not a user name: use up to 32 lowercase "
                              "letters, digits, '_' and '-', starting with a letter or '_'",
                              "User name [kairos]: "]
    assert ask(term, "User name", check_user_name, "kairos") == "ops"


def test_end_of_input_and_ctrl_c_stop_with_one_line() -> None:
    with pytest.raises(Cancelled, match=r"no answer \(end of input\).*nothing was written") \
            as eof:
        ask(Script(EOFError()), "User name", check_user_name, "kairos")
    assert eof.value.exit_code == 2
    with pytest.raises(Interrupted, match=r"interrupted.*nothing was written") as intr:
        ask(Script(KeyboardInterrupt()), "User name", check_user_name, "kairos")
    assert intr.value.exit_code == 130


def test_a_closed_terminal_counts_as_ctrl_c() -> None:
    before = signal.getsignal(signal.SIGHUP)
    with pytest.raises(KeyboardInterrupt), interactive.hangup_interrupts():
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(5)  # the handler raises before this ends
    assert signal.getsignal(signal.SIGHUP) == before


def choice_of(*disks: Disk) -> DiskChoice:
    return disk_choice(Inventory(disks))


def test_every_question_with_a_password() -> None:
    term = Script("", "", "", "pw-1", "pw-2", "pw-1", "pw-1", "not a host", "")
    answers = ask_answers(term, choice_of(disk("vdb", 40)), DEFAULT_HOSTNAME)
    assert (answers.disk.name, answers.user, answers.hostname) == (
        "vdb", "kairos", DEFAULT_HOSTNAME)
    assert answers.login.method == "password" and verify("pw-1", answers.login.value)
    text = term.text
    assert "Disk to install to [/dev/vdb]: " in text
    assert "Login [1]: " in text and "3) the SSH keys of a GitHub user" in text
    assert "the two passwords differ" in text and "pw-1" not in text
    assert "'not a host' is not a hostname" in text
    assert f"Hostname [{DEFAULT_HOSTNAME}]: " in text


def test_an_ssh_key_and_a_github_user() -> None:
    term = Script("/dev/vdb", "ops", "2", "ssh-ed25519 garbage", KEY, "edge-1")
    answers = ask_answers(term, choice_of(disk("vdb", 40)), "base-name")
    assert answers.login == Login("ssh-key", KEY) and answers.hostname == "edge-1"
    assert "the key data is not base64" in term.text
    term = Script("", "", "github", "not/a/handle", "@octocat", "")
    answers = ask_answers(term, choice_of(disk("vdb", 40)), "base-name")
    assert answers.login == Login("github", "octocat") and answers.hostname == "base-name"
    assert "Hostname [base-name]: " in term.text


# ------------------------------------------------------------------------------ the config

def answers(login: Login, user: str = "kairos") -> Answers:
    return Answers(disk("vdb"), user, login, "node-1")


def test_the_config_of_each_login() -> None:
    hashed = interactive.sha512_crypt("pw")
    assert merged_config({}, answers(Login("password", hashed))) == {
        "hostname": "node-1",
        "users": [{"name": "kairos", "groups": ["admin"], "passwd": hashed}]}
    assert merged_config({}, answers(Login("ssh-key", KEY)))["users"] == [
        {"name": "kairos", "groups": ["admin"], "ssh_authorized_keys": [KEY]}]
    assert merged_config({}, answers(Login("github", "octocat")))["users"] == [
        {"name": "kairos", "groups": ["admin"], "ssh_authorized_keys": ["github:octocat"]}]


def test_a_github_user_is_fetched_by_the_network_stage() -> None:
    """The stages the installed node makes of the config: the account at boot, the GitHub
    keys in the network stage (a failed fetch there is a warning, retried every boot)."""
    data = merged_config({}, answers(Login("github", "octocat")))
    stages = cloudinit_stages(data, "90_custom.yaml")
    assert stages["network"][0].payloads == {"authorized_keys": {"kairos": ["github:octocat"]}}
    assert stages["boot"][0].payloads["users"] == {"kairos": {"groups": ["admin"]}}
    assert stages["initramfs"][0].payloads == {"hostname": "node-1"}


def test_answers_are_merged_over_the_base() -> None:
    base = {"hostname": "old", "install": {"reboot": True},
            "users": [{"name": "kairos", "groups": ["docker"], "shell": "/bin/bash"},
                      {"name": "ops", "ssh_authorized_keys": [KEY]}]}
    data = merged_config(base, answers(Login("github", "octocat")))
    assert data["hostname"] == "node-1" and data["install"] == {"reboot": True}
    assert data["users"] == [
        {"name": "kairos", "groups": ["docker", "admin"], "shell": "/bin/bash",
         "ssh_authorized_keys": ["github:octocat"]},
        {"name": "ops", "ssh_authorized_keys": [KEY]}]
    assert base["users"][0] == {"name": "kairos", "groups": ["docker"], "shell": "/bin/bash"}
    mapping = {"users": {"ops": {"groups": ["admin"]}}}  # the mapping form
    assert [u["name"] for u in merged_config(mapping, answers(Login("ssh-key", KEY)))[
        "users"]] == ["ops", "kairos"]


# ------------------------------------------------------------------------------ the run

Installed = dict[str, Any]


def fake_install(seen: Installed, answer: str) -> Callable[..., Any]:
    def install(req: Request, **kw: Any) -> Any:
        seen["req"] = req
        seen["config"] = Path(str(req.cloud_config)).read_text()
        seen["mode"] = Path(str(req.cloud_config)).stat().st_mode & 0o777
        seen["inventory"] = kw["inventory"]()
        term = Script(answer)
        seen["term"] = term
        interactive.confirm(term, "PLAN: erase /dev/vdb", seen["answers"], Path("/dev/vdb"))
        return "result"
    return install


def test_the_run_installs_the_answers_on_the_install_path(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("#cloud-config\nhostname: from-base\nstages:\n  boot:\n"
                    "  - commands: [true]\n")
    req = Request(cloud_config=str(base), source="oci:registry.example/kairos/core:v1",
                  root=tmp_path)
    seen: Installed = {"answers": answers(Login("password", "$6$x$y"))}
    term = Script("2", "", "", "secret-pw", "secret-pw", "")
    result = run_interactive(req, term=term, inventory=machine,
                             install=fake_install(seen, "y"))
    assert result == "result"
    final: Request = seen["req"]
    assert (final.device, final.source, final.yes) == (
        "/dev/vdc", "oci:registry.example/kairos/core:v1", False)
    data = yaml.safe_load(seen["config"])
    assert seen["config"].startswith("#cloud-config\n") and seen["mode"] == 0o600
    assert data["hostname"] == "from-base" and data["stages"]["boot"]
    assert verify("secret-pw", data["users"][0]["passwd"])
    assert "secret-pw" not in seen["config"] and "secret-pw" not in term.text
    assert "Hostname [from-base]: " in term.text
    assert not Path(str(final.cloud_config)).exists()  # the temp dir is gone
    shown = seen["term"].text
    assert "PLAN: erase /dev/vdb" in shown and "user:     kairos (group admin: sudo)" in shown
    assert "login:    password (stored as a SHA-512 hash)" in shown
    assert "Erase /dev/vdb and install? [y/N]: " in shown


def test_no_at_the_confirmation_cancels(tmp_path: Path) -> None:
    seen: Installed = {"answers": answers(Login("ssh-key", KEY))}
    req = Request(source="oci:registry.example/kairos/core:v1", root=tmp_path)
    term = Script("", "", "2", KEY, "")
    with pytest.raises(Cancelled, match="installation cancelled: nothing was written"):
        run_interactive(req, term=term, inventory=machine, install=fake_install(seen, ""))
    assert seen["req"].device == "/dev/vdb"


def test_restricted_candidates_reach_the_install(tmp_path: Path) -> None:
    seen: Installed = {"answers": answers(Login("github", "octocat"))}
    req = Request(source="oci:registry.example/kairos/core:v1", root=tmp_path)
    term = Script("", "", "3", "octocat", "", )
    run_interactive(req, term=term, candidates=["/dev/loop0"], inventory=machine,
                    install=fake_install(seen, "yes"))
    assert seen["req"].device == "/dev/loop0"
    assert [d.name for d in seen["inventory"].disks] == ["loop0"]
    assert "1) /dev/loop0" in term.text and "/dev/vdb" not in term.text


def test_bad_config_or_no_disk_stops_before_any_question(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("#cloud-config\ninstall:\n  encrypted_partitions: [COS_PERSISTENT]\n")
    req = Request(cloud_config=str(bad), source="oci:registry.example/kairos/core:v1",
                  root=tmp_path)
    with pytest.raises(BadInput, match="encrypted partitions"):
        run_interactive(req, term=Script(), inventory=machine)
    req = Request(source="oci:registry.example/kairos/core:v1", root=tmp_path)
    with pytest.raises(BadInput, match="no disk to install to"):
        run_interactive(req, term=Script(), inventory=lambda: Inventory(()))
    with pytest.raises(BadInput, match="not a live system"):
        run_interactive(Request(root=tmp_path), term=Script(), inventory=machine)


# ------------------------------------------------------------------------------ the command

def test_the_command_is_registered_and_refuses_without_a_terminal(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.VERB_OWNERS["interactive-install"] == "kairos.cli.install_cmd"
    args = cli.build_parser(["interactive-install"]).parse_args(
        ["interactive-install", "--source", "file:/x", "--reboot", "--cloud-config", "c.yaml",
         "--device-candidates", "/dev/loop0"])
    assert (args.source, args.reboot, args.cloud_config, args.device_candidates) == (
        "file:/x", True, "c.yaml", ["/dev/loop0"])
    monkeypatch.setattr(interactive, "is_terminal", lambda: False)
    monkeypatch.setattr(cli, "VERB_MODULES", ("kairos.cli.install_cmd",))
    assert cli.main(["interactive-install"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == ("kairos: error: interactive-install needs a terminal to "
                                   "ask its questions")
    assert "kairos install --yes" in err
