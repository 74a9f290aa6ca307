"""Netboot artifacts from the factory's output directory (`kairos netboot`).

What is written, with Kairos's release names (NAME defaults to the image's
`kairos-<flavor>-<flavor release>-<variant>-<arch>-<model>-<version>`):
- `NAME-kernel`, `NAME-initrd`: the image's kernel and our initrd;
- `NAME.squashfs`: the slot image, the very file the ISO and a disk carry;
- `NAME.ipxe`: the iPXE script booting them;
- `config.yaml` with `--cloud-config`, handed to the system as `config_url=`;
- `netboot.json`: what was written (it also marks the directory as ours to replace).

The script boots the kernel with `root=live:URL` of the squashfs (dracut's livenet key, as
Kairos uses it) and Kairos's `netboot` marker: our initrd brings the network up, downloads
the image into RAM and boots it live, as from the ISO. All URLs hang off one iPXE setting,
`base-url`: `--url` fixes it in the script; without it, whoever chains the script sets it
first (a PXE menu, or `kairos vm --netboot`, which serves the directory over HTTP).

The directory is assembled beside DIR and swapped in whole once complete: DIR is either the
complete new set or untouched.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from kairos.artifacts.iso import DISK_ONLY_ARGS, IsoInputs, check_inputs
from kairos.boot.grubcfg import COMMON_CMDLINE
from kairos.boot.live import LIVE_URL_PREFIX, NETBOOT_ARGS, NETBOOT_CONFIG_NAME, NETBOOT_SCHEMES
from kairos.envfile import parse_env
from kairos.errors import BadInput
from kairos.factory.build import copy_out, staged_output
from kairos.ui import step

KERNEL_SUFFIX, INITRD_SUFFIX, ROOTFS_SUFFIX, SCRIPT_SUFFIX = "-kernel", "-initrd", ".squashfs", ".ipxe"
MARKER = "netboot.json"
DEFAULT_NAME = "kairos"
# The iPXE setting every URL of the script hangs off.
BASE_URL_VAR = "base-url"
_NAME_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# An http URL, optionally with iPXE settings in it (`http://${next-server}/kairos`); nothing
# that would end the kernel's argument or the script's line.
_URL_OK = re.compile(r"http://[^\s\"'\\;]+")


@dataclass(frozen=True)
class NetbootPlan:
    """What `make_netboot` writes, decided (and checked) before anything is written."""

    name: str
    url: str | None  # fixed base URL, or None: the chainer sets ${base-url}
    inputs: IsoInputs

    @property
    def kernel(self) -> str:
        return self.name + KERNEL_SUFFIX

    @property
    def initrd(self) -> str:
        return self.name + INITRD_SUFFIX

    @property
    def rootfs(self) -> str:
        return self.name + ROOTFS_SUFFIX

    @property
    def script(self) -> str:
        return self.name + SCRIPT_SUFFIX

    @property
    def config(self) -> str | None:
        return NETBOOT_CONFIG_NAME if self.inputs.cloud_config is not None else None


@dataclass(frozen=True)
class NetbootResult:
    output: str
    name: str
    script: str
    kernel: str
    initrd: str
    rootfs: str
    rootfs_size: int
    config: str | None
    url: str | None
    cmdline: str

    def summary(self) -> dict[str, object]:
        return asdict(self)


# -- names and the script ------------------------------------------------------------------


def image_name(image_dir: Path) -> str:
    """Kairos's artifact name for the image, from the kairos-release `kairos build` leaves
    beside it; `kairos` when there is none."""
    try:
        env = parse_env((image_dir / "kairos-release").read_text())
    except (OSError, ValueError):
        return DEFAULT_NAME
    parts = [env.get(k, "") for k in ("KAIROS_FLAVOR", "KAIROS_FLAVOR_RELEASE", "KAIROS_VARIANT",
                                      "KAIROS_ARCH", "KAIROS_MODEL", "KAIROS_VERSION")]
    name = "-".join(["kairos", *(p for p in parts if p)])
    return name if _NAME_OK.fullmatch(name) else DEFAULT_NAME


def check_name(name: str) -> str:
    if not _NAME_OK.fullmatch(name) or len(name) > 200:
        raise BadInput(f"netboot name {name!r} is not a plain file name",
                       "use letters, digits, '.', '_', '+' and '-', e.g. kairos-debian-12")
    return name


def check_url(url: str) -> str:
    """The base URL the files are served from, without a trailing slash."""
    if not url.startswith(NETBOOT_SCHEMES):
        raise BadInput(f"netboot URL {url!r} is not an http:// URL",
                       "the initrd downloads the image with plain HTTP: give http://HOST/DIR")
    if not _URL_OK.fullmatch(url):
        raise BadInput(f"netboot URL {url!r} has spaces, quotes, backslashes or ';'",
                       "give a plain http://HOST[:PORT]/DIR")
    return url.rstrip("/")


def _var(name: str) -> str:
    return "${" + name + "}"


def console_args() -> str:
    """The disk's console and panic arguments, without the disk-only ones (as the ISO)."""
    return " ".join(t for t in COMMON_CMDLINE.split() if not t.startswith(DISK_ONLY_ARGS))


def kernel_cmdline(plan: NetbootPlan) -> str:
    """The kernel's arguments as the script writes them (iPXE expands ${base-url}).
    `initrd=` names the initrd image for the kernel's EFI stub (iPXE under UEFI)."""
    base = _var(BASE_URL_VAR)
    args = [f"initrd={plan.initrd}", f"{LIVE_URL_PREFIX}{base}/{plan.rootfs}", NETBOOT_ARGS]
    if plan.config is not None:
        args.append(f"config_url={base}/{plan.config}")
    args.append(console_args())
    return " ".join(args)


def render_ipxe(plan: NetbootPlan) -> str:
    base = _var(BASE_URL_VAR)
    fixed = f"isset {base} || set {BASE_URL_VAR} {plan.url}\n" if plan.url else ""
    return f"""\
#!ipxe
# Kairos netboot of {plan.name} (written by `kairos netboot`).
# The files sit beside this script; {BASE_URL_VAR} is the http:// address of their directory.
{fixed}isset {base} || goto no_base_url
echo kairos: booting {plan.name} live from {base}
kernel {base}/{plan.kernel} {kernel_cmdline(plan)}
initrd {base}/{plan.initrd}
boot
:no_base_url
echo kairos: set {BASE_URL_VAR} to the http:// address of this directory before chaining it
exit 1
"""


# -- checking and writing ------------------------------------------------------------------


def check_output(out: Path) -> Path:
    """A new directory, or one an earlier `kairos netboot` wrote (replaced whole)."""
    out = out.absolute()
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} is not a directory", "give a directory for the netboot files")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise BadInput(f"{out} is not empty and was not written by 'kairos netboot' "
                       f"(no {MARKER})", "give a new or empty directory")
    return out


def plan_netboot(image_dir: Path, out: Path, *, cloud_config: Path | None = None,
                 url: str | None = None, name: str | None = None) -> tuple[NetbootPlan, Path]:
    """Check everything (BadInput, one line) before anything is written."""
    out = check_output(out)
    inputs = check_inputs(image_dir, cloud_config=cloud_config)
    plan = NetbootPlan(name=check_name(name) if name is not None else image_name(image_dir),
                       url=check_url(url) if url is not None else None, inputs=inputs)
    return plan, out


def make_netboot(image_dir: Path, out: Path, *, cloud_config: Path | None = None,
                 url: str | None = None, name: str | None = None) -> NetbootResult:
    """Write the netboot files of the image in `image_dir` to directory `out`."""
    # no step() around the checks: bad input is the error line and its hint, nothing else
    plan, out = plan_netboot(image_dir, out, cloud_config=cloud_config, url=url, name=name)
    result = NetbootResult(
        output=str(out), name=plan.name, script=plan.script, kernel=plan.kernel,
        initrd=plan.initrd, rootfs=plan.rootfs, rootfs_size=plan.inputs.slot.stat().st_size,
        config=plan.config, url=plan.url, cmdline=kernel_cmdline(plan))
    with step(f"Writing the netboot files to {out}"), staged_output(out) as tmp:
        # copies (reflinks where the filesystem can): the build output may be rebuilt later
        copy_out(plan.inputs.kernel, tmp / plan.kernel)
        copy_out(plan.inputs.initrd, tmp / plan.initrd)
        copy_out(plan.inputs.slot, tmp / plan.rootfs)
        if plan.inputs.cloud_config is not None and plan.config is not None:
            shutil.copyfile(plan.inputs.cloud_config, tmp / plan.config)
        (tmp / plan.script).write_text(render_ipxe(plan))
        (tmp / MARKER).write_text(json.dumps(result.summary(), indent=2) + "\n")
    return result
