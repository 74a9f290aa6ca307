"""GRUB's environment block: a 1024-byte file of `key=value` lines that GRUB itself rewrites.

Format (GRUB's lib/envblk.c, as read and written by `grub-editenv`): the header line
`# GRUB Environment Block`, then one `name=value` line per variable, where a backslash or a
newline inside a value is preceded by a backslash, then `#` padding up to exactly 1024 bytes.
Lines starting with `#` are comments. GRUB's `save_env` writes the file's sectors in place and
cannot change its size, so the file must stay exactly 1024 bytes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from kairos.errors import BadInput

BLOCK_SIZE = 1024
HEADER = b"# GRUB Environment Block\n"


class EnvBlockError(BadInput):
    """A malformed block, a bad variable name or a block that would overflow."""


def _check_name(name: str) -> None:
    if not name or "=" in name or "\n" in name or "\0" in name or name.startswith("#"):
        raise EnvBlockError(
            f"invalid GRUB environment variable name {name!r}",
            "use a non-empty name without '=', newlines, NUL or a leading '#'",
        )


def _escape(value: bytes) -> bytes:
    out = bytearray()
    for byte in value:
        if byte in (0x5C, 0x0A):  # backslash, newline
            out.append(0x5C)
        out.append(byte)
    return bytes(out)


def encode(env: Mapping[str, str], *, size: int = BLOCK_SIZE) -> bytes:
    """The block for `env` (in its order), padded with `#` to `size` bytes."""
    body = bytearray(HEADER)
    for name, value in env.items():
        _check_name(name)
        if "\0" in value:
            raise EnvBlockError(f"the value of {name} contains a NUL byte",
                                "GRUB environment values are text")
        body += name.encode() + b"=" + _escape(value.encode()) + b"\n"
    if len(body) > size:
        raise EnvBlockError(
            f"the GRUB environment does not fit in {size} bytes "
            f"(needs {len(body)}: {', '.join(env) or 'no variables'})",
            "shorten or remove some values (grub options, extra_cmdline)",
        )
    return bytes(body) + b"#" * (size - len(body))


def _lines(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield (name, raw escaped value) pairs the way GRUB's iterator reads them."""
    pos, end = len(HEADER), len(data)
    while pos < end:
        if data[pos] == 0x23:  # '#': comment or padding up to the next newline
            nl = data.find(b"\n", pos)
            pos = end if nl < 0 else nl + 1
            continue
        eq = data.find(b"=", pos)
        if eq < 0:
            return  # GRUB stops at a broken tail too
        name = data[pos:eq]
        p = eq + 1
        while p < end and data[p] != 0x0A:
            p += 2 if data[p] == 0x5C else 1
        if p >= end:
            return  # a value without its newline is broken: GRUB ignores it
        yield name, data[eq + 1:p]
        pos = p + 1


def _unescape(raw: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and i + 1 < len(raw):
            i += 1
        out.append(raw[i])
        i += 1
    return bytes(out)


def decode(data: bytes) -> dict[str, str]:
    """The variables of a block, in file order (the last of duplicate names wins)."""
    if not data.startswith(HEADER):
        raise EnvBlockError("not a GRUB environment block (missing its header line)",
                            "create one with 'grub-editenv FILE create'")
    env: dict[str, str] = {}
    for name, raw in _lines(data):
        env[name.decode(errors="replace")] = _unescape(raw).decode(errors="replace")
    return env


def read(path: Path) -> dict[str, str]:
    """The variables stored in the env file at `path`; a missing file is an empty env."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        return decode(data)
    except EnvBlockError as exc:
        raise EnvBlockError(f"{path}: {exc.message}", exc.hint) from None


def write(path: Path, env: Mapping[str, str], *, size: int = BLOCK_SIZE) -> None:
    """Replace the env file atomically with a block of exactly `size` bytes.

    Written to a temp file beside it, fsynced, renamed over, then the directory is fsynced: a
    power cut leaves either the old block or the new one, never a torn one.
    """
    block = encode(env, size=size)  # raises before anything is touched
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.write(fd, block)
        os.fchmod(fd, 0o644)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def create(path: Path) -> None:
    """An empty env block at `path` (like `grub-editenv FILE create`)."""
    write(path, {})


def set_vars(path: Path, values: Mapping[str, str]) -> dict[str, str]:
    """Set variables (existing names keep their place, new ones are appended); returns the env.

    Like `grub-editenv FILE set K=V`: an empty value is stored as empty, not removed.
    """
    env = read(path)
    for name, value in values.items():
        _check_name(name)
        env[name] = value
    write(path, env)
    return env


def unset_vars(path: Path, names: Iterable[str]) -> dict[str, str]:
    """Remove variables (missing ones are fine); returns the env."""
    env = read(path)
    for name in names:
        env.pop(name, None)
    write(path, env)
    return env
