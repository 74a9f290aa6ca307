"""cosign-format signatures: payload bytes, DER and base64 handling, keys and signatures made
by the openssl command, and verify_signature's decisions against an in-memory registry."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kairos.errors import BadInput
from kairos.oci.media import Descriptor, canonical_json, sha256_digest
from kairos.oci.reference import parse_reference
from kairos.oci.signature import (
    ANNOTATION_SIGNATURE,
    MT_SIMPLE_SIGNING,
    check_payload,
    generate_key,
    is_der_ecdsa_signature,
    key_algorithm,
    parse_payload,
    sign_payload,
    signature_tag,
    simple_signing_payload,
    verify_local,
    verify_manifest,
    verify_signature,
)
from kairos.run import require

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
REF = parse_reference("reg.example:5000/kairos/os:v1")


@pytest.fixture(scope="module", autouse=True)
def _openssl() -> None:
    require("openssl")


def openssl(*args: str, input: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], check=True, capture_output=True,
                          input=input).stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Keys made by openssl the ways users make them: SEC1 (ecparam) and PKCS#8 (genpkey)."""
    d = tmp_path_factory.mktemp("keys")
    out = {"sec1": d / "sec1.pem", "pkcs8": d / "pkcs8.pem", "p384": d / "p384.pem",
           "ed25519": d / "ed.pem"}
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(out["sec1"]))
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", str(out["pkcs8"]))
    openssl("ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", str(out["p384"]))
    openssl("genpkey", "-algorithm", "ed25519", "-out", str(out["ed25519"]))
    for name in list(out):
        pub = d / f"{name}.pub"
        openssl("pkey", "-in", str(out[name]), "-pubout", "-out", str(pub))
        out[f"{name}.pub"] = pub
    return out


def pem(keys: dict[str, Path], name: str) -> str:
    return keys[name].read_text()


def openssl_sign(key: Path, payload: bytes, tmp: Path) -> str:
    """A signature made by openssl alone (not by our code): base64 of DER ECDSA."""
    data = tmp / "payload"
    data.write_bytes(payload)
    sig = openssl("dgst", "-sha256", "-sign", str(key), str(data))
    return base64.b64encode(sig).decode()


# ------------------------------------------------------------------------------ payloads

def test_payload_is_byte_for_byte_what_cosign_writes() -> None:
    # cosign's own test (pkg/cosign/obsolete_test.go) pins these exact bytes.
    digest = "sha256:4aa3054270f7a70b4528f2064ee90961788e1e1518703592ae4463de3b889dec"
    assert simple_signing_payload("index.docker.io/namespace/image", digest) == (
        b'{"critical":{"identity":{"docker-reference":"index.docker.io/namespace/image"},'
        b'"image":{"docker-manifest-digest":"sha256:4aa3054270f7a70b4528f2064ee90961788e1e1518'
        b'703592ae4463de3b889dec"},"type":"cosign container image signature"},"optional":null}')


def test_payload_refuses_bad_input() -> None:
    with pytest.raises(BadInput, match="invalid manifest digest"):
        simple_signing_payload("reg/x", "sha256:abc")
    with pytest.raises(BadInput, match="invalid docker reference"):
        simple_signing_payload("", DIGEST)


def test_signature_tag() -> None:
    assert signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"
    with pytest.raises(BadInput):
        signature_tag("sha256:../../x")


def test_parse_payload_reads_cosign_and_containers_spellings() -> None:
    info = parse_payload(simple_signing_payload("reg/kairos/os", DIGEST))
    assert (info.docker_reference, info.manifest_digest, info.optional) == \
        ("reg/kairos/os", DIGEST, None)
    # Go's encoding/json matches field names case-insensitively: cosign accepts this spelling
    # (the one in its SIGNATURE_SPEC.md example), and so do we.
    doc = {"critical": {"identity": {"docker-reference": "r/x"},
                        "image": {"Docker-manifest-digest": DIGEST},
                        "type": "cosign container image signature"},
           "optional": {"creator": "atomic"}}
    info = parse_payload(json.dumps(doc, indent=2).encode())
    assert info.manifest_digest == DIGEST and info.optional == {"creator": "atomic"}


@pytest.mark.parametrize("payload, message", [
    (b"not json", "not valid JSON"),
    (b"[]", "not a JSON object"),
    (b'{"optional":{}}', "no 'critical' section"),
    (b'{"critical":{"type":"atomic container signature","image":{"docker-manifest-digest":"x"}}}',
     "of type 'atomic container signature'"),
    (b'{"critical":{"type":"cosign container image signature","image":{}}}', "names no image"),
])
def test_parse_payload_refuses_other_documents(payload: bytes, message: str) -> None:
    with pytest.raises(BadInput, match=message) as exc:
        parse_payload(payload)
    assert "\n" not in str(exc.value)


def test_check_payload_refuses_another_digest() -> None:
    payload = simple_signing_payload("reg/kairos/os", OTHER)
    assert check_payload(payload, OTHER).manifest_digest == OTHER
    with pytest.raises(BadInput, match="signature is for another image digest"):
        check_payload(payload, DIGEST)


# ------------------------------------------------------------------------------ DER

def der_of(pub: Path) -> bytes:
    return openssl("pkey", "-pubin", "-in", str(pub), "-outform", "DER")


def test_key_algorithm_names_what_openssl_made(keys: dict[str, Path], tmp_path: Path) -> None:
    assert key_algorithm(der_of(keys["sec1.pub"])) == "P-256"
    assert key_algorithm(der_of(keys["pkcs8.pub"])) == "P-256"
    assert key_algorithm(der_of(keys["p384.pub"])) == "EC P-384"
    assert key_algorithm(der_of(keys["ed25519.pub"])) == "Ed25519"
    assert key_algorithm(b"") == "not a public key"
    assert key_algorithm(b"\x30\x05\x02\x01\x01") == "not a public key"
    assert key_algorithm(der_of(keys["sec1.pub"])[:-1]) == "not a public key"


def test_der_signature_shape(keys: dict[str, Path], tmp_path: Path) -> None:
    sig = base64.b64decode(openssl_sign(keys["sec1"], b"x", tmp_path))
    assert is_der_ecdsa_signature(sig)
    assert not is_der_ecdsa_signature(sig + b"\x00")  # trailing bytes
    assert not is_der_ecdsa_signature(sig[:-1])  # truncated
    assert not is_der_ecdsa_signature(bytes(64))  # raw r||s, as some tools write it
    assert not is_der_ecdsa_signature(b"")


# ------------------------------------------------------------------------------ local

@pytest.mark.parametrize("name", ["sec1", "pkcs8"])
def test_openssl_signature_verifies(keys: dict[str, Path], tmp_path: Path, name: str) -> None:
    payload = simple_signing_payload("reg/kairos/os", DIGEST)
    verify_local(payload, openssl_sign(keys[name], payload, tmp_path), pem(keys, f"{name}.pub"))


def test_our_signature_verifies_with_openssl(keys: dict[str, Path], tmp_path: Path) -> None:
    payload = simple_signing_payload("reg/kairos/os", DIGEST)
    sig = sign_payload(payload, keys["pkcs8"])
    (tmp_path / "p").write_bytes(payload)
    (tmp_path / "s").write_bytes(base64.b64decode(sig))
    out = openssl("dgst", "-sha256", "-verify", str(keys["pkcs8.pub"]), "-signature",
                  str(tmp_path / "s"), str(tmp_path / "p"))
    assert b"Verified OK" in out
    verify_local(payload, sig, pem(keys, "pkcs8.pub"))


def test_bad_signatures_are_refused(keys: dict[str, Path], tmp_path: Path) -> None:
    payload = simple_signing_payload("reg/kairos/os", DIGEST)
    good = openssl_sign(keys["sec1"], payload, tmp_path)
    pub = pem(keys, "sec1.pub")
    cases = {
        "does not verify": [(payload + b" ", good),  # another payload
                            (payload, openssl_sign(keys["pkcs8"], payload, tmp_path))],
        "not valid base64": [(payload, "%%%"), (payload, good[:-2] + "@@")],
        "not an ASN.1 DER": [(payload, base64.b64encode(bytes(64)).decode())],
    }
    for message, pairs in cases.items():
        for data, sig in pairs:
            with pytest.raises(BadInput, match=message) as exc:
                verify_local(data, sig, pub)
            assert "\n" not in exc.value.message


def test_public_key_checks(keys: dict[str, Path], tmp_path: Path) -> None:
    payload = b"x"
    sig = openssl_sign(keys["sec1"], payload, tmp_path)
    # YAML-indented PEM text is fine.
    verify_local(payload, sig, "\n".join("    " + line for line in
                                         pem(keys, "sec1.pub").splitlines()))
    for text, message in [
        (pem(keys, "sec1"), "is a private key"),
        ("hello", "not a PEM public key"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "cannot be read"),
        (pem(keys, "p384.pub"), "is EC P-384, not ECDSA P-256"),
        (pem(keys, "ed25519.pub"), "is Ed25519, not ECDSA P-256"),
    ]:
        with pytest.raises(BadInput, match=message) as exc:
            verify_local(payload, sig, text)
        assert "\n" not in exc.value.message
        assert "PRIVATE" not in str(exc.value)  # no key material in any message


def test_signing_refuses_keys_it_cannot_use(keys: dict[str, Path], tmp_path: Path) -> None:
    cosign_key = tmp_path / "cosign.key"
    cosign_key.write_text("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJrZGYiOnt9fQ==\n"
                          "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    locked = tmp_path / "locked.pem"
    openssl("pkey", "-in", str(keys["pkcs8"]), "-aes256", "-passout", "pass:secret",
            "-out", str(locked))
    for path, message in [
        (cosign_key, "cosign encrypted key"),
        (locked, "passphrase-protected"),
        (keys["pkcs8.pub"], "is a public key"),
        (keys["p384"], "EC P-384 key, not ECDSA P-256"),
        (tmp_path / "missing.pem", "does not exist"),
        (tmp_path, "is a directory"),
    ]:
        with pytest.raises(BadInput, match=message):
            sign_payload(b"x", path)


def test_generate_key(tmp_path: Path) -> None:
    priv, pub = generate_key(tmp_path / "kairos.key")
    assert pub == tmp_path / "kairos.key.pub"
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    assert priv.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    sig = sign_payload(b"payload", priv)
    verify_local(b"payload", sig, pub.read_text())
    with pytest.raises(BadInput, match="already exists"):
        generate_key(priv)
    with pytest.raises(BadInput, match="does not exist"):
        generate_key(tmp_path / "nodir" / "k")


# ------------------------------------------------------------------------------ registry logic

class FakeRegistry:
    """get_manifest_raw and get_blob_bytes over dicts, like RegistryClient's."""

    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}

    def get_manifest_raw(self, ref: Any, reference: str) -> tuple[bytes, str, str] | None:
        raw = self.manifests.get(reference)
        return None if raw is None else (raw, "", sha256_digest(raw))

    def get_blob_bytes(self, ref: Any, desc: Descriptor, limit: int = 0) -> bytes:
        return self.blobs[desc.digest]

    def put_signatures(self, digest: str, sigs: list[tuple[bytes, str]],
                       media_type: str = MT_SIMPLE_SIGNING) -> None:
        layers = []
        for payload, sig in sigs:
            self.blobs[sha256_digest(payload)] = payload
            layers.append(Descriptor(media_type, sha256_digest(payload), len(payload),
                                     annotations={ANNOTATION_SIGNATURE: sig}).to_json())
        self.manifests[signature_tag(digest)] = canonical_json(
            {"schemaVersion": 2, "config": {}, "layers": layers})


def test_verify_signature_decisions(keys: dict[str, Path], tmp_path: Path) -> None:
    reg = FakeRegistry()
    pub = pem(keys, "sec1.pub")
    client: Any = reg
    with pytest.raises(BadInput, match=r"no signature for .* \(looked for tag sha256-abab"):
        verify_signature(client, REF, DIGEST, pub)

    payload = simple_signing_payload(REF.name, DIGEST)
    reg.put_signatures(DIGEST, [(payload, openssl_sign(keys["sec1"], payload, tmp_path))],
                       media_type="application/octet-stream")
    with pytest.raises(BadInput, match="holds no cosign signatures"):
        verify_signature(client, REF, DIGEST, pub)

    other_key = (payload, openssl_sign(keys["pkcs8"], payload, tmp_path))
    reg.put_signatures(DIGEST, [other_key])
    with pytest.raises(BadInput, match="does not verify with the configured key") as exc:
        verify_signature(client, REF, DIGEST, pub)
    assert "(1 signature checked)" in exc.value.message
    reg.put_signatures(DIGEST, [other_key, (payload, "bm90IGEgc2ln"), (payload, "%")])
    with pytest.raises(BadInput, match="does not verify with the configured key") as exc:
        verify_signature(client, REF, DIGEST, pub)
    assert exc.value.message.endswith(
        "(3 signatures checked; 1 of them: the signature is not an ASN.1 DER ECDSA signature"
        "; 1 of them: the signature is not valid base64)")

    moved = simple_signing_payload(REF.name, OTHER)
    reg.put_signatures(DIGEST, [(moved, openssl_sign(keys["sec1"], moved, tmp_path))])
    with pytest.raises(BadInput, match="signature is for another image digest"):
        verify_signature(client, REF, DIGEST, pub)

    # Several signatures: one good one among others is enough (as in cosign).
    good = (payload, openssl_sign(keys["sec1"], payload, tmp_path))
    reg.put_signatures(DIGEST, [other_key, (payload, "bm90IGEgc2ln"), good])
    info = verify_signature(client, REF, DIGEST, pub)
    assert info.manifest_digest == DIGEST
    assert info.signature_tag == signature_tag(DIGEST)
    assert info.payload_digest == sha256_digest(payload)
    assert info.docker_reference == REF.name
    assert info.key_id == sha256_digest(der_of(keys["sec1.pub"]))
    assert info.signatures_checked == 3


def test_verify_manifest_accepts_an_index_signature(keys: dict[str, Path],
                                                    tmp_path: Path) -> None:
    reg = FakeRegistry()
    payload = simple_signing_payload(REF.name, OTHER)
    reg.put_signatures(OTHER, [(payload, openssl_sign(keys["sec1"], payload, tmp_path))])

    class M:
        ref = REF
        digest = DIGEST
        index_digest = OTHER

    client: Any = reg
    assert verify_manifest(client, M(), pem(keys, "sec1.pub")).manifest_digest == OTHER
    M.index_digest = None  # type: ignore[assignment]
    with pytest.raises(BadInput, match="no signature for"):
        verify_manifest(client, M(), pem(keys, "sec1.pub"))
