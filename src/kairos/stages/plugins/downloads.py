"""`downloads`: fetch http(s)/file URLs to paths, with mode and owner.

A path that is an existing directory receives the file under the URL's base name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from kairos.stages.accounts import Accounts
from kairos.stages.context import Context, Failures, PluginError
from kairos.stages.fields import PayloadError, as_int, as_map_list, as_mode, as_str
from kairos.stages.fsutil import FILE_MODE, chown, make_dirs
from kairos.stages.model import Step

KEYS = ("downloads",)
DEFAULT_TIMEOUT = 300.0


@dataclass
class Download:
    path: str
    url: str
    permissions: int | None = None
    owner: int | None = None
    group: int | None = None
    timeout: int = 0
    owner_string: str = ""


def parse(step: Step) -> list[Download]:
    out = []
    for i, raw in enumerate(as_map_list(step.payloads.get("downloads"), "downloads")):
        w = f"downloads[{i}]"
        url = as_str(raw.get("url"), f"{w}.url")
        path = as_str(raw.get("path"), f"{w}.path")
        if not url or not path:
            raise PayloadError(f"{w}: a download needs a url and a path")
        out.append(Download(path=path, url=url,
                            permissions=as_mode(raw.get("permissions"), f"{w}.permissions"),
                            owner=as_int(raw.get("owner"), f"{w}.owner"),
                            group=as_int(raw.get("group"), f"{w}.group"),
                            timeout=as_int(raw.get("timeout"), f"{w}.timeout", 0) or 0,
                            owner_string=as_str(raw.get("owner_string"), f"{w}.owner_string")))
    return out


def target_path(ctx: Context, d: Download) -> Path:
    target = ctx.path(d.path)
    if target.is_dir():
        name = Path(urllib.parse.urlparse(d.url).path).name
        if not name:
            raise PluginError(f"{d.path} is a directory and {d.url} names no file")
        target = target / name
    return target


def fetch(ctx: Context, d: Download) -> None:
    scheme = urllib.parse.urlparse(d.url).scheme
    if scheme not in ("http", "https", "file"):
        raise PluginError("only http, https and file URLs are supported")
    target = target_path(ctx, d)
    make_dirs(target.parent)
    timeout = float(d.timeout) if d.timeout > 0 else DEFAULT_TIMEOUT
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, \
                urllib.request.urlopen(d.url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, 1 << 20)
        os.chmod(tmp, FILE_MODE if d.permissions is None else d.permissions)
        os.replace(tmp, target)
    except urllib.error.HTTPError as exc:
        raise PluginError(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError) as exc:
        raise PluginError(str(getattr(exc, "reason", exc))) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    uid, gid = d.owner, d.group
    if d.owner_string:
        uid, gid = Accounts.load(ctx).lookup(d.owner_string)
    chown(target, uid, gid)
    ctx.logger.info("downloads: %s -> %s", d.url, d.path)


def apply(step: Step, ctx: Context) -> None:
    failures = Failures("downloads", ctx.logger)
    for d in parse(step):
        failures.attempt(d.url, partial(fetch, ctx, d))
    failures.raise_if_any()
