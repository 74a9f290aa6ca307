"""WWW-Authenticate parsing, config.json credentials, the token cache."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from kairos.errors import BadInput
from kairos.oci.auth import (
    DEFAULT_AUTH_FILE,
    Challenge,
    Credentials,
    TokenCache,
    auth_file_path,
    load_credentials,
    parse_challenges,
    token_from_response,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_bearer_challenge() -> None:
    header = ('Bearer realm="https://auth.example.org/token",service="registry.example.org",'
              'scope="repository:kairos/os:pull,push"')
    assert parse_challenges(header) == [Challenge("bearer", {
        "realm": "https://auth.example.org/token", "service": "registry.example.org",
        "scope": "repository:kairos/os:pull,push"})]


def test_basic_and_several_challenges_and_escapes() -> None:
    assert parse_challenges('Basic realm="Registry Realm"') == \
        [Challenge("basic", {"realm": "Registry Realm"})]
    got = parse_challenges('Basic realm="a \\"b\\"", Bearer realm=https://t/x, service=s')
    assert got == [Challenge("basic", {"realm": 'a "b"'}),
                   Challenge("bearer", {"realm": "https://t/x", "service": "s"})]
    assert parse_challenges("") == []
    assert parse_challenges("Negotiate") == [Challenge("negotiate", {})]


def write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_auth_entry_forms(tmp_path: Path) -> None:
    f = write(tmp_path / "c.json", {"auths": {
        "reg.a:5000": {"auth": b64("alice:pa:ss")},
        "https://reg.b/v1/": {"username": "bob", "password": "pw"},
        "reg.c": {"identitytoken": "refresh-me"},
        "reg.d": {},
    }})
    assert load_credentials("reg.a:5000", f) == Credentials("alice", "pa:ss", "", str(f))
    assert load_credentials("reg.b", f) == Credentials("bob", "pw", "", str(f))
    assert load_credentials("reg.c", f) == Credentials("", "", "refresh-me", str(f))
    assert load_credentials("reg.d", f) is None
    assert load_credentials("reg.a", f) is None  # the port is part of the name
    assert load_credentials("elsewhere", f) is None


def test_credential_helpers_are_refused(tmp_path: Path) -> None:
    f = write(tmp_path / "c.json", {"auths": {"reg.a": {}}, "credsStore": "desktop"})
    with pytest.raises(BadInput, match="credential helper") as exc:
        load_credentials("reg.a", f)
    assert '"auths"' in exc.value.hint and "reg.a" in exc.value.hint
    g = write(tmp_path / "g.json", {"credHelpers": {"reg.h": "ecr-login"},
                                    "auths": {"reg.i": {"auth": b64("u:p")}}})
    with pytest.raises(BadInput, match="credential helper"):
        load_credentials("reg.h", g)
    assert load_credentials("reg.i", g) == Credentials("u", "p", "", str(g))
    assert load_credentials("reg.j", g) is None


@pytest.mark.parametrize("content, what", [
    ("{not json", "not valid JSON"),
    ("[1]", "not a JSON object"),
    (json.dumps({"auths": {"r": {"auth": "!!!"}}}), "not valid base64"),
    (json.dumps({"auths": {"r": {"auth": b64("nocolon")}}}), "user:password"),
])
def test_bad_files(tmp_path: Path, content: str, what: str) -> None:
    f = tmp_path / "c.json"
    f.write_text(content)
    with pytest.raises(BadInput, match=what):
        load_credentials("r", f)


def test_which_file(tmp_path: Path) -> None:
    named = tmp_path / "named.json"
    assert auth_file_path(named, {}) == (named, True)
    assert auth_file_path(None, {"REGISTRY_AUTH_FILE": "/x.json"}) == (Path("/x.json"), True)
    assert auth_file_path(None, {}) == (DEFAULT_AUTH_FILE, False)
    # A named file must exist; the default may be missing (anonymous pulls).
    with pytest.raises(BadInput, match="does not exist"):
        load_credentials("r", None, {"REGISTRY_AUTH_FILE": str(tmp_path / "missing.json")})
    f = write(tmp_path / "env.json", {"auths": {"r": {"auth": b64("u:p")}}})
    assert load_credentials("r", None, {"REGISTRY_AUTH_FILE": str(f)}) is not None


def test_basic_header() -> None:
    assert Credentials("u", "p").basic_header() == "Basic " + b64("u:p")


def test_token_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("kairos.oci.auth.time.monotonic", lambda: now[0])
    cache = TokenCache()
    key = ("realm", "svc", "repository:os:pull")
    cache.put(key, "t1", 60)
    assert cache.get(key) == "t1"
    assert cache.get(("realm", "svc", "repository:other:pull")) is None
    now[0] += 49  # renewed 10 s before it expires
    assert cache.get(key) == "t1"
    now[0] += 2
    assert cache.get(key) is None
    cache.put(key, "t2", 300)
    cache.drop(key)
    assert cache.get(key) is None


def test_token_response() -> None:
    assert token_from_response(b'{"token": "a", "expires_in": 300}', "t") == ("a", 300.0)
    assert token_from_response(b'{"access_token": "b"}', "t") == ("b", 60.0)
    with pytest.raises(BadInput, match="without a token"):
        token_from_response(b"{}", "t")
    with pytest.raises(BadInput, match="JSON"):
        token_from_response(b"<html>", "t")
