"""`authorized_keys`: user -> SSH keys, literal or fetched (`github:user`, `gitlab:user`, URL).

Keys are appended to ~/.ssh/authorized_keys (mode 600, owned by the user) unless already there,
so applying the same config every boot changes nothing. The user controls their home: a link
or hard link they plant at ~/.ssh or its authorized_keys is refused (the step fails, nothing
is followed or written through), and the file is replaced atomically. A key source that cannot be reached is
a clear warning; the other keys are still written.
"""

from __future__ import annotations

import contextlib
import errno
import os

from kairos import safefs
from kairos.safefs import UnsafePath
from kairos.stages.accounts import Accounts
from kairos.stages.context import Context, Failures, PluginError
from kairos.stages.fields import as_map, as_str_list
from kairos.stages.model import Step

KEYS = ("authorized_keys",)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def parse(step: Step) -> dict[str, list[str]]:
    raw = as_map(step.payloads.get("authorized_keys"), "authorized_keys")
    return {user: as_str_list(keys, f"authorized_keys.{user}") for user, keys in raw.items()}


def remote_url(ctx: Context, key: str) -> str | None:
    """The URL to fetch for a key source, or None for a literal key."""
    scheme, sep, rest = key.partition(":")
    if sep and scheme in ctx.key_urls and rest and not rest.startswith("//"):
        return ctx.key_urls[scheme].format(user=rest.strip())
    if key.startswith(("http://", "https://", "file://")):
        return key
    return None


def fetch(ctx: Context, url: str) -> list[str]:
    # Imported here: urllib.request costs a tenth of a second at boot, and most keys are literal.
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=ctx.http_timeout) as resp:
            text = resp.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PluginError(f"cannot fetch {url} ({reason}); those keys were not added") from None
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.startswith("#")]


def ensure_keys(ctx: Context, user: str, keys: list[str], accounts: Accounts | None = None,
                failures: Failures | None = None) -> None:
    """Add `keys` for `user` (who must exist in the root's /etc/passwd)."""
    own = failures is None
    failures = failures or Failures("authorized_keys", ctx.logger)
    accounts = accounts or Accounts.load(ctx)
    row = accounts.passwd.get(user)
    if row is None:
        failures.add(f"user '{user}' does not exist; keys not written")
        if own:
            failures.raise_if_any()
        return
    uid, gid, home = int(row[2]), int(row[3]), row[5] or "/"
    wanted: list[str] = []
    for key in keys:
        url = remote_url(ctx, key)
        if url is None:
            wanted.append(key.strip())
            continue
        try:
            wanted.extend(fetch(ctx, url))
        except PluginError as exc:
            failures.add(f"{key} for {user}: {exc.message}")
    if wanted:
        failures.attempt(f"keys for {user}",
                         lambda: write_keys(ctx, home, uid, gid, wanted))
    if own:
        failures.raise_if_any()


def open_ssh_dir(home_fd: int, uid: int, gid: int, shown: str) -> int:
    """The fd of ~/.ssh (made 0700 when missing), owned by the user. It lies in the user's
    own place, so a link there (whoever owns it) is refused, never followed."""
    try:
        fd = os.open(".ssh", DIR_FLAGS, dir_fd=home_fd)
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):
            os.mkdir(".ssh", 0o700, dir_fd=home_fd)
        fd = os.open(".ssh", DIR_FLAGS, dir_fd=home_fd)
        os.fchmod(fd, 0o700)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(shown, "is a symbolic link or not a directory; not followed, "
                             "keys not written") from None
        raise
    try:
        safefs.fchown(fd, uid, gid)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_keys(ctx: Context, home: str, uid: int, gid: int, keys: list[str]) -> None:
    """Add the missing `keys` to HOME/.ssh/authorized_keys (0600, owned by the user).

    The home is reached from the root through descriptors (trusted links only); .ssh and
    authorized_keys are never followed when they are links, and a file with other hard
    links is refused: it could be /etc/shadow, which we must neither read nor extend. The
    file is replaced atomically, so a power cut never leaves it empty."""
    shown = f"{home.rstrip('/')}/.ssh"
    with safefs.open_dir(ctx.root, home, create=True) as home_fd:
        ssh_fd = open_ssh_dir(home_fd, uid, gid, shown)
        try:
            target = f"{shown}/authorized_keys"
            found = safefs.read_at(ssh_fd, "authorized_keys", shown=target)
            if found is not None and found[1].st_nlink > 1:
                raise UnsafePath(target, "has other hard links; not read or changed")
            current = "" if found is None else found[0].decode("utf-8", errors="replace")
            missing = [k for k in dict.fromkeys(keys) if k and k not in current]
            if not missing and found is not None:
                return  # unchanged: the file (and its mtime) stays as it is
            if current and not current.endswith("\n"):
                current += "\n"
            data = (current + "".join(k + "\n" for k in missing)).encode()
            safefs.write_at(ssh_fd, "authorized_keys", data, mode=0o600, uid=uid, gid=gid,
                            shown=target)
        finally:
            os.close(ssh_fd)


def apply(step: Step, ctx: Context) -> None:
    failures = Failures("authorized_keys", ctx.logger)
    accounts = Accounts.load(ctx)
    for user, keys in parse(step).items():
        ensure_keys(ctx, user, keys, accounts, failures)
    failures.raise_if_any()
