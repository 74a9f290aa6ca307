"""`kairos upgrade list-releases` against a real registry (Debian's docker-registry on
127.0.0.1, see tests/registry.py): tags semver-sorted, pre-releases and other tags on demand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import kairos.cli
from kairos.agent.releases import list_releases
from kairos.errors import BadInput
from kairos.oci.media import MT_CONFIG, MT_LAYER_TAR, MT_MANIFEST, canonical_json
from kairos.oci.reference import parse_reference
from kairos.oci.registry import RegistryClient
from tests.registry import Registry, registry

pytestmark = pytest.mark.integration

REPO = "kairos/releases"
TAGS = ["v1.0.0", "v1.2.0", "v1.10.0", "v1.10.1-rc1", "v2.0.0-beta.2", "1.1.0",
        "v1.10.0-k3sv1.30.2-k3s1", "latest", "main"]


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if not Path("/usr/bin/docker-registry").exists():
        pytest.skip("docker-registry is not installed (scripts/setup installs it)")
    with registry(tmp_path_factory.mktemp("registry") / "anon") as r:
        # One tiny image under every tag, pushed with the registry API.
        client = RegistryClient(insecure={"127.0.0.1"}, progress=False, timeout=20)
        ref = parse_reference(f"{r.host}/{REPO}:x")
        config = canonical_json({"architecture": "amd64", "os": "linux",
                                 "rootfs": {"type": "layers", "diff_ids": []}})
        layer = b"not really a tar"
        manifest = canonical_json({
            "schemaVersion": 2, "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": client.push_blob(ref, config),
                       "size": len(config)},
            "layers": [{"mediaType": MT_LAYER_TAR, "digest": client.push_blob(ref, layer),
                        "size": len(layer)}]})
        for tag in TAGS:
            client.push_manifest(ref, tag, manifest, MT_MANIFEST)
        yield r


def test_newest_first_releases_only(reg: Registry) -> None:
    got = list_releases(f"{reg.host}/{REPO}", insecure=True)
    # A variant (k3s…) is a release too, listed before the plain tag of the same version.
    assert got == ["v1.10.0-k3sv1.30.2-k3s1", "v1.10.0", "v1.2.0", "1.1.0", "v1.0.0"]


def test_pre_releases_and_all_tags(reg: Registry) -> None:
    pre = list_releases(f"{reg.host}/{REPO}", pre=True, insecure=True)
    assert pre[:3] == ["v2.0.0-beta.2", "v1.10.1-rc1", "v1.10.0-k3sv1.30.2-k3s1"]
    every = list_releases(f"{reg.host}/{REPO}", pre=True, all_tags=True, insecure=True)
    assert every[-2:] == ["latest", "main"] and sorted(every) == sorted(TAGS)
    assert list_releases(f"{reg.host}/{REPO}", all_tags=True, insecure=True)[-3:] == [
        "v1.0.0", "latest", "main"]


def test_tag_digest_and_prefix_are_ignored(reg: Registry) -> None:
    want = list_releases(f"{reg.host}/{REPO}", insecure=True)
    assert list_releases(f"oci:{reg.host}/{REPO}:v1.0.0", insecure=True) == want
    assert list_releases(f"{reg.host}/{REPO}@sha256:" + "0" * 64, insecure=True) == want


def test_errors(reg: Registry) -> None:
    with pytest.raises(BadInput, match="no repository"):
        list_releases(f"{reg.host}/kairos/missing", insecure=True)
    # Not allowed insecure: TLS to a plain-HTTP registry fails, with the hint to allow it.
    with pytest.raises(BadInput, match=f"TLS with {reg.host} failed") as exc:
        list_releases(f"{reg.host}/{REPO}")
    assert "--allow-insecure-registries" in exc.value.hint


def cli(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr(kairos.cli, "VERB_MODULES", ("kairos.cli.upgrade_cmd",))
    return kairos.cli.main(list(argv))


def test_cli(reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> None:
    image = f"{reg.host}/{REPO}"
    assert cli(monkeypatch, "upgrade", "list-releases", "--image", image,
               "--allow-insecure-registries") == 0
    assert capsys.readouterr().out.splitlines() == list_releases(image, insecure=True)
    assert cli(monkeypatch, "upgrade", "list-releases", "--image", image, "--pre", "--json",
               "--allow-insecure-registries") == 0
    assert json.loads(capsys.readouterr().out)[:2] == ["v2.0.0-beta.2", "v1.10.1-rc1"]
    # The default image: the repository of the configured oci: upgrade source.
    (tmp_path / "oem").mkdir()
    (tmp_path / "oem/90_custom.yaml").write_text(
        f"#cloud-config\nupgrade:\n  source: oci:{image}:v1.0.0\n"
        "  allow-insecure-registries: true\n")
    assert cli(monkeypatch, "upgrade", "list-releases", "--config-root", str(tmp_path)) == 0
    assert capsys.readouterr().out.splitlines()[0] == "v1.10.0-k3sv1.30.2-k3s1"
    # Neither --image nor a registry source: exit 2 with a hint.
    (tmp_path / "oem/90_custom.yaml").write_text("#cloud-config\nhostname: x\n")
    assert cli(monkeypatch, "upgrade", "list-releases", "--config-root", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "no image to list releases of" in err and "--image" in err
