"""`downloads`: fetch http(s)/file URLs to paths, with mode and owner.

A path that is an existing directory receives the file under the URL's base name.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import PurePosixPath
from typing import BinaryIO

from kairos.safefs import open_parent, replace_at
from kairos.stages.accounts import Accounts
from kairos.stages.context import Context, Failures, PluginError
from kairos.stages.fields import PayloadError, as_int, as_map_list, as_mode, as_str
from kairos.stages.fsutil import FILE_MODE, is_dir
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


def target_path(ctx: Context, d: Download) -> str:
    """The file to write, inside the root: `path`, or the URL's base name in it when `path`
    is a directory."""
    if is_dir(ctx.root, d.path):
        name = PurePosixPath(urllib.parse.urlparse(d.url).path).name
        if not name:
            raise PluginError(f"{d.path} is a directory and {d.url} names no file")
        return f"{d.path.rstrip('/')}/{name}"
    return d.path


def fetch(ctx: Context, d: Download) -> None:
    scheme = urllib.parse.urlparse(d.url).scheme
    if scheme not in ("http", "https", "file"):
        raise PluginError("only http, https and file URLs are supported")
    target = target_path(ctx, d)
    uid, gid = d.owner, d.group
    if d.owner_string:
        uid, gid = Accounts.load(ctx).lookup(d.owner_string)
    timeout = float(d.timeout) if d.timeout > 0 else DEFAULT_TIMEOUT

    def fill(out: BinaryIO) -> None:
        with urllib.request.urlopen(d.url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, 1 << 20)

    # a temp file beside the target, renamed over it: a link or hard link planted at the
    # target is replaced, and an interrupted download leaves the old file
    with open_parent(ctx.root, target, create=True) as (dfd, name, _st):
        try:
            replace_at(dfd, name, fill, mode=FILE_MODE if d.permissions is None
                       else d.permissions, uid=uid, gid=gid, shown=target)
        except urllib.error.HTTPError as exc:
            raise PluginError(f"HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise PluginError(str(getattr(exc, "reason", exc))) from None
    ctx.logger.info("downloads: %s -> %s", d.url, d.path)


def apply(step: Step, ctx: Context) -> None:
    failures = Failures("downloads", ctx.logger)
    for d in parse(step):
        failures.attempt(d.url, partial(fetch, ctx, d))
    failures.raise_if_any()
