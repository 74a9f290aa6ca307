"""`kairos sign REF --key KEY.pem`: a cosign-format signature for an image in a registry;
`--verify` checks one, `--generate-key PATH` makes a key pair."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kairos.errors import BadInput


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sign", help="sign an image in a registry the way cosign does (or check a signature)",
        description="Resolve REF's manifest digest, sign its simple-signing payload with an "
                    "ECDSA P-256 key (plain PEM, as openssl writes it) and push the signature "
                    "to REF's repository as the tag sha256-<digest>.sig, where `cosign verify "
                    "--key` and `kairos upgrade --verify` look for it. With --verify, check "
                    "REF's signature with a public key instead.")
    p.add_argument("image", nargs="?", metavar="REF",
                   help="REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST")
    p.add_argument("--key", type=Path,
                   help="private key (PEM, EC P-256) to sign with; with --verify the public key")
    p.add_argument("--verify", action="store_true",
                   help="check REF's signature with the public key --key instead of signing")
    p.add_argument("--generate-key", type=Path, metavar="PATH",
                   help="write a new key pair: PATH (private, mode 0600) and PATH.pub")
    p.add_argument("--auth-file", type=Path,
                   help="registry credentials (Docker config.json); default "
                        "$REGISTRY_AUTH_FILE, then /root/.docker/config.json")
    p.add_argument("--allow-insecure-registries", action="store_true",
                   help="allow plain HTTP (and unverified TLS) for REF's registry")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=sign_cmd)


def _out(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n" if args.json else text + "\n")
    sys.stdout.flush()


def sign_cmd(args: argparse.Namespace) -> int:
    from kairos.oci import signature

    if args.generate_key is not None:
        if args.image or args.key or args.verify:
            raise BadInput("--generate-key takes no image, --key or --verify",
                           "make the key first, then sign with --key")
        priv, pub = signature.generate_key(args.generate_key)
        _out(args, {"private_key": str(priv), "public_key": str(pub)},
             f"Wrote {priv} (private, keep it secret) and {pub} (public: put it in "
             "upgrade.public-key on the devices)")
        return 0
    if not args.image:
        raise BadInput("no image to sign", "kairos sign REGISTRY/REPOSITORY:TAG --key KEY.pem")
    if args.key is None:
        raise BadInput("no key given", "pass --key KEY.pem (make one with kairos sign "
                       "--generate-key PATH)")

    from kairos.oci.reference import parse_reference
    from kairos.oci.registry import RegistryClient

    ref = parse_reference(args.image)
    client = RegistryClient(auth_file=args.auth_file, progress=False,
                            insecure=[ref.registry] if args.allow_insecure_registries else [])
    if args.verify:
        try:
            pem = args.key.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"cannot read public key {args.key}: "
                           f"{getattr(exc, 'strerror', None) or exc}",
                           "give the PEM public key file (the .pub)") from None
        digest = signature.resolve_digest(client, ref)
        info = signature.verify_signature(client, ref, digest, pem)
        _out(args, info.to_json(),
             f"Verified: {ref} ({digest}) is signed with key {info.key_id[:19]}… "
             f"({info.signature_tag})")
        return 0
    result = signature.sign_image(client, ref, args.key)
    if result.added:
        text = (f"Signed {ref} ({result.manifest_digest}); pushed "
                f"{ref.name}:{result.signature_tag} ({result.signatures} signature"
                f"{'s' if result.signatures != 1 else ''})")
    else:
        text = (f"{ref} ({result.manifest_digest}) is already signed with this key; "
                "nothing pushed")
    _out(args, result.to_json(), text)
    return 0
