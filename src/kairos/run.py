"""The only place that spawns processes: argv lists, logged, typed errors."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kairos.errors import CommandFailed, MissingTool

log = logging.getLogger("kairos.run")

# Which Debian package provides a tool, so a missing one gets an exact hint.
TOOL_PACKAGES: dict[str, str] = {
    "depmod": "kmod",
    "debootstrap": "debootstrap",
    "mksquashfs": "squashfs-tools",
    "unsquashfs": "squashfs-tools",
    "mkfs.erofs": "erofs-utils",
    "grub-mkimage": "grub-common",
    "grub-editenv": "grub-common",
    "mcopy": "mtools",
    "mmd": "mtools",
    "mdir": "mtools",
    "mtype": "mtools",
    "mkfs.vfat": "dosfstools",
    "sgdisk": "gdisk",
    "sfdisk": "fdisk",
    "partx": "util-linux",
    "losetup": "mount",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "blkid": "util-linux",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "skopeo": "skopeo",
    "podman": "podman",
    "xorriso": "xorriso",
    "busybox": "busybox-static",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "ssh-keyscan": "openssh-client",
    "cpio": "cpio",
    "zstd": "zstd",
}


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def which(tool: str) -> str:
    """Return the path of a host tool, or raise MissingTool with the package to install."""
    path = shutil.which(tool)
    if path is None:
        pkg = TOOL_PACKAGES.get(tool, tool)
        raise MissingTool(
            f"the host tool '{tool}' is not installed",
            f"install it with: apt-get install {pkg} (or run scripts/setup)",
        )
    return path


def require(*tools: str) -> None:
    """Check every tool up front and report all missing ones at once."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pkgs = sorted({TOOL_PACKAGES.get(t, t) for t in missing})
        raise MissingTool(
            f"missing host tools: {', '.join(missing)}",
            f"install them with: apt-get install {' '.join(pkgs)} (or run scripts/setup)",
        )


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    capture: bool = True,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float | None = None,
) -> Result:
    """Run a command given as an argv list (never a shell string).

    The exact command is logged at debug level; a failure raises CommandFailed carrying argv,
    exit code and the tail of stderr.
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("empty argv")
    exe = args[0] if "/" in args[0] else which(args[0])
    log.debug("run: %s", " ".join(args))
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    binary = isinstance(input, bytes)
    proc = subprocess.run(
        [exe, *args[1:]],
        input=input,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        check=False,
        text=not binary,
    )
    out = proc.stdout if proc.stdout is not None else ""
    err = proc.stderr if proc.stderr is not None else ""
    if isinstance(out, bytes):
        out = out.decode(errors="replace")
    if isinstance(err, bytes):
        err = err.decode(errors="replace")
    if err and log.isEnabledFor(logging.DEBUG):
        log.debug("stderr: %s", err[-2000:])
    if check and proc.returncode != 0:
        raise CommandFailed(args, proc.returncode, err[-4000:] or out[-4000:])
    return Result(args, proc.returncode, out, err)


def popen(
    argv: Sequence[str | os.PathLike[str]], **kwargs: object
) -> subprocess.Popen[bytes]:
    """Start a long-running process (QEMU, a registry) under the same logging."""
    args = [os.fspath(a) for a in argv]
    exe = args[0] if "/" in args[0] else which(args[0])
    log.debug("start: %s", " ".join(args))
    return subprocess.Popen([exe, *args[1:]], **kwargs)  # type: ignore[call-overload,no-any-return]
