"""`datasource`: pull user data from a provider into a directory.

Implemented providers: `cdrom` (NoCloud: a filesystem labelled cidata/CIDATA, or a CD drive,
holding `user-data`), `config-drive` (label config-2, openstack/latest/user_data) and `file`
(the file at `path`), tried in the order listed. Cloud metadata services are not
implemented here; they are noted at info level and skipped.

Most machines have no datasource at all, so "no user data found" is logged at info level and
the step succeeds. Only a real error fails it: a labelled volume that cannot be mounted or
read, an unreadable `file`, user data that cannot be saved, a user-data script that fails.

The data lands in `path` (a directory, /run/config by default) as `userdata`, and as
`userdata_name` (default userdata.yaml) when it is a config, so the next stage run picks it
up; a `#!` script is saved and run instead, as yip does.
"""

from __future__ import annotations

import errno
import glob
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kairos import safefs
from kairos.errors import CommandFailed, KairosError
from kairos.run import run
from kairos.stages.context import Context, PluginError
from kairos.stages.fields import as_map, as_str, as_str_list
from kairos.stages.fsutil import write_file
from kairos.stages.model import Step

KEYS = ("datasource",)
CONFIG_PATH = "/run/config"
SECRET_MODE = 0o600  # user data may hold passwords and tokens
SCRIPT_MODE = 0o700
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
    """Mount `device` read-only (iso9660, then vfat) and return the first file found, or
    None when it has none of them. Raises PluginError when it cannot be mounted or read."""
    from kairos.disk.mounts import mount, tempdir

    loop = ["loop"] if Path(device).is_file() else []
    reason = ""
    with tempdir(prefix="kairos-datasource-") as mnt:
        for fstype in ("iso9660", "vfat"):
            try:
                with mount(device, mnt, fstype=fstype, options=["ro", *loop]):
                    for name in files:
                        candidate = mnt / name
                        if candidate.is_file():
                            try:
                                return candidate.read_bytes()
                            except OSError as exc:
                                raise PluginError(f"{device}: cannot read {name} "
                                                  f"({exc.strerror or exc})") from None
                    return None
            except PluginError:
                raise
            except CommandFailed as exc:  # mount's first line says why; its last is boilerplate
                lines = [ln.strip() for ln in exc.stderr_tail.splitlines() if ln.strip()]
                reason = lines[0].removeprefix("mount: ") if lines else exc.message
            except KairosError as exc:
                reason = exc.message
    raise PluginError(f"{device}: cannot be mounted ({reason})")


def from_media(ctx: Context, provider: str, problems: list[str]) -> tuple[bytes, str] | None:
    """User data from a volume labelled for `provider` (or, for cdrom, any CD). A labelled
    volume we cannot read is a problem; an empty CD drive or a CD without a seed is not."""
    label, files = MEDIA[provider]
    labelled = find_labeled(label)
    drives = cd_drives() if provider == "cdrom" else []
    for device in dict.fromkeys(labelled + drives):
        try:
            data = read_from_device(device, files)
        except PluginError as exc:
            if device in labelled:
                problems.append(exc.message)
            else:
                ctx.logger.debug("datasource: %s", exc.message)
            continue
        if data:
            ctx.logger.info("datasource: user data found on %s (%s)", device, provider)
            return data, device
    return None


def from_file(ctx: Context, path: str, problems: list[str]) -> tuple[bytes, str] | None:
    try:
        data = safefs.read_bytes(ctx.root, path)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.EISDIR):  # not there as a file: no data
            problems.append(f"{path}: cannot be read ({exc.strerror or exc})")
        return None
    except KairosError as exc:  # a fifo, or a link we do not follow
        problems.append(f"{path}: cannot be read ({exc.message})")
        return None
    return None if data is None else (data, path)


def save_userdata(ctx: Context, base: str, data: bytes, name: str) -> None:
    """User data may hold passwords and tokens: saved 0600 (a script 0700), owned by root."""
    raw = f"{base.rstrip('/')}/userdata"
    text = data.decode("utf-8", errors="replace")
    if text.startswith("#!"):
        write_file(ctx.root, raw, data, SCRIPT_MODE, 0, 0)
        ctx.logger.info("datasource: user data is a script; running it")
        result = ctx.sh(shlex.quote(ctx.shell_path(f"{base.rstrip('/')}/userdata")))
        if result.returncode != 0:
            raise PluginError(f"user-data script exited {result.returncode}: "
                              f"{result.stderr.strip()[-300:]}")
        return
    write_file(ctx.root, raw, data, SECRET_MODE, 0, 0)
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        parsed = "not yaml"
    if parsed is None or isinstance(parsed, dict):
        write_file(ctx.root, f"{base.rstrip('/')}/{name}", data, SECRET_MODE, 0, 0)
        ctx.logger.info("datasource: wrote %s/%s", base.rstrip("/"), name)
    else:
        ctx.logger.info("datasource: user data is neither a config nor a script; kept as "
                        "%s/userdata only", base.rstrip("/"))


def apply(step: Step, ctx: Context) -> None:
    """Finding no user data is the usual boot (no seed disk, no cloud): that is logged and
    the step succeeds. Only a source found but unreadable, or saving failing, raises."""
    spec = parse(step)
    if not spec.providers:
        return
    unsupported = [p for p in spec.providers if p not in (*MEDIA, "file")]
    if unsupported:
        ctx.logger.info("datasource: providers %s are not supported here; skipped",
                        ", ".join(unsupported))
    problems: list[str] = []
    found: tuple[bytes, str] | None = None
    for provider in spec.providers:
        if provider in MEDIA:
            found = from_media(ctx, provider, problems)
        elif provider == "file" and spec.path:
            found = from_file(ctx, spec.path, problems)
        if found is not None:
            break
    if found is None:
        if problems:
            raise PluginError("; ".join(problems))
        tried = [p for p in spec.providers if p not in unsupported]
        ctx.logger.info("datasource: no user data found (%s)",
                        f"tried {', '.join(tried)}" if tried else "no supported provider given")
        return
    for problem in problems:  # another source had data; the unreadable one is only noted
        ctx.logger.info("datasource: %s", problem)
    data, origin = found
    base = spec.path if spec.path and spec.path != origin else CONFIG_PATH
    save_userdata(ctx, base, data, spec.userdata_name)
