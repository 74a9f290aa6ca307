"""`authorized_keys`: user -> SSH keys, literal or fetched (`github:user`, `gitlab:user`, URL).

Keys are appended to ~/.ssh/authorized_keys (mode 600, owned by the user) unless already there,
so applying the same config every boot changes nothing. A key source that cannot be reached is
a clear warning; the other keys are still written.
"""

from __future__ import annotations

import os
from pathlib import Path

from kairos.stages.accounts import Accounts
from kairos.stages.context import Context, Failures, PluginError
from kairos.stages.fields import as_map, as_str_list
from kairos.stages.fsutil import chown
from kairos.stages.model import Step

KEYS = ("authorized_keys",)


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
        failures.attempt(f"~{user}/.ssh/authorized_keys",
                         lambda: write_keys(ctx.path(home), uid, gid, wanted))
    if own:
        failures.raise_if_any()


def write_keys(home: Path, uid: int, gid: int, keys: list[str]) -> None:
    ssh_dir = home / ".ssh"
    if not ssh_dir.is_dir():
        ssh_dir.mkdir(mode=0o700, parents=True)
        os.chmod(ssh_dir, 0o700)
    chown(ssh_dir, uid, gid)
    target = ssh_dir / "authorized_keys"
    current = target.read_text() if target.exists() else ""
    missing = [k for k in dict.fromkeys(keys) if k and k not in current]
    if not missing and target.exists():
        return
    if current and not current.endswith("\n"):
        current += "\n"
    target.write_text(current + "".join(k + "\n" for k in missing))
    os.chmod(target, 0o600)
    chown(target, uid, gid)


def apply(step: Step, ctx: Context) -> None:
    failures = Failures("authorized_keys", ctx.logger)
    accounts = Accounts.load(ctx)
    for user, keys in parse(step).items():
        ensure_keys(ctx, user, keys, accounts, failures)
    failures.raise_if_any()
