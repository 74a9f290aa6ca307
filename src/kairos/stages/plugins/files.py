"""`files`: write files with content (optionally base64/gzip encoded), mode and owner."""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib
from dataclasses import dataclass
from functools import partial

from kairos.stages.accounts import Accounts
from kairos.stages.context import Context, Failures, PluginError
from kairos.stages.fields import PayloadError, as_int, as_map_list, as_mode, as_str
from kairos.stages.fsutil import write_file
from kairos.stages.model import Step

KEYS = ("files",)
ENCODINGS = {"": "plain", "b64": "b64", "base64": "b64", "gz": "gz", "gzip": "gz",
             "gz+base64": "gz+b64", "gzip+base64": "gz+b64", "gz+b64": "gz+b64",
             "gzip+b64": "gz+b64", "base64+gz": "gz+b64", "b64+gz": "gz+b64",
             "base64+gzip": "gz+b64", "b64+gzip": "gz+b64"}


@dataclass
class File:
    path: str
    content: str = ""
    encoding: str = ""
    permissions: int | None = None
    owner: int | None = None
    group: int | None = None
    owner_string: str = ""


def parse(step: Step) -> list[File]:
    out = []
    for i, raw in enumerate(as_map_list(step.payloads.get("files"), "files")):
        where = f"files[{i}]"
        path = as_str(raw.get("path"), f"{where}.path")
        if not path:
            raise PayloadError(f"{where}: a file needs a path")
        encoding = as_str(raw.get("encoding"), f"{where}.encoding").strip().lower()
        if encoding not in ENCODINGS:
            raise PayloadError(f"{where}.encoding: '{encoding}' is not one of "
                               "b64, base64, gz, gzip, gz+b64, gzip+base64")
        owner = raw.get("owner")
        owner_string = as_str(raw.get("owner_string"), f"{where}.owner_string")
        if isinstance(owner, str) and not owner.strip().isdigit():
            owner_string, owner = owner_string or owner, None  # `owner: root` means a name
        out.append(File(path=path, content=as_str(raw.get("content"), f"{where}.content"),
                        encoding=encoding,
                        permissions=as_mode(raw.get("permissions"), f"{where}.permissions"),
                        owner=as_int(owner, f"{where}.owner"),
                        group=as_int(raw.get("group"), f"{where}.group"),
                        owner_string=owner_string))
    return out


def decode(content: str, encoding: str) -> bytes:
    kind = ENCODINGS[encoding]
    try:
        if kind == "plain":
            return content.encode()
        if kind == "b64":
            return base64.b64decode(content, validate=False)
        if kind == "gz":
            return gzip.decompress(content.encode("latin-1"))
        return gzip.decompress(base64.b64decode(content, validate=False))
    except (binascii.Error, OSError, EOFError, zlib.error, UnicodeEncodeError) as exc:
        raise PluginError(f"content is not valid {encoding}: {exc}") from None


def owner_of(ctx: Context, f: File, accounts: list[Accounts]) -> tuple[int | None, int | None]:
    if not f.owner_string:
        return f.owner, f.group
    if not accounts:
        accounts.append(Accounts.load(ctx))
    return accounts[0].lookup(f.owner_string)


def write(ctx: Context, f: File, accounts: list[Accounts]) -> None:
    data = decode(f.content, f.encoding)
    if not f.encoding and b"{{" in data:
        data = ctx.render(data.decode()).encode()
    uid, gid = owner_of(ctx, f, accounts)
    # unset mode or owner: an existing file's are kept (0644 and root for a new file)
    write_file(ctx.root, f.path, data, f.permissions, uid, gid)


def apply(step: Step, ctx: Context) -> None:
    failures = Failures("files", ctx.logger)
    accounts: list[Accounts] = []  # loaded once, only if an owner is given by name
    for f in parse(step):
        failures.attempt(f.path, partial(write, ctx, f, accounts))
    failures.raise_if_any()
