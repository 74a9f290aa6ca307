"""`kairos upgrade list-releases [--image REF] [--pre] [--all] [--json]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kairos.errors import BadInput

# Where the default image comes from, first found wins (as `kairos upgrade` reads its source).
SOURCE_KEYS = ("upgrade.source", "upgrade.system.source", "upgrade.system.uri")
HINT = "give --image REGISTRY/REPOSITORY, or set upgrade.source: oci:REGISTRY/REPOSITORY:TAG"


def add_list_releases(actions: Any) -> None:
    """Add `list-releases` to the `upgrade` verb's sub-actions. Its options have their own
    destinations (the `upgrade` verb has --json, --auth-file … too): given before or after
    `list-releases`, they work either way."""
    p = actions.add_parser(
        "list-releases", help="list the versions the registry has for this device's image",
        description="The registry's tags for the image (default: the repository of the "
                    "configured oci: upgrade source), semver-sorted, newest first. "
                    "Pre-releases (rc, beta, …) only with --pre; tags that are not versions "
                    "(latest, main) only with --all.")
    p.add_argument("--image", metavar="REF", dest="releases_image",
                   help="the repository, e.g. registry.example/kairos/os (a tag is ignored)")
    p.add_argument("--pre", action="store_true", dest="releases_pre",
                   help="include pre-releases")
    p.add_argument("--all", action="store_true", dest="releases_all",
                   help="include tags that are not versions")
    p.add_argument("--json", action="store_true", dest="releases_json",
                   help="print a JSON list")
    p.add_argument("--auth-file", type=Path, dest="releases_auth_file",
                   help="registry credentials (Docker config.json); default "
                        "$REGISTRY_AUTH_FILE, then /root/.docker/config.json")
    p.add_argument("--allow-insecure-registries", action="store_true", default=None,
                   dest="releases_insecure",
                   help="allow plain HTTP (and unverified TLS) for the image's registry")
    # Tests: read the cloud-config of another root.
    p.add_argument("--config-root", type=Path, dest="releases_config_root",
                   help=argparse.SUPPRESS)
    p.set_defaults(func=list_releases_cmd)


def _config(args: argparse.Namespace) -> Any:
    from kairos.config.collect import collect
    root = args.releases_config_root or getattr(args, "config_root", None) or Path("/")
    return collect(root, fetch=False)


def default_image(cfg: Any) -> str:
    """The repository of the configured upgrade source when it is an oci: one."""
    for key in SOURCE_KEYS:
        value = cfg.get(key)
        if not value:
            continue
        text = str(value).strip()
        kind, sep, _rest = text.partition(":")
        if sep and kind in ("oci", "docker", "container"):
            return text
        if sep and kind in ("dir", "file", "ocifile"):
            raise BadInput(f"{key} is {text}, not a registry image", HINT)
        return text  # a bare reference, as Kairos's `upgrade.system.uri` may hold
    raise BadInput("no image to list releases of", HINT)


def list_releases_cmd(args: argparse.Namespace) -> int:
    from kairos.agent.releases import list_releases
    image = args.releases_image
    cfg = None
    if not image:
        cfg = _config(args)
        image = default_image(cfg)
    insecure = args.releases_insecure
    if insecure is None:
        insecure = getattr(args, "allow_insecure_registries", None)
    if insecure is None:
        cfg = cfg if cfg is not None else _config(args)
        insecure = cfg.get("upgrade.allow-insecure-registries", False)
    releases = list_releases(
        image, pre=args.releases_pre, all_tags=args.releases_all,
        auth_file=args.releases_auth_file or getattr(args, "auth_file", None),
        insecure=bool(insecure))
    if args.releases_json or getattr(args, "json", False):
        sys.stdout.write(json.dumps(releases) + "\n")
    else:
        sys.stdout.write("".join(f"{tag}\n" for tag in releases))
    return 0
