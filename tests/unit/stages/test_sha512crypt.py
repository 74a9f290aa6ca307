from __future__ import annotations

import shutil
import subprocess

import pytest

from kairos.stages.accounts import shadow_password
from kairos.stages.sha512crypt import sha512_crypt, verify


def test_published_vector() -> None:
    # glibc's test vector for SHA-512 crypt with rounds=10000
    assert sha512_crypt("Hello world!", "saltstring", 10000) == (
        "$6$rounds=10000$saltstring$buk9gc9MDdd3Z11.ZzxK8sKnFNbxNdTnCf.XHjjiTHcgFuFgkKvBQPLIaU"
        "n4Ixl3TLN8ZgCk52MPgbWjATwhH0")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("password", ["kairos", "a" * 100, "pässwörd"])
def test_matches_openssl(password: str) -> None:
    expected = subprocess.run(["openssl", "passwd", "-6", "-salt", "0123456789abcdef", password],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert sha512_crypt(password, "0123456789abcdef") == expected


def test_verify_and_shadow_password() -> None:
    hashed = sha512_crypt("secret")
    assert verify("secret", hashed) and not verify("other", hashed)
    assert shadow_password("secret", hashed) == hashed      # unchanged when it matches
    assert shadow_password("other", hashed) != hashed
    for kept in ("!", "*", "", "$1$old$hash", "!$6$locked"):
        assert shadow_password(kept, None) == kept
