"""`kairos install` and Kairos's `manual-install CONFIG`: argument parsing only; the work is
in kairos.agent.installer."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kairos.errors import BadInput

DESCRIPTION = (
    "Erase a disk and install this OS onto it with A/B slots, recovery and GRUB for BIOS "
    "and UEFI. Defaults come from the cloud-config's install: block (device, reboot, "
    "poweroff, source, partitions, extra-partitions, system/passive/recovery-system sizes, "
    "grub_options); the cloud-config is installed as /oem/90_custom.yaml. Without --yes the "
    "plan is shown and you type 'yes'.")


def _add_source_and_after(p: argparse.ArgumentParser) -> None:
    """What to install and what to do when done: shared by every install verb."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source", metavar="IMAGE",
                     help="file:PATH (a slot image), oci:REF, ocifile:PATH or dir:PATH "
                          "(default: the live medium's slot image)")
    src.add_argument("--image", type=Path, metavar="IMAGE_DIR",
                     help="a 'kairos build' output directory (rootfs.squashfs)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--reboot", action="store_true", default=None, help="reboot when done")
    when.add_argument("--poweroff", action="store_true", default=None,
                      help="power off when done")


def _add_options(p: argparse.ArgumentParser, *, with_config: bool) -> None:
    p.add_argument("--device", metavar="DEV",
                   help="the whole disk to erase: /dev/sdX, a /dev/disk/by-* link, "
                        "script:///PATH (prints the disk) or auto (the largest empty disk)")
    if with_config:
        p.add_argument("--cloud-config", metavar="FILE|URL",
                       help="the cloud-config to install (default: what this system "
                            "collects, e.g. the live medium's)")
    _add_source_and_after(p)
    p.add_argument("--yes", action="store_true", help="do not ask before erasing the disk")
    p.add_argument("--auto", action="store_true",
                   help="the live system's boot service: install unattended only when the "
                        "collected config says install.auto: true, else do nothing")
    p.add_argument("--grub-option", action="append", metavar="KEY=VALUE",
                   help="GRUB env value for /oem/grubenv (over install.grub_options); "
                        "repeatable")
    p.add_argument("--grub-timeout", type=int, metavar="SECONDS",
                   help="how long the GRUB menu waits")
    p.add_argument("--allow-insecure-registries", action="store_true", default=None,
                   help="allow plain HTTP (and unverified TLS) for an oci: source")
    p.add_argument("--auth-file", type=Path, help="registry credentials for an oci: source")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    # Tests: collect config and run stages below this root instead of /.
    p.add_argument("--config-root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    p.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)


def register(sub: Any) -> None:
    inst = sub.add_parser("install", help="install onto a disk (erases it), e.g. from the "
                                          "live ISO", description=DESCRIPTION)
    _add_options(inst, with_config=True)
    inst.set_defaults(func=install_cmd)
    manual = sub.add_parser("manual-install", help="Kairos's spelling: install with CONFIG",
                            description=DESCRIPTION)
    manual.add_argument("cloud_config", metavar="CONFIG", help="cloud-config file or URL")
    _add_options(manual, with_config=False)
    manual.set_defaults(func=install_cmd)
    _register_interactive(sub)


def _register_interactive(sub: Any) -> None:
    p = sub.add_parser("interactive-install", help="ask for the disk, a user, how they log "
                       "in and the hostname, show the plan, then install",
                       description="On a terminal: asks for the disk, a user and a "
                       "password, SSH key or GitHub user, and the hostname (Enter takes the "
                       "default in brackets), shows the plan and installs after 'y'. The "
                       "answers are merged over the cloud-config and installed in /oem.")
    p.add_argument("--cloud-config", metavar="FILE|URL",
                   help="a cloud-config the answers are merged over (default: what this "
                        "system collects, e.g. the live medium's)")
    _add_source_and_after(p)
    p.add_argument("--config-root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    p.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    # Tests: offer only these disks (loop devices allowed), never the host's own.
    p.add_argument("--device-candidates", action="append", metavar="DEV",
                   help=argparse.SUPPRESS)
    p.set_defaults(func=interactive_cmd)


def grub_options(pairs: list[str] | None) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInput(f"--grub-option {pair!r} is not KEY=VALUE",
                           "e.g. --grub-option extra_cmdline=quiet")
        options[key] = value
    return options


def request(args: argparse.Namespace) -> Any:
    from kairos.agent.installer import Request
    return Request(
        device=args.device, cloud_config=args.cloud_config, source=args.source,
        image_dir=args.image, reboot=args.reboot, poweroff=args.poweroff, yes=args.yes,
        auto=args.auto, grub_options=grub_options(args.grub_option),
        grub_timeout=args.grub_timeout, auth_file=args.auth_file,
        insecure=args.allow_insecure_registries, root=args.config_root, scratch=args.scratch)


def install_cmd(args: argparse.Namespace) -> int:
    from kairos.agent.installer import after_install, run_install
    result = run_install(request(args))
    if result is None:  # --auto, and the config does not ask for an install
        return 0
    if args.json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        sys.stdout.write(f"Installed on {result.device}"
                         + (f"; {result.after} now" if result.after else "") + "\n")
    sys.stdout.flush()
    after_install(result)
    return 0


def interactive_cmd(args: argparse.Namespace) -> int:
    from kairos.agent.installer import Request, after_install
    from kairos.agent.interactive import run_interactive
    req = Request(cloud_config=args.cloud_config, source=args.source, image_dir=args.image,
                  reboot=args.reboot, poweroff=args.poweroff, root=args.config_root,
                  scratch=args.scratch)
    result = run_interactive(req, candidates=args.device_candidates or ())
    sys.stdout.write(f"Installed on {result.device}"
                     + (f"; {result.after} now" if result.after else "") + "\n")
    sys.stdout.flush()
    after_install(result)
    return 0
