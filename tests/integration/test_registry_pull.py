"""The device's registry client against a real registry (Debian's docker-registry on
127.0.0.1), with skopeo pushing the images and a proxy counting, cutting and corrupting what
the registry serves. Auth: anonymous, htpasswd (Basic) and token (Bearer, own JWT server)."""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from kairos.errors import EXIT_BAD_INPUT, BadInput, KairosError
from kairos.oci.blobcache import BlobCache
from kairos.oci.image import ImageConfig, ImageRef, blob_path, write_image
from kairos.oci.reference import Reference, parse_reference
from kairos.oci.registry import RegistryClient, write_layout
from kairos.oci.semver import sort_tags
from kairos.oci.unpack import unpack_image
from kairos.run import require
from tests.registry import (
    Fault,
    Registry,
    add_index,
    file_digest,
    htpasswd_auth,
    proxy,
    push,
    registry,
    token_server,
    write_auth_file,
)
from tests.unit.oci.ocitest_helpers import EPOCH, Entry, layer_blob, layer_tar

pytestmark = pytest.mark.integration

BIG = 3 * 2**20 + 4321  # an incompressible layer, so a cut lands mid-blob
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
    amd64: ImageRef
    arm64: ImageRef
    big_layer: str  # digest


def _image(tmp: Path, layout: Path, ref: str, arch: str, payload: bytes) -> ImageRef:
    small = layer_blob(tmp, layer_tar([Entry("etc/", "dir"), Entry("etc/os-release",
                                                                   data=f"ID={arch}\n".encode())]),
                       name=f"small-{arch}")
    big = layer_blob(tmp, layer_tar([Entry("big.bin", data=payload)]), name=f"big-{arch}")
    return write_image([small, big], layout, ref=ref,
                       config=ImageConfig(created_epoch=EPOCH, architecture=arch,
                                          labels={"io.kairos.version": "v1"}))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    tmp = tmp_path_factory.mktemp("images")
    layout = tmp / "layout"
    rng = random.Random(11)
    amd = _image(tmp, layout, "amd", "amd64", rng.randbytes(BIG))
    arm = _image(tmp, layout, "arm", "arm64", rng.randbytes(BIG // 3))
    add_index(layout, ["amd", "arm"], "multi")
    add_index(layout, ["arm"], "armonly")
    big = json.loads(blob_path(layout, amd.digest).read_bytes())["layers"][1]["digest"]
    return Images(layout, amd, arm, big)


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory, images: Images) -> Iterator[Registry]:
    work = tmp_path_factory.mktemp("registry")
    with registry(work / "anon") as r:
        for name, tag in [("amd", "v1.0.0"), ("arm", "arm-only-single")]:
            push(work, f"oci:{images.layout}:{name}", f"{r.host}/kairos/os:{tag}")
        for name in ("multi", "armonly"):
            push(work, f"oci:{images.layout}:{name}", f"{r.host}/kairos/os:{name}",
                 all_images=True)
        yield r


def client(**kw: object) -> RegistryClient:
    args: dict[str, object] = {"insecure": {"127.0.0.1"}, "progress": False, "timeout": 20, **kw}
    return RegistryClient(**args)  # type: ignore[arg-type]


def ref(host: str, tag: str, repo: str = "kairos/os") -> Reference:
    return parse_reference(f"{host}/{repo}:{tag}")


def test_anonymous_pull_verifies_and_second_pull_downloads_nothing(
        reg: Registry, images: Images, tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    with proxy(reg.host) as px:
        c = client(insecure={px.host})
        result = c.pull(ref(px.host, "v1.0.0"), cache)
        assert result.manifest.digest == images.amd64.digest  # skopeo kept our manifest
        assert result.config["architecture"] == "amd64"
        for blob in [result.config_blob, *result.layers]:
            assert blob.path == cache.path(blob.digest)
            assert file_digest(blob.path) == blob.digest
            assert blob.path.read_bytes() == blob_path(images.layout, blob.digest).read_bytes()
        assert result.layer_bytes_downloaded == sum(b.size for b in result.layers)
        assert px.blob_bytes() == result.downloaded
        served_before = px.blob_bytes()

        again = client(insecure={px.host}).pull(ref(px.host, "v1.0.0"), cache)
        assert again.downloaded == 0 and all(b.cached for b in again.layers)
        assert px.blob_bytes() == served_before  # not one blob byte more
    assert not list(cache.dir.glob("*.partial"))


def test_cache_is_a_layout_the_unpacker_reads(reg: Registry, images: Images,
                                              tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "oci" / "blobs")
    result = client().pull(ref(reg.host, "v1.0.0"), cache)
    layout = write_layout(result, cache, "upgrade")
    assert result.digests == {result.manifest.digest, result.config_blob.digest,
                              *(b.digest for b in result.layers)}
    info = unpack_image(layout, tmp_path / "tree", ref="upgrade")
    assert info.manifest_digest == images.amd64.digest
    assert (tmp_path / "tree" / "etc" / "os-release").read_text() == "ID=amd64\n"
    assert (tmp_path / "tree" / "big.bin").stat().st_size == BIG
    # The image's blobs survive a prune that keeps them; anything else goes.
    cache.put_bytes(b"stale")
    cache.prune(0, keep=result.digests)
    assert {e.digest for e in cache.entries()} == result.digests


def test_pull_by_digest_and_multiarch_index(reg: Registry, images: Images,
                                             tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    c = client()
    by_digest = c.resolve(parse_reference(f"{reg.host}/kairos/os@{images.amd64.digest}"))
    assert by_digest.digest == images.amd64.digest

    multi = c.resolve(ref(reg.host, "multi"))
    assert multi.digest == images.amd64.digest and multi.index_digest is not None
    assert sorted(multi.platforms) == ["linux/amd64", "linux/arm64"]
    arm = c.pull(ref(reg.host, "multi"), cache, platform="linux/arm64")
    assert arm.manifest.digest == images.arm64.digest
    assert arm.config["architecture"] == "arm64"


def test_wrong_architecture_is_refused(reg: Registry, tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(BadInput) as exc:
        client().pull(ref(reg.host, "armonly"), cache)
    assert exc.value.exit_code == EXIT_BAD_INPUT
    assert "no linux/amd64 image" in str(exc.value) and "linux/arm64" in exc.value.hint
    with pytest.raises(BadInput, match="linux/arm64 only"):
        client().pull(ref(reg.host, "arm-only-single"), cache)
    assert not [p for p in cache.dir.glob("*") if p.stat().st_size > 10_000]


def test_interrupted_blob_resumes_with_range(reg: Registry, images: Images,
                                             tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    cut = 1_000_000
    with proxy(reg.host) as px:
        px.faults.append(Fault(match=images.big_layer, cut_after=cut))
        with pytest.raises(KairosError, match="interrupted") as exc:
            client(insecure={px.host}, retries=0).pull(ref(px.host, "v1.0.0"), cache)
        assert "run again" in exc.value.hint
        partial = cache.partial_path(images.big_layer)
        assert partial.stat().st_size == cut
        assert px.blob_bytes(images.big_layer) == cut

        result = client(insecure={px.host}).pull(ref(px.host, "v1.0.0"), cache)
        big = next(b for b in result.layers if b.digest == images.big_layer)
        served = [s for s in px.served if s.path.endswith(images.big_layer)]
        assert served[-1].range == f"bytes={cut}-" and served[-1].status == 206
        assert served[-1].sent == big.size - cut  # only the missing bytes
        assert big.downloaded == big.size - cut and big.resumed_from == cut
        assert file_digest(big.path) == images.big_layer
        assert not partial.exists()


def test_cut_is_resumed_within_one_pull(reg: Registry, images: Images, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str],
                                       caplog: pytest.LogCaptureFixture) -> None:
    cache = BlobCache(tmp_path / "cache")
    caplog.set_level(logging.INFO, logger="kairos")
    with proxy(reg.host) as px:
        px.faults.append(Fault(match=images.big_layer, cut_after=500_000, times=2))
        result = client(retries=3, progress=True).pull(ref(px.host, "v1.0.0"), cache)
        # Progress for people: plain lines without a terminal, then the size and rate.
        short = images.big_layer[7:19]
        assert f"blob {short} from {px.host}: 3.0 MiB 100%" in capsys.readouterr().err
        assert "resuming" in caplog.text and "MiB/s" in caplog.text
        big = next(b for b in result.layers if b.digest == images.big_layer)
        assert px.blob_bytes(images.big_layer) == big.size  # three requests, no byte twice
        assert [s.range for s in px.served if s.path.endswith(images.big_layer)] == \
            [None, "bytes=500000-", "bytes=1000000-"]


def test_server_ignoring_range_restarts(reg: Registry, images: Images, tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    with proxy(reg.host) as px:
        px.faults += [Fault(match=images.big_layer, cut_after=700_000),
                      Fault(match=images.big_layer, strip_range=True)]
        result = client(insecure={px.host}).pull(ref(px.host, "v1.0.0"), cache)
        big = next(b for b in result.layers if b.digest == images.big_layer)
        last = [s for s in px.served if s.path.endswith(images.big_layer)][-1]
        assert last.status == 200 and last.sent == big.size
        assert file_digest(big.path) == images.big_layer


def test_corrupted_blob_is_refused_and_leaves_nothing(reg: Registry, images: Images,
                                                      tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    with proxy(reg.host) as px:
        px.faults.append(Fault(match=images.big_layer, flip_at=123_456))
        with pytest.raises(BadInput) as exc:
            client(insecure={px.host}).pull(ref(px.host, "v1.0.0"), cache)
    assert exc.value.exit_code == EXIT_BAD_INPUT
    assert f"blob {images.big_layer} from {px.host} does not match its digest" in str(exc.value)
    assert "corrupted" in exc.value.hint
    assert not cache.path(images.big_layer).exists()
    assert not cache.partial_path(images.big_layer).exists()


def test_truncated_blob_is_refused(reg: Registry, images: Images, tmp_path: Path) -> None:
    """The registry sends a complete response that is shorter than the descriptor says."""
    cache = BlobCache(tmp_path / "cache")
    c = client()
    manifest = c.resolve(ref(reg.host, "v1.0.0"))
    big = next(d for d in manifest.layers if d.digest == images.big_layer)
    with pytest.raises(BadInput, match=f"blob {big.digest} from {reg.host} is truncated"):
        c.fetch_blob(manifest.ref, replace(big, size=big.size + 10), cache)
    assert not cache.partial_path(big.digest).exists()
    assert not cache.path(big.digest).exists()


def test_tags_paginate_and_sort(reg: Registry, images: Images, tmp_path: Path) -> None:
    tags = ["v1.0.0", "v1.2.0", "v1.10.0", "v1.10.1-rc1", "v2.0.0-beta.2", "latest"]
    for tag in tags[1:]:
        push(tmp_path, f"oci:{images.layout}:amd", f"{reg.host}/kairos/tags:{tag}")
    push(tmp_path, f"oci:{images.layout}:amd", f"{reg.host}/kairos/tags:v1.0.0")
    with proxy(reg.host) as px:
        px.tag_page = 2
        listed = client(insecure={px.host}).list_tags(ref(px.host, "x", "kairos/tags"),
                                                      page_size=2)
        pages = [s for s in px.served if "/tags/list" in s.path]
    assert sorted(listed) == sorted(tags)
    assert len(pages) == 3 and pages[0].path.endswith("?n=2")
    # docker-registry itself (2.8) sends every tag in one answer: that works too.
    assert sorted(client().list_tags(ref(reg.host, "x", "kairos/tags"))) == sorted(tags)
    assert sort_tags(listed) == ["v1.10.0", "v1.2.0", "v1.0.0"]
    assert sort_tags(listed, pre=True)[:2] == ["v2.0.0-beta.2", "v1.10.1-rc1"]


def test_people_errors(reg: Registry, tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(BadInput, match=r"no image .*:nope") as exc:
        client().pull(ref(reg.host, "nope"), cache)
    assert "check the tag" in exc.value.hint
    with pytest.raises(BadInput, match="no repository"):
        client().list_tags(ref(reg.host, "x", "kairos/missing"))
    with pytest.raises(BadInput, match=re.escape("cannot reach registry 127.0.0.1:1: connection refused")):
        client().resolve(ref("127.0.0.1:1", "v1"))
    with pytest.raises(BadInput, match=re.escape("cannot reach registry no-such-host.invalid")):
        client().resolve(ref("no-such-host.invalid", "v1"))
    # Not named insecure: we speak TLS to a plain-HTTP registry.
    with pytest.raises(BadInput, match=f"TLS with {reg.host} failed") as tls:
        RegistryClient(progress=False).resolve(ref(reg.host, "v1.0.0"))
    assert "--allow-insecure-registries" in tls.value.hint


@pytest.fixture(scope="module")
def basic_reg(tmp_path_factory: pytest.TempPathFactory, images: Images) -> Iterator[Registry]:
    work = tmp_path_factory.mktemp("basic")
    with registry(work / "reg", auth=htpasswd_auth(work, {"alice": "s3cret"})) as r:
        push(work, f"oci:{images.layout}:amd", f"{r.host}/private/os:v1", creds="alice:s3cret")
        yield r


def test_htpasswd_basic_auth(basic_reg: Registry, images: Images, tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    good = write_auth_file(tmp_path / "good.json", basic_reg.host, "alice", "s3cret")
    result = client(auth_file=good).pull(ref(basic_reg.host, "v1", "private/os"), cache)
    assert result.manifest.digest == images.amd64.digest

    bad = write_auth_file(tmp_path / "bad.json", basic_reg.host, "alice", "wrong")
    with pytest.raises(BadInput, match=f"wrong credentials for {basic_reg.host}") as exc:
        client(auth_file=bad).resolve(ref(basic_reg.host, "v1", "private/os"))
    assert str(bad) in exc.value.hint
    with pytest.raises(BadInput, match="requires credentials"):
        client(environ={}).resolve(ref(basic_reg.host, "v1", "private/os"))
    env_file = {"REGISTRY_AUTH_FILE": str(good)}
    assert client(environ=env_file).resolve(ref(basic_reg.host, "v1", "private/os")).digest \
        == images.amd64.digest


def test_token_auth(images: Images, tmp_path: Path) -> None:
    users = {"bob": "t0ken-pass"}
    with token_server(tmp_path / "ts", users) as ts, \
            registry(tmp_path / "reg", auth=ts.registry_auth()) as r:
        push(tmp_path, f"oci:{images.layout}:amd", f"{r.host}/private/os:v1",
             creds="bob:t0ken-pass")
        ts.requests.clear()
        cache = BlobCache(tmp_path / "cache")
        auth = write_auth_file(tmp_path / "auth.json", r.host, "bob", "t0ken-pass")
        result = client(auth_file=auth).pull(ref(r.host, "v1", "private/os"), cache)
        assert result.manifest.digest == images.amd64.digest
        # One token for the repository's pull scope, reused for every manifest and blob.
        assert ts.requests == [{"user": "bob", "scope": "repository:private/os:pull"}]

        # A token the registry refuses (expired) is renewed once, transparently.
        ts.requests.clear()
        ts.expired_first = 1
        assert client(auth_file=auth).resolve(ref(r.host, "v1", "private/os")).digest \
            == images.amd64.digest
        assert len(ts.requests) == 2

        bad = write_auth_file(tmp_path / "bad.json", r.host, "bob", "nope")
        with pytest.raises(BadInput, match=f"wrong credentials for {r.host}"):
            client(auth_file=bad).resolve(ref(r.host, "v1", "private/os"))
        with pytest.raises(BadInput, match="requires credentials"):
            client(environ={}).resolve(ref(r.host, "v1", "private/os"))
