"""`kairos upgrade list-releases` without a registry: which repository, and from where."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kairos.agent.releases import repository
from kairos.cli.releases_cmd import add_list_releases, default_image, list_releases_cmd
from kairos.config.collect import MergedConfig
from kairos.errors import EXIT_BAD_INPUT, BadInput


@pytest.mark.parametrize(("image", "name"), [
    ("registry.example/kairos/os", "registry.example/kairos/os"),
    ("registry.example/kairos/os:v1.2.3", "registry.example/kairos/os"),
    ("registry.example:5000/kairos/os@sha256:" + "a" * 64, "registry.example:5000/kairos/os"),
    ("oci:registry.example/kairos/os:v1", "registry.example/kairos/os"),
    ("oci://registry.example/kairos/os:v1", "registry.example/kairos/os"),
    ("docker:localhost/os", "localhost/os"),
])
def test_repository_ignores_tag_digest_and_prefix(image: str, name: str) -> None:
    assert repository(image).name == name


@pytest.mark.parametrize("image", ["", "oci:", "kairos/os"])
def test_repository_refuses_what_names_no_registry(image: str) -> None:
    with pytest.raises(BadInput):
        repository(image)


@pytest.mark.parametrize(("data", "image"), [
    ({"upgrade": {"source": "oci:r.example/a/b:v1"}}, "oci:r.example/a/b:v1"),
    ({"upgrade": {"system": {"source": "docker:r.example/c:v2"}}}, "docker:r.example/c:v2"),
    ({"upgrade": {"system": {"uri": "r.example/d:v3"}}}, "r.example/d:v3"),
    # upgrade.source wins, as it does for `kairos upgrade`
    ({"upgrade": {"source": "oci:r.example/x", "system": {"source": "oci:r.example/y"}}},
     "oci:r.example/x"),
])
def test_default_image_from_config(data: dict, image: str) -> None:
    assert default_image(MergedConfig(data=data)) == image


@pytest.mark.parametrize(("data", "message"), [
    ({}, "no image to list releases of"),
    ({"upgrade": {"source": "file:/mnt/rootfs.squashfs"}}, "is file:/mnt/rootfs.squashfs, not a "
                                                           "registry image"),
])
def test_no_registry_image_is_exit_2_with_a_hint(data: dict, message: str) -> None:
    with pytest.raises(BadInput, match=message) as exc:
        default_image(MergedConfig(data=data))
    assert exc.value.exit_code == EXIT_BAD_INPUT
    assert "--image" in exc.value.hint and "upgrade.source" in exc.value.hint


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kairos")
    upgrade = parser.add_subparsers(dest="verb").add_parser("upgrade")
    upgrade.add_argument("--json", action="store_true")  # the upgrade verb's own flags
    upgrade.add_argument("--auth-file", type=Path)
    upgrade.add_argument("--allow-insecure-registries", action="store_true", default=None)
    add_list_releases(upgrade.add_subparsers(dest="upgrade_action"))
    return parser.parse_args(["upgrade", *argv])


def test_options_before_or_after_the_action() -> None:
    args = parse("list-releases", "--image", "r.example/os", "--pre", "--all", "--json",
                 "--auth-file", "/a.json", "--allow-insecure-registries")
    assert args.func is list_releases_cmd
    assert (args.releases_image, args.releases_pre, args.releases_all, args.releases_json,
            args.releases_auth_file, args.releases_insecure) == (
        "r.example/os", True, True, True, Path("/a.json"), True)
    args = parse("--json", "--auth-file", "/b.json", "list-releases")
    assert (args.json, args.auth_file, args.releases_json) == (True, Path("/b.json"), False)


def test_cli_without_an_image_fails_before_any_network(tmp_path: Path) -> None:
    (tmp_path / "oem").mkdir()
    (tmp_path / "oem/90_custom.yaml").write_text("#cloud-config\nhostname: x\n")
    args = parse("list-releases", "--config-root", str(tmp_path))
    with pytest.raises(BadInput, match="no image to list releases of"):
        args.func(args)
