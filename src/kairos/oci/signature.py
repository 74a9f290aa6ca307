"""Image signatures in cosign's format: made by `cosign sign --key` or `kairos sign`, checked
before an upgrade writes anything.

The layout (cosign's specs/SIGNATURE_SPEC.md, key-based signatures): the signatures of the
manifest `sha256:<hex>` live in the same repository under the tag `sha256-<hex>.sig`, an OCI
image manifest whose layers are simple-signing payloads
(`application/vnd.dev.cosign.simplesigning.v1+json`, the JSON document
`{"critical":{"identity":{"docker-reference":…},"image":{"docker-manifest-digest":…},
"type":"cosign container image signature"},"optional":…}`), each layer annotated
`dev.cosignproject.cosign/signature` = base64 of the ASN.1 DER ECDSA P-256 signature over
sha256(payload). Several signatures may sit in one manifest; one that verifies with the key
and names the image's digest is enough (as in cosign). `critical.identity.docker-reference`
is informational: the spec says verifiers ignore it.

The device has no Python crypto library: keys are checked and signatures made and verified
with the `openssl` command (argv lists through kairos.run), key and signature files live in a
private temporary directory (0700, files 0600), and no key material is ever logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kairos.errors import BadInput
from kairos.oci.media import (
    MT_CONFIG,
    MT_MANIFEST,
    Descriptor,
    canonical_json,
    digest_hex,
    is_digest,
    parse_json,
    sha256_digest,
)
from kairos.oci.reference import Reference
from kairos.oci.registry import RegistryClient
from kairos.run import run
from kairos.safefs import write_file_atomic

log = logging.getLogger("kairos.oci.signature")

MT_SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
ANNOTATION_SIGNATURE = "dev.cosignproject.cosign/signature"
COSIGN_SIGNATURE_TYPE = "cosign container image signature"
SIGNATURE_TAG_SUFFIX = ".sig"
MAX_PAYLOAD_BYTES = 1 << 20  # a simple-signing payload is a few hundred bytes
MAX_SIGNATURES = 100  # layers of one .sig manifest that are looked at
NOT_VERIFIED = "the signature does not verify with the configured key"

HINT_SIGN = ("sign it with `kairos sign REF --key KEY.pem` or `cosign sign --key cosign.key "
             "REF`, or turn upgrade.verify off")
HINT_KEY = "configure the public key (PEM, -----BEGIN PUBLIC KEY-----) that matches the signer"
HINT_GENKEY = "make one with `kairos sign --generate-key PATH` or `openssl genpkey -algorithm EC " \
              "-pkeyopt ec_paramgen_curve:P-256 -out key.pem`"

# DER encodings of the object identifiers we accept: id-ecPublicKey on prime256v1 (P-256).
_OID_EC_PUBLIC_KEY = bytes.fromhex("2a8648ce3d0201")
_OID_PRIME256V1 = bytes.fromhex("2a8648ce3d030107")
_OID_NAMES = {
    bytes.fromhex("2a864886f70d010101"): "RSA",
    bytes.fromhex("2b6570"): "Ed25519",
    bytes.fromhex("2b6571"): "Ed448",
    bytes.fromhex("2b81040022"): "P-384",
    bytes.fromhex("2b81040023"): "P-521",
    bytes.fromhex("2b8104000a"): "secp256k1",
}


# ---------------------------------------------------------------------------- data

@dataclass(frozen=True)
class SignatureInfo:
    """A signature that verified: which image, which signature artifact, which key."""

    image: str  # the reference as given
    manifest_digest: str
    signature_tag: str  # sha256-<hex>.sig
    signature_digest: str  # digest of the .sig manifest
    payload_digest: str
    docker_reference: str  # what the signer claimed (informational)
    key_id: str  # sha256:<hex> of the public key's DER SubjectPublicKeyInfo
    signatures_checked: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SignResult:
    image: str
    manifest_digest: str
    signature_tag: str
    signature_digest: str
    payload_digest: str
    key_id: str
    added: bool  # False: a signature with this key was already there (nothing pushed)
    signatures: int  # layers of the .sig manifest now

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SimpleSigning:
    """The parts of a simple-signing payload a verifier uses."""

    docker_reference: str
    manifest_digest: str
    optional: object


# ---------------------------------------------------------------------------- payloads

def signature_tag(manifest_digest: str) -> str:
    """cosign's tag for the signatures of `manifest_digest`: sha256-<hex>.sig."""
    return f"sha256-{digest_hex(manifest_digest)}{SIGNATURE_TAG_SUFFIX}"


def simple_signing_payload(docker_reference: str, manifest_digest: str) -> bytes:
    """The payload cosign signs, byte for byte as cosign writes it (Go's encoding/json: fields
    in declaration order, no spaces, no optional claims as `null`)."""
    if not is_digest(manifest_digest):
        raise BadInput(f"invalid manifest digest {manifest_digest!r}",
                       "a digest is sha256: and 64 lowercase hex digits")
    if not docker_reference or any(c.isspace() for c in docker_reference):
        raise BadInput(f"invalid docker reference {docker_reference!r}",
                       "give REGISTRY/REPOSITORY, e.g. registry.example.com/kairos/os")
    doc = {"critical": {"identity": {"docker-reference": docker_reference},
                        "image": {"docker-manifest-digest": manifest_digest},
                        "type": COSIGN_SIGNATURE_TYPE},
           "optional": None}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _field(obj: dict[str, Any], name: str) -> Any:
    """obj[name], matched the way Go's encoding/json matches: exact, else case-insensitive."""
    if name in obj:
        return obj[name]
    for key, value in obj.items():
        if key.casefold() == name.casefold():
            return value
    return None


def parse_payload(payload: bytes) -> SimpleSigning:
    """Read a simple-signing payload; anything else is refused with one line."""
    doc = parse_json(payload, "the signed payload")
    critical = _field(doc, "critical")
    if not isinstance(critical, dict):
        raise BadInput("the signed payload has no 'critical' section",
                       "it is not a cosign image signature; sign the image again")
    kind = _field(critical, "type")
    if kind != COSIGN_SIGNATURE_TYPE:
        raise BadInput(f"the signed payload is of type {kind!r}, not {COSIGN_SIGNATURE_TYPE!r}",
                       "it is not a cosign image signature; sign the image again")
    image = _field(critical, "image")
    digest = _field(image, "docker-manifest-digest") if isinstance(image, dict) else None
    if not isinstance(digest, str) or not digest:
        raise BadInput("the signed payload names no image digest",
                       "it is not a cosign image signature; sign the image again")
    identity = _field(critical, "identity")
    docker_ref = _field(identity, "docker-reference") if isinstance(identity, dict) else None
    return SimpleSigning(docker_ref if isinstance(docker_ref, str) else "", digest,
                         _field(doc, "optional"))


def check_payload(payload: bytes, manifest_digest: str) -> SimpleSigning:
    """Parse `payload` and insist it names `manifest_digest`."""
    info = parse_payload(payload)
    if info.manifest_digest != manifest_digest:
        raise BadInput(f"signature is for another image digest ({info.manifest_digest[:19]}…, "
                       f"not {manifest_digest[:19]}…)",
                       "the tag was moved or the signature copied; sign this image")
    return info


# ---------------------------------------------------------------------------- DER

def _der(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at `pos`."""
    if pos + 2 > len(data):
        raise ValueError("truncated")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise ValueError("bad length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("truncated")
    return tag, pos, pos + length


def key_algorithm(spki_der: bytes) -> str:
    """'P-256' for an ECDSA P-256 SubjectPublicKeyInfo, else a name for what it is."""
    try:
        tag, start, end = _der(spki_der, 0)
        if tag != 0x30 or end != len(spki_der):
            return "not a public key"
        tag, a_start, a_end = _der(spki_der, start)  # AlgorithmIdentifier
        if tag != 0x30:
            return "not a public key"
        tag, o_start, o_end = _der(spki_der, a_start)
        if tag != 0x06:
            return "not a public key"
        oid = spki_der[o_start:o_end]
        if oid == _OID_EC_PUBLIC_KEY:
            if o_end >= a_end:
                return "EC without a named curve"
            tag, c_start, c_end = _der(spki_der, o_end)
            curve = spki_der[c_start:c_end]
            if tag == 0x06 and curve == _OID_PRIME256V1:
                return "P-256"
            return f"EC {_OID_NAMES.get(curve, 'on another curve')}" if tag == 0x06 \
                else "EC with explicit curve parameters"
        return _OID_NAMES.get(oid, "an unknown key type")
    except ValueError:
        return "not a public key"


def is_der_ecdsa_signature(sig: bytes) -> bool:
    """SEQUENCE { INTEGER r, INTEGER s } and nothing after it."""
    try:
        tag, start, end = _der(sig, 0)
        if tag != 0x30 or end != len(sig):
            return False
        tag, _, r_end = _der(sig, start)
        if tag != 0x02:
            return False
        tag, _, s_end = _der(sig, r_end)
        return tag == 0x02 and s_end == end
    except ValueError:
        return False


# ---------------------------------------------------------------------------- keys

@contextmanager
def _private_dir() -> Iterator[Path]:
    """A temporary directory only we can read (mkdtemp makes it 0700)."""
    with tempfile.TemporaryDirectory(prefix="kairos-sig-") as d:
        yield Path(d)


def _write_private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def _openssl_error(stderr: str) -> str:
    """openssl's reason for a failure, for a one-line error (no temporary paths in it)."""
    for line in stderr.splitlines():
        parts = line.strip().split(":")
        if len(parts) > 5 and parts[1] == "error":
            data = ":".join(parts[8:]).strip().rstrip(".")
            return f"{parts[5]}: {data}" if data else parts[5]
    return "openssl could not decode it"


def normalize_pem(text: str) -> str:
    """PEM text with surrounding and per-line whitespace dropped (YAML indents it)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PublicKey:
    pem_path: Path  # inside a private temporary directory
    der: bytes

    @property
    def key_id(self) -> str:
        return sha256_digest(self.der)


def _load_public_key(public_key_pem: str, work: Path) -> PublicKey:
    text = normalize_pem(public_key_pem)
    if "PRIVATE KEY-----" in text:
        raise BadInput("the configured public key is a private key",
                       "configure the public half (the .pub file) and keep the private key off "
                       "the device")
    if "-----BEGIN PUBLIC KEY-----" not in text:
        what = "a certificate" if "CERTIFICATE-----" in text else "not a PEM public key"
        raise BadInput(f"the configured public key is {what}", HINT_KEY)
    pem = _write_private(work / "key.pub", text.encode())
    der = work / "key.der"
    res = run(["openssl", "pkey", "-pubin", "-in", pem, "-outform", "DER", "-out", der],
              check=False)
    if res.returncode != 0 or not der.is_file():
        raise BadInput(f"the configured public key cannot be read ({_openssl_error(res.stderr)})",
                       HINT_KEY)
    spki = der.read_bytes()
    algo = key_algorithm(spki)
    if algo != "P-256":
        raise BadInput(f"the configured public key is {algo}, not ECDSA P-256",
                       "cosign signatures use ECDSA P-256 keys (cosign generate-key-pair, "
                       "kairos sign --generate-key)")
    return PublicKey(pem, spki)


def _verify_with(key: PublicKey, payload: bytes, signature_b64: str, work: Path) -> str:
    """'' when `signature_b64` is a valid signature of `payload` by `key`, else why not."""
    try:
        sig = base64.b64decode(signature_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "the signature is not valid base64"
    if not is_der_ecdsa_signature(sig):
        return "the signature is not an ASN.1 DER ECDSA signature"
    name = hashlib.sha256(sig + payload).hexdigest()[:16]
    sig_file = _write_private(work / f"{name}.sig", sig)
    payload_file = _write_private(work / f"{name}.payload", payload)
    try:
        res = run(["openssl", "dgst", "-sha256", "-verify", key.pem_path, "-signature", sig_file,
                   payload_file], check=False)
    finally:
        sig_file.unlink(missing_ok=True)
        payload_file.unlink(missing_ok=True)
    if res.returncode == 0 and "Verified OK" in res.stdout:
        return ""
    return NOT_VERIFIED


def verify_local(payload: bytes, signature_b64: str, public_key_pem: str) -> None:
    """Check a signature (base64 of DER ECDSA over sha256(payload)) offline; BadInput if not.
    Only the cryptography: check_payload() checks what the payload names."""
    with _private_dir() as work:
        key = _load_public_key(public_key_pem, work)
        why = _verify_with(key, payload, signature_b64, work)
    if why:
        raise BadInput(why, HINT_KEY)


def _read_private_key_header(key_path: Path) -> str:
    try:
        with open(key_path, "rb") as fh:
            head = fh.read(4096)
    except FileNotFoundError:
        raise BadInput(f"key file {key_path} does not exist", HINT_GENKEY) from None
    except IsADirectoryError:
        raise BadInput(f"key file {key_path} is a directory", HINT_GENKEY) from None
    except OSError as exc:
        raise BadInput(f"cannot read key file {key_path}: {exc.strerror}",
                       "check its permissions") from None
    return head.decode("ascii", errors="replace")


def check_private_key(key_path: Path, work: Path) -> PublicKey:
    """Refuse what cannot sign (encrypted keys, public keys, other curves); return the public
    half. openssl never prompts: an empty passphrase is passed."""
    head = _read_private_key_header(key_path)
    if "ENCRYPTED SIGSTORE PRIVATE KEY" in head or "ENCRYPTED COSIGN PRIVATE KEY" in head:
        raise BadInput(f"{key_path} is a cosign encrypted key, which kairos cannot read",
                       "sign with cosign itself, or make a plain PEM key with `kairos sign "
                       "--generate-key PATH` and load it into cosign with `cosign "
                       "import-key-pair --key PATH`")
    if "ENCRYPTED PRIVATE KEY" in head or "Proc-Type: 4,ENCRYPTED" in head:
        raise BadInput(f"{key_path} is a passphrase-protected key",
                       "write a plain copy for signing: openssl pkey -in KEY -out PLAIN.pem "
                       "(keep it private)")
    if "-----BEGIN PUBLIC KEY-----" in head:
        raise BadInput(f"{key_path} is a public key", "--key takes the private key (PEM)")
    der = work / "signer.der"
    res = run(["openssl", "pkey", "-in", key_path, "-passin", "pass:", "-pubout",
               "-outform", "DER", "-out", der], check=False)
    if res.returncode != 0 or not der.is_file():
        raise BadInput(f"{key_path} is not a PEM private key openssl can read "
                       f"({_openssl_error(res.stderr)})", HINT_GENKEY)
    spki = der.read_bytes()
    algo = key_algorithm(spki)
    if algo != "P-256":
        raise BadInput(f"{key_path} is an {algo} key, not ECDSA P-256",
                       f"cosign signatures use ECDSA P-256; {HINT_GENKEY}")
    pem = work / "signer.pub"
    run(["openssl", "pkey", "-pubin", "-inform", "DER", "-in", der, "-out", pem])
    mode = os.stat(key_path).st_mode
    if mode & 0o077:
        log.warning("key file %s can be read by other users (mode %o); chmod 600 it",
                    key_path, mode & 0o777)
    return PublicKey(pem, spki)


def sign_payload(payload: bytes, key_path: Path) -> str:
    """base64 of the DER ECDSA P-256 signature of sha256(payload) with the PEM key at
    `key_path`; checked against the key's public half before it is returned."""
    with _private_dir() as work:
        key = check_private_key(key_path, work)
        return _sign_checked(payload, key_path, key, work)


def _sign_checked(payload: bytes, key_path: Path, key: PublicKey, work: Path) -> str:
    payload_file = _write_private(work / "payload", payload)
    sig_file = work / "payload.sig"
    run(["openssl", "dgst", "-sha256", "-sign", key_path, "-passin", "pass:", "-out",
         sig_file, payload_file])
    signature = base64.b64encode(sig_file.read_bytes()).decode()
    why = _verify_with(key, payload, signature, work)
    if why:
        raise BadInput(f"the signature just made does not verify: {why}",
                       "check the key file with: openssl pkey -in KEY -noout -check")
    return signature


def generate_key(path: Path) -> tuple[Path, Path]:
    """A new ECDSA P-256 key: PATH (PKCS#8 PEM, 0600) and PATH.pub (PEM public key)."""
    pub_path = Path(f"{path}.pub")
    for p in (path, pub_path):
        if os.path.lexists(p):
            raise BadInput(f"{p} already exists", "remove it or choose another path; keys are "
                           "never overwritten")
    if not path.parent.is_dir():
        raise BadInput(f"directory {path.parent} does not exist", "create it first")
    with _private_dir() as work:
        priv = work / "key.pem"
        run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-pkeyopt", "ec_param_enc:named_curve", "-out", priv])
        os.chmod(priv, 0o600)
        pub = work / "key.pub"
        run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub])
        write_file_atomic(path, priv.read_bytes(), mode=0o600)
        write_file_atomic(pub_path, pub.read_bytes(), mode=0o644)
    return path, pub_path


# ---------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class _SigManifest:
    digest: str
    layers: list[dict[str, Any]]  # raw layer descriptors, kept as they are when appending


def _signature_manifest(client: RegistryClient, ref: Reference,
                        tag: str) -> _SigManifest | None:
    got = client.get_manifest_raw(ref, tag)
    if got is None:
        return None
    raw, _, digest = got
    doc = parse_json(raw, f"signature manifest {ref.name}:{tag}")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise BadInput(f"{ref.name}:{tag} is not a cosign signature manifest (no layers)",
                       "remove the tag and sign the image again")
    return _SigManifest(digest, [d for d in layers if isinstance(d, dict)])


def _signature_layers(sig: _SigManifest, ref: Reference,
                      tag: str) -> list[tuple[Descriptor, str]]:
    out: list[tuple[Descriptor, str]] = []
    for i, raw in enumerate(sig.layers[:MAX_SIGNATURES]):
        desc = Descriptor.from_json(raw, f"signature manifest {ref.name}:{tag}: layers[{i}]")
        value = (desc.annotations or {}).get(ANNOTATION_SIGNATURE)
        if desc.media_type == MT_SIMPLE_SIGNING and value:
            out.append((desc, value))
    return out


def verify_signature(client: RegistryClient, ref: Reference, manifest_digest: str,
                     public_key_pem: str) -> SignatureInfo:
    """Check that `ref`'s repository holds a cosign signature of `manifest_digest` made with
    the key `public_key_pem`; BadInput (one line, exit 2) when it does not."""
    tag = signature_tag(manifest_digest)
    shown = f"{ref.name}@{manifest_digest[:19]}…"
    with _private_dir() as work:
        key = _load_public_key(public_key_pem, work)
        sig = _signature_manifest(client, ref, tag)
        if sig is None:
            raise BadInput(f"no signature for {shown} (looked for tag {tag})", HINT_SIGN)
        layers = _signature_layers(sig, ref, tag)
        if not layers:
            raise BadInput(f"{ref.name}:{tag} holds no cosign signatures", HINT_SIGN)
        failures: list[str] = []
        other_digest = ""
        for desc, signature in layers:
            payload = client.get_blob_bytes(ref, desc, MAX_PAYLOAD_BYTES)
            why = _verify_with(key, payload, signature, work)
            if why:
                failures.append(why)
                continue
            try:
                info = parse_payload(payload)
            except BadInput as exc:
                failures.append(exc.message)
                continue
            if info.manifest_digest != manifest_digest:
                other_digest = info.manifest_digest
                continue
            log.debug("signature of %s verified (key %s, %s)", shown, key.key_id[:19], tag)
            return SignatureInfo(str(ref), manifest_digest, tag, sig.digest, desc.digest,
                                 info.docker_reference, key.key_id, len(layers))
    count = f"{len(layers)} signature{'s' if len(layers) != 1 else ''} checked"
    if other_digest:
        raise BadInput(f"signature is for another image digest: {ref.name}:{tag} is signed "
                       f"with the configured key for {other_digest[:19]}…, not "
                       f"{manifest_digest[:19]}…",
                       "the signature was copied from another image; sign this image")
    odd = sorted({why for why in failures if why != NOT_VERIFIED})
    detail = "".join(f"; {failures.count(why)} of them: {why}" for why in odd)
    raise BadInput(f"signature of {shown} does not verify with the configured key "
                   f"({count}{detail})", HINT_KEY + ", or sign the image with it")


def verify_manifest(client: RegistryClient, manifest: Any, public_key_pem: str) -> SignatureInfo:
    """verify_signature for a resolved kairos.oci.registry.Manifest: a signature of the index
    the tag names (what `cosign sign` signs for a multi-platform tag) or of the platform
    manifest itself is accepted."""
    digests = [d for d in (getattr(manifest, "index_digest", None), manifest.digest) if d]
    first: BadInput | None = None
    for digest in digests:
        try:
            return verify_signature(client, manifest.ref, digest, public_key_pem)
        except BadInput as exc:
            first = first or exc
    assert first is not None
    raise first


def _config_blob(layer_digests: list[str]) -> bytes:
    """The config of a signature manifest, shaped like the one cosign writes (an empty image
    whose rootfs lists the payloads)."""
    return canonical_json({"architecture": "", "config": {}, "created": "0001-01-01T00:00:00Z",
                           "os": "", "rootfs": {"diff_ids": layer_digests, "type": "layers"}})


def resolve_digest(client: RegistryClient, ref: Reference) -> str:
    """The digest of the manifest (or index) `ref` names, as cosign signs it."""
    got = client.get_manifest_raw(ref, ref.reference)
    if got is None:
        raise BadInput(f"no image {ref}", "check the reference and that the image was pushed")
    return got[2]


def sign_image(client: RegistryClient, ref: Reference, key_path: Path) -> SignResult:
    """Sign the manifest `ref` names and push the signature where cosign puts it; an existing
    .sig manifest keeps its signatures and gets one more (none when this key already signed
    this digest, so a re-run changes nothing)."""
    digest = resolve_digest(client, ref)
    if ref.digest and ref.digest != digest:
        raise BadInput(f"{ref.name} answered {digest[:19]}… for {ref.digest[:19]}…",
                       "the registry is inconsistent; try again")
    tag = signature_tag(digest)
    payload = simple_signing_payload(ref.name, digest)
    with _private_dir() as work:
        key = check_private_key(key_path, work)
        existing = _signature_manifest(client, ref, tag)
        if existing is not None:
            for desc, signature in _signature_layers(existing, ref, tag):
                old = client.get_blob_bytes(ref, desc, MAX_PAYLOAD_BYTES)
                if _verify_with(key, old, signature, work):
                    continue
                try:
                    same = parse_payload(old).manifest_digest == digest
                except BadInput:
                    same = False
                if same:
                    log.debug("%s is already signed with this key (%s)", ref, tag)
                    return SignResult(str(ref), digest, tag, existing.digest, desc.digest,
                                      key.key_id, False, len(existing.layers))
        signature = _sign_checked(payload, key_path, key, work)
    payload_digest = client.push_blob(ref, payload)
    layer = Descriptor(MT_SIMPLE_SIGNING, payload_digest, len(payload),
                       annotations={ANNOTATION_SIGNATURE: signature}).to_json()
    layers = [*(existing.layers if existing else []), layer]
    config = _config_blob([str(d.get("digest")) for d in layers])
    config_digest = client.push_blob(ref, config)
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": MT_MANIFEST,
        "config": Descriptor(MT_CONFIG, config_digest, len(config)).to_json(),
        "layers": layers})
    sig_digest = client.push_manifest(ref, tag, manifest, MT_MANIFEST)
    log.debug("pushed signature %s:%s (%s)", ref.name, tag, sig_digest[:19])
    return SignResult(str(ref), digest, tag, sig_digest, payload_digest, key.key_id, True,
                      len(layers))
