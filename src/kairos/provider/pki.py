"""The cluster's certificates, made with the `openssl` CLI, kept on the persistent partition.

Made once and reused on every boot: /etc/kubernetes/pki is a persistent path (early/plan.py),
so certificates survive reboots, upgrades and rollbacks. A certificate is issued again only
when it is missing, when it no longer says what the plan asks (a new node IP or name, a
`--tls-san` added), when its CA changed, or when it has less than RENEW_BEFORE left. A CA is
never replaced while its key is there: a new CA would cut every joined node off; the warning
says when one gets old.

`kairos-pki.json` beside the files records, per certificate, the fingerprint of its spec, the
sha256 of its certificate, key and issuer, and its end date: an unchanged boot compares
hashes and runs no openssl at all. Keys are EC P-256 (cheap to make on a slow CPU; every
component here takes them), written 0600; every file is written atomically, the key last
checked through its hash, so a power cut between two writes is caught on the next boot.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import logging
import secrets
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kairos import safefs
from kairos.errors import KairosError
from kairos.run import run

log = logging.getLogger("kairos.provider")

PKI_DIR = "/etc/kubernetes/pki"
RECORD = "kairos-pki.json"
CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE = 30 * 86400
CA_WARN_BEFORE = 180 * 86400


@dataclass(frozen=True)
class CertSpec:
    """One certificate and key: `<pki>/<name>.crt` and `<pki>/<name>.key`."""

    name: str  # e.g. "apiserver", "etcd/server"
    cn: str
    orgs: tuple[str, ...] = ()
    issuer: str = ""  # the name of the CA that signs it; "" for a CA (self-signed)
    server: bool = False
    client: bool = False
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    days: int = LEAF_DAYS

    @property
    def is_ca(self) -> bool:
        return not self.issuer

    def fingerprint(self) -> str:
        text = json.dumps([self.cn, list(self.orgs), self.issuer, self.server, self.client,
                           sorted(self.dns), sorted(self.ips), self.days])
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class KeyPairSpec:
    """A bare key pair: `<pki>/<name>.key` and `<pki>/<name>.pub` (service-account tokens)."""

    name: str


@dataclass
class PkiReport:
    issued: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def openssl_conf(spec: CertSpec) -> str:
    """The openssl config of a certificate: its subject and its v3 extensions."""
    lines = ["[req]", "distinguished_name = dn", "prompt = no", "", "[dn]"]
    lines += [f"{i}.O = {org}" for i, org in enumerate(spec.orgs)]
    lines += [f"CN = {spec.cn}", "", "[ext]"]
    if spec.is_ca:
        lines += ["basicConstraints = critical, CA:TRUE",
                  "keyUsage = critical, digitalSignature, keyEncipherment, keyCertSign, cRLSign",
                  "subjectKeyIdentifier = hash"]
    else:
        usages = [u for u, on in (("serverAuth", spec.server), ("clientAuth", spec.client)) if on]
        lines += ["basicConstraints = critical, CA:FALSE",
                  "keyUsage = critical, digitalSignature, keyEncipherment",
                  f"extendedKeyUsage = {', '.join(usages)}",
                  "subjectKeyIdentifier = hash", "authorityKeyIdentifier = keyid,issuer"]
        if spec.dns or spec.ips:
            lines += ["subjectAltName = @alt", "", "[alt]"]
            lines += [f"DNS.{i} = {name}" for i, name in enumerate(spec.dns, 1)]
            lines += [f"IP.{i} = {ip}" for i, ip in enumerate(spec.ips, 1)]
    return "\n".join(lines) + "\n"


# -- openssl -----------------------------------------------------------------------------


def new_key(work: Path) -> bytes:
    out = work / "new.key"
    run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", out])
    data = out.read_bytes()
    out.unlink()
    return data


def _put(work: Path, name: str, data: bytes) -> Path:
    path = work / name
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def make_cert(work: Path, spec: CertSpec, key: bytes,
              issuer: tuple[bytes, bytes] | None = None) -> bytes:
    """A certificate for `key`: self-signed (a CA) or signed by `issuer` (cert, key)."""
    conf = _put(work, "cert.cnf", openssl_conf(spec).encode())
    key_path = _put(work, "cert.key", key)
    out = work / "cert.crt"
    if issuer is None:
        run(["openssl", "req", "-x509", "-new", "-sha256", "-key", key_path, "-config", conf,
             "-extensions", "ext", "-days", str(spec.days), "-set_serial",
             f"0x{secrets.token_hex(16)}", "-out", out])
    else:
        ca_crt, ca_key = _put(work, "ca.crt", issuer[0]), _put(work, "ca.key", issuer[1])
        csr = work / "cert.csr"
        run(["openssl", "req", "-new", "-key", key_path, "-config", conf, "-out", csr])
        run(["openssl", "x509", "-req", "-sha256", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
             "-set_serial", f"0x{secrets.token_hex(16)}", "-days", str(spec.days),
             "-extfile", conf, "-extensions", "ext", "-out", out])
    data = out.read_bytes()
    for name in ("cert.key", "ca.key", "cert.crt", "cert.csr", "ca.crt", "cert.cnf"):
        (work / name).unlink(missing_ok=True)
    return data


def not_after(work: Path, cert: bytes) -> int:
    """The certificate's end date, seconds since the epoch."""
    path = _put(work, "check.crt", cert)
    out = run(["openssl", "x509", "-noout", "-enddate", "-in", path]).stdout.strip()
    path.unlink()
    value = out.partition("=")[2]
    try:
        return calendar.timegm(time.strptime(value, "%b %d %H:%M:%S %Y %Z"))
    except ValueError:
        raise KairosError(f"cannot read the end date openssl gave: {out!r}",
                          "check the openssl version") from None


def public_key(work: Path, pem: bytes, *, cert: bool) -> str:
    path = _put(work, "check.pem", pem)
    argv: list[str | Path] = ["openssl", "x509", "-noout", "-pubkey", "-in", path] if cert \
        else ["openssl", "pkey", "-pubout", "-in", path]
    out = run(argv).stdout
    path.unlink()
    return out.strip()


# -- the record and the files ------------------------------------------------------------


def _read(root: Path, path: str) -> bytes | None:
    return safefs.read_bytes(root, path)


def _write(root: Path, path: str, data: bytes, mode: int) -> None:
    safefs.write_atomic(root, path, data, mode=mode, create_parents=True, dir_mode=0o755)


def load_record(root: Path, pki_dir: str = PKI_DIR) -> dict[str, Any]:
    raw = _read(root, f"{pki_dir}/{RECORD}")
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    return data if isinstance(data, dict) else {}


def _entry_ok(entry: Any, spec: CertSpec, crt: bytes, key: bytes, issuer_crt: bytes | None,
              now: float) -> bool:
    if not isinstance(entry, dict):
        return False
    return (entry.get("spec") == spec.fingerprint() and entry.get("crt") == _sha(crt)
            and entry.get("key") == _sha(key)
            and entry.get("issuer") == (_sha(issuer_crt) if issuer_crt else "")
            and isinstance(entry.get("not_after"), int)
            and entry["not_after"] - now > (0 if spec.is_ca else RENEW_BEFORE))


def _entry(spec: CertSpec, crt: bytes, key: bytes, issuer_crt: bytes | None,
           end: int) -> dict[str, Any]:
    return {"spec": spec.fingerprint(), "crt": _sha(crt), "key": _sha(key),
            "issuer": _sha(issuer_crt) if issuer_crt else "", "not_after": end}


class _Pki:
    def __init__(self, root: Path, pki_dir: str, work: Path, now: float) -> None:
        self.root, self.dir, self.work, self.now = root, pki_dir, work, now
        self.record = load_record(root, pki_dir)
        self.pairs: dict[str, tuple[bytes, bytes]] = {}
        self.report = PkiReport()

    def _files(self, name: str, ext: str = ".crt") -> tuple[bytes | None, bytes | None]:
        return (_read(self.root, f"{self.dir}/{name}{ext}"),
                _read(self.root, f"{self.dir}/{name}.key"))

    def _store(self, spec: CertSpec, crt: bytes, key: bytes, issuer_crt: bytes | None) -> None:
        # The key first: a crash after it leaves a key the record does not know, which the
        # next boot sees and issues again.
        _write(self.root, f"{self.dir}/{spec.name}.key", key, 0o600)
        _write(self.root, f"{self.dir}/{spec.name}.crt", crt, 0o644)
        self.record[spec.name] = _entry(spec, crt, key, issuer_crt,
                                        not_after(self.work, crt))
        self.pairs[spec.name] = (crt, key)
        self.report.issued.append(spec.name)

    def ca(self, spec: CertSpec) -> None:
        crt, key = self._files(spec.name)
        if crt is None and key is None:
            new = new_key(self.work)
            self._store(spec, make_cert(self.work, spec, new), new, None)
            return
        if crt is None or key is None:
            missing = f"{spec.name}.crt" if crt is None else f"{spec.name}.key"
            raise KairosError(f"{self.dir}/{missing} is missing but its pair is there",
                              "restore it from a backup, or remove both files to make a new "
                              "CA (every node must then join again)")
        entry = self.record.get(spec.name)
        if not (isinstance(entry, dict) and entry.get("crt") == _sha(crt)
                and entry.get("key") == _sha(key)):
            # Not ours or changed by hand: adopt it if the pair belongs together.
            if public_key(self.work, crt, cert=True) != public_key(self.work, key, cert=False):
                raise KairosError(f"{self.dir}/{spec.name}.crt and .key do not belong together",
                                  "restore the pair from a backup; a new CA would cut every "
                                  "node off")
            entry = _entry(spec, crt, key, None, not_after(self.work, crt))
            entry["spec"] = "adopted"
            self.record[spec.name] = entry
        end = int(entry.get("not_after") or 0)
        if end - self.now < CA_WARN_BEFORE:
            self.report.warnings.append(f"the CA {spec.name} expires on "
                                        f"{time.strftime('%Y-%m-%d', time.gmtime(end))}")
        self.pairs[spec.name] = (crt, key)
        self.report.kept.append(spec.name)

    def leaf(self, spec: CertSpec) -> None:
        if spec.issuer not in self.pairs:
            raise ValueError(f"{spec.name}: its CA {spec.issuer} must come first")
        issuer = self.pairs[spec.issuer]
        crt, key = self._files(spec.name)
        if crt is not None and key is not None and _entry_ok(
                self.record.get(spec.name), spec, crt, key, issuer[0], self.now):
            self.pairs[spec.name] = (crt, key)
            self.report.kept.append(spec.name)
            return
        key = new_key(self.work)
        self._store(spec, make_cert(self.work, spec, key, issuer), key, issuer[0])

    def key_pair(self, spec: KeyPairSpec) -> None:
        pub, key = self._files(spec.name, ".pub")
        if key is None:
            key = new_key(self.work)
            _write(self.root, f"{self.dir}/{spec.name}.key", key, 0o600)
            pub = None
            self.report.issued.append(spec.name)
        else:
            self.report.kept.append(spec.name)
        entry = self.record.get(spec.name)
        if pub is None or not (isinstance(entry, dict) and entry.get("key") == _sha(key)
                               and entry.get("pub") == _sha(pub)):
            text = public_key(self.work, key, cert=False) + "\n"
            pub = text.encode()
            _write(self.root, f"{self.dir}/{spec.name}.pub", pub, 0o644)
            self.record[spec.name] = {"key": _sha(key), "pub": _sha(pub)}
        self.pairs[spec.name] = (pub, key)


def ensure(root: Path, specs: Sequence[CertSpec | KeyPairSpec], *, pki_dir: str = PKI_DIR,
           now: float | None = None) -> tuple[PkiReport, dict[str, tuple[bytes, bytes]]]:
    """Make what is missing or stale; the report and every (cert or pub, key) by name.
    CAs must come before the certificates they sign."""
    with tempfile.TemporaryDirectory(prefix="kairos-pki-") as tmp:
        pki = _Pki(root, pki_dir, Path(tmp), time.time() if now is None else now)
        before = json.dumps(pki.record, sort_keys=True)
        for spec in specs:
            if isinstance(spec, KeyPairSpec):
                pki.key_pair(spec)
            elif spec.is_ca:
                pki.ca(spec)
            else:
                pki.leaf(spec)
        if json.dumps(pki.record, sort_keys=True) != before:
            _write(root, f"{pki_dir}/{RECORD}",
                   (json.dumps(pki.record, indent=1, sort_keys=True) + "\n").encode(), 0o600)
    for name in pki.report.issued:
        log.info("issued %s/%s", pki_dir, name)
    return pki.report, pki.pairs
