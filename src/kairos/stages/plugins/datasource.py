"""`datasource`: pull user data from a provider into a directory.

Implemented providers: `cdrom` (NoCloud: a filesystem labelled cidata/CIDATA, or a CD drive,
holding `user-data`), `config-drive` (label config-2, openstack/latest/user_data) and `file`
(the file at `path`). Cloud metadata services are not implemented here and say so.

The data lands in `path` (a directory, /run/config by default) as `userdata`, and as
`userdata_name` (default userdata.yaml) when it is a config, so the next stage run picks it
up; a `#!` script is saved and run instead, as yip does.
"""

from __future__ import annotations

import contextlib
import glob
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kairos.errors import KairosError
from kairos.run import run
from kairos.stages.context import Context, PluginError
from kairos.stages.fields import as_map, as_str, as_str_list
from kairos.stages.fsutil import make_dirs, write_file
from kairos.stages.model import Step

KEYS = ("datasource",)
CONFIG_PATH = "/run/config"
# provider -> (filesystem label, files to read in order)
MEDIA = {"cdrom": ("cidata", ("user-data", "config")),
         "config-drive": ("config-2", ("openstack/latest/user_data",))}
NETWORK_PROVIDERS = ("aws", "azure", "gcp", "hetzner", "openstack", "packet", "scaleway",
                     "vultr", "digitalocean", "metaldata", "vmware", "maas")


@dataclass
class DataSource:
    providers: list[str] = field(default_factory=list)
    path: str = ""
    userdata_name: str = "userdata.yaml"


def parse(step: Step) -> DataSource:
    raw = as_map(step.payloads.get("datasource"), "datasource")
    providers = list(dict.fromkeys(as_str_list(raw.get("providers"), "datasource.providers")))
    return DataSource(providers=providers, path=as_str(raw.get("path"), "datasource.path"),
                      userdata_name=as_str(raw.get("userdata_name"), "datasource.userdata_name")
                      or "userdata.yaml")


def find_labeled(label: str) -> list[str]:
    """Block devices whose filesystem label is `label` in lower or upper case."""
    found: list[str] = []
    for variant in dict.fromkeys((label.lower(), label.upper())):
        result = run(["blkid", "-t", f"LABEL={variant}", "-o", "device"], check=False)
        found += [d for d in result.stdout.split() if not d.startswith(("/dev/loop", "/dev/ram"))]
    return list(dict.fromkeys(found))


def cd_drives() -> list[str]:
    return sorted(glob.glob("/dev/sr[0-9]*"))


def read_from_device(device: str, files: tuple[str, ...]) -> bytes | None:
    """Mount `device` read-only (iso9660, then vfat) and return the first file found."""
    from kairos.disk.mounts import mount, tempdir

    loop = ["loop"] if Path(device).is_file() else []
    with tempdir(prefix="kairos-datasource-") as mnt:
        for fstype in ("iso9660", "vfat"):
            try:
                with mount(device, mnt, fstype=fstype, options=["ro", *loop]):
                    for name in files:
                        candidate = mnt / name
                        if candidate.is_file():
                            return candidate.read_bytes()
                    return None
            except KairosError:
                continue
    return None


def from_media(ctx: Context, provider: str) -> tuple[bytes, str] | None:
    label, files = MEDIA[provider]
    devices = find_labeled(label) + (cd_drives() if provider == "cdrom" else [])
    for device in dict.fromkeys(devices):
        data = read_from_device(device, files)
        if data:
            ctx.logger.info("datasource: user data found on %s (%s)", device, provider)
            return data, device
    return None


def save_userdata(ctx: Context, base: str, data: bytes, name: str) -> None:
    directory = ctx.path(base)
    make_dirs(directory)
    raw = directory / "userdata"
    text = data.decode("utf-8", errors="replace")
    if text.startswith("#!"):
        write_file(raw, data, 0o744)
        ctx.logger.info("datasource: user data is a script; running it")
        result = ctx.sh(shlex.quote(ctx.shell_path(f"{base.rstrip('/')}/userdata")))
        if result.returncode != 0:
            raise PluginError(f"user-data script exited {result.returncode}: "
                              f"{result.stderr.strip()[-300:]}")
        return
    write_file(raw, data, 0o644)
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        parsed = "not yaml"
    if parsed is None or isinstance(parsed, dict):
        write_file(directory / name, data, 0o644)
        ctx.logger.info("datasource: wrote %s/%s", base.rstrip("/"), name)
    else:
        ctx.logger.info("datasource: user data is neither a config nor a script; kept as "
                        "%s/userdata only", base.rstrip("/"))


def apply(step: Step, ctx: Context) -> None:
    spec = parse(step)
    if not spec.providers:
        return
    found: tuple[bytes, str] | None = None
    for provider in spec.providers:
        if provider in MEDIA and found is None:
            found = from_media(ctx, provider)
    if found is None and "file" in spec.providers and spec.path:
        source = ctx.path(spec.path)
        with contextlib.suppress(OSError):
            if source.is_file():
                found = source.read_bytes(), spec.path
    unsupported = [p for p in spec.providers if p not in (*MEDIA, "file")]
    if found is None:
        if unsupported:
            ctx.logger.info("datasource: providers %s are not supported here",
                            ", ".join(unsupported))
        tried = [p for p in spec.providers if p not in unsupported]
        raise PluginError(f"no user data found (tried {', '.join(tried)})" if tried
                          else "no supported datasource provider given")
    data, origin = found
    base = spec.path if spec.path and spec.path != origin else CONFIG_PATH
    save_userdata(ctx, base, data, spec.userdata_name)
