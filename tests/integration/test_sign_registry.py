"""`kairos sign` and signature verification against a real registry (Debian's docker-registry
on 127.0.0.1, images pushed by skopeo): signed → verifies; unsigned, signed with another key,
a signature naming another digest, tampered signature bytes → refused with one line, exit 2.
With a `cosign` binary on PATH, cosign's signatures verify here and ours verify with cosign."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kairos.errors import EXIT_BAD_INPUT, BadInput
from kairos.oci.image import ImageConfig, write_image
from kairos.oci.media import MT_CONFIG, MT_MANIFEST, canonical_json, parse_json, sha256_digest
from kairos.oci.reference import Reference, parse_reference
from kairos.oci.registry import RegistryClient
from kairos.oci.signature import (
    ANNOTATION_SIGNATURE,
    MT_SIMPLE_SIGNING,
    signature_tag,
    simple_signing_payload,
    verify_local,
    verify_manifest,
    verify_signature,
)
from kairos.run import require, run
from tests.helpers import kairos
from tests.registry import (
    Registry,
    add_index,
    htpasswd_auth,
    push,
    registry,
    token_server,
    write_auth_file,
)
from tests.unit.oci.ocitest_helpers import EPOCH, Entry, layer_blob, layer_tar

pytestmark = pytest.mark.integration

SYSTEM_CACHE = Path("/var/lib/containers")  # skopeo's blob-info cache for root; no switch


@pytest.fixture(scope="module", autouse=True)
def _tools() -> Iterator[None]:
    require("skopeo", "openssl")
    if not Path("/usr/bin/docker-registry").exists():
        pytest.skip("docker-registry is not installed (scripts/setup installs it)")
    had_cache = SYSTEM_CACHE.exists()
    yield
    if not had_cache:
        shutil.rmtree(SYSTEM_CACHE, ignore_errors=True)


@dataclass
class Images:
    layout: Path
    digests: dict[str, str]  # layout name -> manifest digest


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    tmp = tmp_path_factory.mktemp("images")
    layout = tmp / "layout"
    digests: dict[str, str] = {}
    for name, arch in [("v1", "amd64"), ("v2", "amd64"), ("v3", "amd64"), ("v4", "amd64"),
                       ("v5", "amd64"), ("arm", "arm64"), ("c1", "amd64"), ("c2", "amd64")]:
        layer = layer_blob(tmp, layer_tar([Entry("etc/", "dir"), Entry(
            "etc/os-release", data=f"ID=kairos\nVERSION={name}\n".encode())]), name=name)
        img = write_image([layer], layout, ref=name,
                          config=ImageConfig(created_epoch=EPOCH, architecture=arch))
        digests[name] = img.digest
    digests["multi"] = add_index(layout, ["v5", "arm"], "multi")
    return Images(layout, digests)


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory, images: Images) -> Iterator[Registry]:
    work = tmp_path_factory.mktemp("registry")
    with registry(work / "anon") as r:
        for name in ("v1", "v2", "v3", "v4", "c1", "c2"):
            push(work, f"oci:{images.layout}:{name}", f"{r.host}/kairos/os:{name}")
        push(work, f"oci:{images.layout}:multi", f"{r.host}/kairos/os:multi", all_images=True)
        yield r


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Key A made by `kairos sign --generate-key`, key B by openssl as a user would."""
    d = tmp_path_factory.mktemp("keys")
    proc = kairos("sign", "--generate-key", str(d / "a.key"), "--json")
    made = json.loads(proc.stdout)
    assert made == {"private_key": str(d / "a.key"), "public_key": str(d / "a.key.pub")}
    run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", d / "b.key"])
    run(["openssl", "ec", "-in", d / "b.key", "-pubout", "-out", d / "b.key.pub"])
    return {"a": d / "a.key", "a.pub": d / "a.key.pub", "b": d / "b.key", "b.pub": d / "b.key.pub"}


def client(**kw: object) -> RegistryClient:
    args: dict[str, object] = {"insecure": {"127.0.0.1"}, "progress": False, "timeout": 20, **kw}
    return RegistryClient(**args)  # type: ignore[arg-type]


def ref(host: str, tag: str, repo: str = "kairos/os") -> Reference:
    return parse_reference(f"{host}/{repo}:{tag}")


def sign_cli(image: str, key: Path, *extra: str, check: bool = True
             ) -> subprocess.CompletedProcess[str]:
    return kairos("sign", image, "--key", str(key), "--allow-insecure-registries", *extra,
                  check=check, timeout=120)


def assert_refused(proc: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit 2, one error line (plus its hint), no traceback."""
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("kairos: error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert all(line.startswith(("kairos: error:", "  hint:")) for line in lines), proc.stderr
    assert "Traceback" not in proc.stderr


def sig_manifest(c: RegistryClient, r: Reference, digest: str) -> dict[str, Any]:
    got = c.get_manifest_raw(r, signature_tag(digest))
    assert got is not None
    return parse_json(got[0], "sig")


# ------------------------------------------------------------------------------ tests

def test_sign_then_verify(reg: Registry, images: Images, keys: dict[str, Path]) -> None:
    image = f"{reg.host}/kairos/os:v1"
    digest = images.digests["v1"]
    result = json.loads(sign_cli(image, keys["a"], "--json").stdout)
    assert result["added"] is True and result["manifest_digest"] == digest
    assert result["signature_tag"] == signature_tag(digest)

    c = client()
    r = ref(reg.host, "v1")
    info = verify_signature(c, r, digest, keys["a.pub"].read_text())
    assert info.manifest_digest == digest and info.signatures_checked == 1

    # cosign's layout: an OCI manifest, one simple-signing layer annotated with the signature.
    doc = sig_manifest(c, r, digest)
    assert doc["mediaType"] == MT_MANIFEST
    assert doc["config"]["mediaType"] == MT_CONFIG
    assert len(doc["layers"]) == 1
    layer: dict[str, Any] = doc["layers"][0]
    assert layer["mediaType"] == MT_SIMPLE_SIGNING
    payload = simple_signing_payload(f"{reg.host}/kairos/os", digest)
    assert layer["digest"] == sha256_digest(payload) and layer["size"] == len(payload)
    verify_local(payload, layer["annotations"][ANNOTATION_SIGNATURE], keys["a.pub"].read_text())

    # The CLI's check, and a re-run that changes nothing.
    proc = kairos("sign", image, "--verify", "--key", str(keys["a.pub"]),
                  "--allow-insecure-registries")
    assert "Verified" in proc.stdout
    again = json.loads(sign_cli(image, keys["a"], "--json").stdout)
    assert again["added"] is False and again["signature_digest"] == result["signature_digest"]

    # A second key adds a signature beside the first; both verify.
    both = json.loads(sign_cli(f"{reg.host}/kairos/os@{digest}", keys["b"], "--json").stdout)
    assert both["added"] is True and both["signatures"] == 2
    for pub in ("a.pub", "b.pub"):
        assert verify_signature(c, r, digest, keys[pub].read_text()).signatures_checked == 2


def test_unsigned_image_is_refused(reg: Registry, images: Images, keys: dict[str, Path]) -> None:
    digest = images.digests["v2"]
    with pytest.raises(BadInput, match=f"no signature for .*looked for tag "
                                       f"{signature_tag(digest)}"):
        verify_signature(client(), ref(reg.host, "v2"), digest, keys["a.pub"].read_text())
    proc = kairos("sign", f"{reg.host}/kairos/os:v2", "--verify", "--key", str(keys["a.pub"]),
                  "--allow-insecure-registries", check=False)
    assert_refused(proc, "no signature for")


def test_signature_by_another_key_is_refused(reg: Registry, images: Images,
                                             keys: dict[str, Path]) -> None:
    digest = images.digests["v3"]
    sign_cli(f"{reg.host}/kairos/os:v3", keys["b"])
    with pytest.raises(BadInput, match="does not verify with the configured key"):
        verify_signature(client(), ref(reg.host, "v3"), digest, keys["a.pub"].read_text())
    proc = kairos("sign", f"{reg.host}/kairos/os:v3", "--verify", "--key", str(keys["a.pub"]),
                  "--allow-insecure-registries", check=False)
    assert_refused(proc, "does not verify with the configured key")


def test_signature_for_another_digest_and_tampered_bytes_are_refused(
        reg: Registry, images: Images, keys: dict[str, Path]) -> None:
    c = client()
    sign_cli(f"{reg.host}/kairos/os:v1", keys["a"])
    v1, v4 = images.digests["v1"], images.digests["v4"]
    r = ref(reg.host, "v4")
    # v1's (valid) signature manifest copied to v4's signature tag: the payload names v1.
    raw, _, _ = c.get_manifest_raw(r, signature_tag(v1))  # type: ignore[misc]
    c.push_manifest(r, signature_tag(v4), raw, MT_MANIFEST)
    with pytest.raises(BadInput, match="signature is for another image digest"):
        verify_signature(c, r, v4, keys["a.pub"].read_text())
    proc = kairos("sign", f"{reg.host}/kairos/os:v4", "--verify", "--key", str(keys["a.pub"]),
                  "--allow-insecure-registries", check=False)
    assert_refused(proc, "signature is for another image digest")

    # A payload for v4 with signature bytes that were flipped: refused, not crashed.
    payload = simple_signing_payload(r.name, v4)
    good = parse_json(raw, "sig")["layers"][0]["annotations"][ANNOTATION_SIGNATURE]
    sig = bytearray(base64.b64decode(good))
    sig[-1] ^= 0x01
    config = canonical_json({"rootfs": {"type": "layers", "diff_ids": []}})
    layer = {"mediaType": MT_SIMPLE_SIGNING, "digest": c.push_blob(r, payload),
             "size": len(payload),
             "annotations": {ANNOTATION_SIGNATURE: base64.b64encode(bytes(sig)).decode()}}
    c.push_manifest(r, signature_tag(v4), canonical_json({
        "schemaVersion": 2, "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": c.push_blob(r, config),
                   "size": len(config)},
        "layers": [layer]}), MT_MANIFEST)
    with pytest.raises(BadInput, match="does not verify with the configured key"):
        verify_signature(c, r, v4, keys["a.pub"].read_text())


def test_multi_platform_tag_is_signed_at_the_index(reg: Registry, images: Images,
                                                   keys: dict[str, Path]) -> None:
    result = json.loads(sign_cli(f"{reg.host}/kairos/os:multi", keys["a"], "--json").stdout)
    assert result["manifest_digest"] == images.digests["multi"]  # what cosign signs too
    c = client()
    manifest = c.resolve(ref(reg.host, "multi"), "linux/amd64")
    assert manifest.digest == images.digests["v5"]
    info = verify_manifest(c, manifest, keys["a.pub"].read_text())
    assert info.manifest_digest == images.digests["multi"]


def test_cli_refusals(reg: Registry, keys: dict[str, Path], tmp_path: Path) -> None:
    cosign_key = tmp_path / "cosign.key"
    cosign_key.write_text("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJrZGYiOnt9fQ==\n"
                          "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    assert_refused(sign_cli(f"{reg.host}/kairos/os:v2", cosign_key, check=False),
                   "cosign encrypted key")
    assert_refused(sign_cli(f"{reg.host}/kairos/os:nope", keys["a"], check=False),
                   "no image")
    assert_refused(kairos("sign", f"{reg.host}/kairos/os:v2", check=False), "no key given")
    assert_refused(kairos("sign", "--generate-key", str(keys["a"]), check=False),
                   "already exists")
    # Nothing was pushed for the refused runs (v2 stays unsigned).
    v2 = client().resolve(ref(reg.host, "v2")).digest
    assert client().get_manifest_raw(ref(reg.host, "v2"), signature_tag(v2)) is None


def test_sign_with_basic_and_token_auth(images: Images, keys: dict[str, Path],
                                        tmp_path: Path) -> None:
    with registry(tmp_path / "basic", auth=htpasswd_auth(tmp_path, {"al": "pw"})) as r:
        push(tmp_path, f"oci:{images.layout}:v1", f"{r.host}/private/os:v1", creds="al:pw")
        auth = write_auth_file(tmp_path / "basic.json", r.host, "al", "pw")
        sign_cli(f"{r.host}/private/os:v1", keys["a"], "--auth-file", str(auth))
        verify_signature(client(auth_file=auth), ref(r.host, "v1", "private/os"),
                         images.digests["v1"], keys["a.pub"].read_text())
        assert_refused(sign_cli(f"{r.host}/private/os:v1", keys["a"], check=False),
                       "requires credentials")

    with token_server(tmp_path / "ts", {"bob": "t0ken"}) as ts, \
            registry(tmp_path / "tok", auth=ts.registry_auth()) as r:
        push(tmp_path, f"oci:{images.layout}:v1", f"{r.host}/private/os:v1", creds="bob:t0ken")
        auth = write_auth_file(tmp_path / "tok.json", r.host, "bob", "t0ken")
        ts.requests.clear()
        sign_cli(f"{r.host}/private/os:v1", keys["a"], "--auth-file", str(auth))
        scopes = {q["scope"] for q in ts.requests}
        assert scopes == {"repository:private/os:pull", "repository:private/os:pull,push"}
        verify_signature(client(auth_file=auth), ref(r.host, "v1", "private/os"),
                         images.digests["v1"], keys["a.pub"].read_text())


# ------------------------------------------------------------------------------ cosign

def _cosign_flags(cosign: str, verb: str, env: dict[str, str]) -> list[str]:
    """Flags that make cosign v2 and v3 use the key-based `.sig` tag layout, no Rekor, HTTP."""
    text = subprocess.run([cosign, verb, "--help"], capture_output=True, text=True,
                          env=env).stdout
    flags = ["--allow-insecure-registry"]
    wanted = {"sign": ["--tlog-upload=false", "--new-bundle-format=false",
                       "--use-signing-config=false", "--allow-http-registry", "--yes"],
              "verify": ["--insecure-ignore-tlog=true", "--new-bundle-format=false",
                         "--allow-http-registry"]}[verb]
    return flags + [f for f in wanted if f.split("=")[0] in text]


@pytest.mark.skipif(shutil.which("cosign") is None,
                    reason="no cosign binary: Debian 12, PyPI and npm ship none (see the report)")
def test_cosign_interop(reg: Registry, images: Images, keys: dict[str, Path],
                        tmp_path: Path) -> None:
    cosign = shutil.which("cosign")
    assert cosign is not None
    env = dict(os.environ, COSIGN_PASSWORD="", TUF_ROOT=str(tmp_path / "tuf"),
               HOME=str(tmp_path))
    subprocess.run([cosign, "generate-key-pair"], cwd=tmp_path, env=env, check=True,
                   capture_output=True)
    c = client()
    # cosign signs, we verify.
    c1 = images.digests["c1"]
    subprocess.run([cosign, "sign", *_cosign_flags(cosign, "sign", env), "--key",
                    str(tmp_path / "cosign.key"), f"{reg.host}/kairos/os@{c1}"],
                   env=env, check=True, capture_output=True, timeout=120)
    verify_signature(c, ref(reg.host, "c1"), c1, (tmp_path / "cosign.pub").read_text())
    # We sign, cosign verifies.
    c2 = images.digests["c2"]
    sign_cli(f"{reg.host}/kairos/os:c2", keys["b"])
    subprocess.run([cosign, "verify", *_cosign_flags(cosign, "verify", env), "--key",
                    str(keys["b.pub"]), f"{reg.host}/kairos/os@{c2}"],
                   env=env, check=True, capture_output=True, timeout=120)
