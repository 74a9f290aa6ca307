"""What every plugin gets: the target root, environment, logger, a shell, and helpers.

`root` is "/" on a device. Any other root is treated like a chroot: paths in stage files are
resolved below it, and symlinks inside it are followed *inside* it, so an absolute link such as
/etc/hosts -> /usr/local/etc/hosts never escapes to the host.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kairos.errors import KairosError
from kairos.run import Result, run
from kairos.stages import sysinfo
from kairos.stages.fsutil import resolve_in_root

log = logging.getLogger("kairos.stages")

KEY_SOURCES_OVERRIDE = "/etc/kairos/key-sources.json"


def load_key_urls(override: str = KEY_SOURCES_OVERRIDE) -> dict[str, str]:
    """Where `github:user` / `gitlab:user` SSH keys come from: the shipped data file, or the
    device's own /etc/kairos/key-sources.json. Tests point them at 127.0.0.1."""
    import json
    from importlib import resources
    text = resources.files("kairos.stages").joinpath("data/key-sources.json").read_text()
    try:
        with open(override, encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        pass
    try:
        data = json.loads(text)
    except ValueError as exc:
        log.warning("%s is not valid JSON (%s): using the shipped key sources", override, exc)
        data = json.loads(resources.files("kairos.stages").joinpath(
            "data/key-sources.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_") and isinstance(v, str)}


DEFAULT_KEY_URLS: dict[str, str] = load_key_urls()


class PluginError(KairosError):
    """A plugin could not do (all of) its work; the message lists what failed."""


class Shell:
    """Runs user scripts as ["/bin/sh", "-c", script] against the target root.

    root "/": directly. Another root: `chroot ROOT /bin/sh -c` when we are root and ROOT has a
    shell (a real system tree). A tree that cannot be chrooted into (a scratch tree in tests)
    runs scripts on the host with the working directory and $ROOT set to the tree, but only
    when `host_fallback` allows it: a stage script such as `rm -f /etc/hosts` must never hit
    the host by accident.
    """

    def __init__(self, root: Path, env: Mapping[str, str], *, host_fallback: bool = False) -> None:
        self.root = root
        self.env = dict(env)
        self.chroot = False
        self.host_fallback = host_fallback
        self.refusal = ""
        if root != Path("/"):
            has_sh = resolve_in_root(root, "/bin/sh").exists()
            self.chroot = os.geteuid() == 0 and has_sh
            if not self.chroot:
                self.refusal = (f"{root} has no /bin/sh to chroot into" if not has_sh
                                else "chroot needs root privileges")

    def run(self, script: str) -> Result:
        argv = ["/bin/sh", "-c", script]
        env = dict(self.env)
        cwd: Path | None = None
        if self.chroot:
            argv = ["chroot", str(self.root), *argv]
        elif self.root != Path("/"):
            if not self.host_fallback:
                raise PluginError(f"cannot run shell commands for {self.root}: {self.refusal}")
            env.setdefault("ROOT", str(self.root))
            cwd = self.root
        return run(argv, check=False, env=env, cwd=cwd)


@dataclass
class Context:
    root: Path = Path("/")
    env: dict[str, str] = field(default_factory=dict)
    logger: logging.Logger = log
    dry_run: bool = False
    # let scripts for a root that cannot be chrooted into run on the host (tests)
    host_commands: bool = False
    shell: Shell | None = None
    key_urls: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_KEY_URLS))
    http_timeout: float = 10.0
    arch: str = field(default_factory=sysinfo.go_arch)
    _values: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.shell is None:
            self.shell = Shell(self.root, self.env, host_fallback=self.host_commands)

    @property
    def live(self) -> bool:
        """True when acting on the running system rather than a tree below another root."""
        return self.root == Path("/")

    def path(self, path: str | os.PathLike[str], *, follow_last: bool = True) -> Path:
        if self.live:
            return Path("/", os.fspath(path))
        return resolve_in_root(self.root, path, follow_last=follow_last)

    def shell_path(self, path: str) -> str:
        """`path` (inside the root) as the shell sees it: itself in a chroot or on the live
        system, the host path when commands run on the host for a scratch root."""
        assert self.shell is not None
        if self.live or self.shell.chroot:
            return path
        return str(self.path(path))

    def sh(self, script: str) -> Result:
        assert self.shell is not None
        return self.shell.run(script)

    def values(self) -> dict[str, Any]:
        if self._values is None:
            self._values = sysinfo.template_values(self.root)
        return self._values

    def render(self, text: str, data: Mapping[str, Any] | None = None) -> str:
        """Render a template; on an unsupported template keep the text and warn (as yip)."""
        if "{{" not in text:
            return text
        from kairos.stages.template import TemplateError, render

        try:
            return render(text, data if data is not None else {"Values": self.values()})
        except TemplateError as exc:
            self.logger.warning("template not rendered (%s); using the text as written", exc)
            return text


class Failures:
    """Collects per-item failures so a plugin does every item, then reports them all."""

    def __init__(self, plugin: str, logger: logging.Logger) -> None:
        self.plugin = plugin
        self.logger = logger
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        self.logger.warning("%s: %s", self.plugin, message)
        self.messages.append(message)

    def attempt(self, what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except (OSError, KairosError, ValueError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.add(f"{what}: {detail}")

    def raise_if_any(self) -> None:
        if self.messages:
            raise PluginError("; ".join(self.messages))
