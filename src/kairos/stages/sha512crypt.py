"""SHA-512 crypt ("$6$"), the password hash /etc/shadow uses, in pure Python.

Python's `crypt` module is deprecated (and gone in 3.13), so the scheme published with glibc
("Unix crypt using SHA-256 and SHA-512", U. Drepper) is implemented here with hashlib.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
DEFAULT_ROUNDS = 5000
# The order in which the 64 digest bytes are packed into 4-character groups.
_GROUPS = [(0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26),
           (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32),
           (12, 33, 54), (34, 55, 13), (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38),
           (18, 39, 60), (40, 61, 19), (62, 20, 41)]


def _b64(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(ALPHABET[w & 0x3F])
        w >>= 6
    return "".join(out)


def _repeat(digest: bytes, length: int) -> bytes:
    return (digest * (length // len(digest) + 1))[:length]


def sha512_crypt(password: str, salt: str | None = None, rounds: int | None = None) -> str:
    """Hash `password`; a random 16-character salt is used when none is given."""
    if salt is None:
        salt = "".join(secrets.choice(ALPHABET) for _ in range(16))
    pw = password.encode()
    sa = salt.encode()[:16]
    custom = rounds is not None
    n = DEFAULT_ROUNDS if rounds is None else min(max(rounds, 1000), 999_999_999)

    b = hashlib.sha512(pw + sa + pw).digest()
    a = hashlib.sha512(pw + sa + _repeat(b, len(pw)))
    length = len(pw)
    while length:
        a.update(b if length & 1 else pw)
        length >>= 1
    digest = a.digest()

    p_seq = _repeat(hashlib.sha512(pw * len(pw)).digest(), len(pw))
    s_seq = _repeat(hashlib.sha512(sa * (16 + digest[0])).digest(), len(sa))

    for i in range(n):
        c = hashlib.sha512(p_seq if i & 1 else digest)
        if i % 3:
            c.update(s_seq)
        if i % 7:
            c.update(p_seq)
        c.update(digest if i & 1 else p_seq)
        digest = c.digest()

    encoded = "".join(_b64(digest[x], digest[y], digest[z], 4) for x, y, z in _GROUPS)
    encoded += _b64(0, 0, digest[63], 2)
    prefix = f"$6$rounds={n}$" if custom else "$6$"
    return f"{prefix}{sa.decode()}${encoded}"


def verify(password: str, hashed: str) -> bool:
    """True if `hashed` is a $6$ hash of `password`."""
    if not hashed.startswith("$6$"):
        return False
    fields = hashed[3:].split("$")
    rounds = None
    if fields and fields[0].startswith("rounds="):
        try:
            rounds = int(fields[0][len("rounds="):])
        except ValueError:
            return False
        fields = fields[1:]
    if len(fields) != 2:
        return False
    return hmac.compare_digest(sha512_crypt(password, fields[0], rounds), hashed)


def is_hashed_or_locked(value: str) -> bool:
    """Values /etc/shadow takes as they are: a crypt hash, a lock (`!`, `*`) or empty."""
    return value == "" or value.startswith(("$", "!", "*"))
