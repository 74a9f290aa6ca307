"""`git`: clone a repository to a path, or fetch and hard-reset it when already there."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field

from kairos.disk.mounts import tempdir
from kairos.run import run
from kairos.stages.context import Context, PluginError
from kairos.stages.fields import PayloadError, as_bool, as_map, as_str
from kairos.stages.model import Step

KEYS = ("git",)


@dataclass
class Auth:
    username: str = ""
    password: str = ""
    private_key: str = ""
    insecure: bool = False
    public_key: str = ""


@dataclass
class Git:
    url: str = ""
    path: str = ""
    branch: str = "master"
    branch_only: bool = False
    auth: Auth = field(default_factory=Auth)


def parse(step: Step) -> Git:
    raw = as_map(step.payloads.get("git"), "git")
    auth = as_map(raw.get("auth"), "git.auth")
    spec = Git(url=as_str(raw.get("url"), "git.url"), path=as_str(raw.get("path"), "git.path"),
               branch=as_str(raw.get("branch"), "git.branch") or "master",
               branch_only=as_bool(raw.get("branch_only"), "git.branch_only"),
               auth=Auth(username=as_str(auth.get("username"), "git.auth.username"),
                         password=as_str(auth.get("password"), "git.auth.password"),
                         private_key=as_str(auth.get("private_key"), "git.auth.private_key"),
                         insecure=as_bool(auth.get("insecure"), "git.auth.insecure"),
                         public_key=as_str(auth.get("public_key"), "git.auth.public_key")))
    if spec.url and not spec.path:
        raise PayloadError("git: a path to clone into is needed")
    return spec


def _git(argv: list[str], env: dict[str, str]) -> None:
    result = run(["git", *argv], check=False, env=env)
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:]
        raise PluginError(f"git {argv[0] if argv[0] != '-C' else argv[2]} failed"
                          + (f": {tail[0]}" if tail else ""))


def apply(step: Step, ctx: Context) -> None:
    spec = parse(step)
    if not spec.url:
        return
    target = ctx.path(spec.path)
    with tempdir(prefix="kairos-git-") as tmp:
        env = {"GIT_TERMINAL_PROMPT": "0"}
        if spec.auth.username and spec.auth.password:
            # credentials reach git through an askpass helper reading a private file
            creds = tmp / "creds"
            creds.write_text(f"{spec.auth.username}\n{spec.auth.password}\n")
            helper = tmp / "askpass"
            helper.write_text('#!/bin/sh\ncase "$1" in Username*) sed -n 1p "$0.d";; '
                              '*) sed -n 2p "$0.d";; esac\n')
            creds.rename(tmp / "askpass.d")
            os.chmod(helper, 0o700)
            env["GIT_ASKPASS"] = str(helper)
        if spec.auth.private_key:
            key = tmp / "key"
            key.write_text(spec.auth.private_key.rstrip("\n") + "\n")
            os.chmod(key, 0o600)
            ssh = ["ssh", "-i", str(key)]
            if spec.auth.insecure:
                ssh += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
            env["GIT_SSH_COMMAND"] = shlex.join(ssh)
        if (target / ".git").exists():
            ctx.logger.info("git: updating %s", spec.path)
            _git(["-C", str(target), "fetch", "origin", spec.branch], env)
            _git(["-C", str(target), "reset", "--hard", f"origin/{spec.branch}"], env)
            if spec.branch_only:
                _git(["-C", str(target), "checkout", spec.branch], env)
            return
        ctx.logger.info("git: cloning %s into %s", spec.url, spec.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        _git(["clone", "--branch", spec.branch, *(["--single-branch"] if spec.branch_only
                                                   else []), spec.url, str(target)], env)
