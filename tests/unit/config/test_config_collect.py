"""The collector on a scratch root: order, header and size rules, config_url, sources."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from kairos.config.collect import MAX_FILE_SIZE, collect, config_files
from kairos.config.fetch import FetchError, fetch_text
from kairos.config.merge import MergeConflict


def put(root: Path, rel: str, text: str) -> Path:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def cc(body: str) -> str:
    return "#cloud-config\n" + body


def test_precedence_follows_kairos_code_order_then_cmdline(tmp_path: Path) -> None:
    put(tmp_path, "/run/initramfs/live/a.yaml", cc("hostname: live\ndebug: false\narch: a\n"))
    put(tmp_path, "/etc/kairos/a.yaml", cc("hostname: etc\ndebug: true\n"))
    put(tmp_path, "/usr/local/cloud-config/a.yaml", cc("hostname: usrlocal\n"))
    put(tmp_path, "/oem/90_custom.yaml", cc("hostname: oem\n"))
    merged = collect(tmp_path, cmdline="quiet kairos.config=hostname=cmd")
    assert merged.data == {"hostname": "cmd", "debug": True, "arch": "a"}
    assert merged.files == [str(tmp_path / "run/initramfs/live/a.yaml"),
                            str(tmp_path / "etc/kairos/a.yaml"),
                            str(tmp_path / "usr/local/cloud-config/a.yaml"),
                            str(tmp_path / "oem/90_custom.yaml"), "cmdline"]
    assert merged.sources["hostname"] == "cmdline"
    assert merged.sources["debug"] == str(tmp_path / "etc/kairos/a.yaml")
    assert merged.sources["arch"] == str(tmp_path / "run/initramfs/live/a.yaml")
    assert merged.warnings == []


def test_files_in_lexical_order_with_subdirectories_in_place(tmp_path: Path) -> None:
    put(tmp_path, "/oem/10.yaml", cc("name: ten\nusers: [{name: a}]\n"))
    put(tmp_path, "/oem/2.yaml", cc("name: two\nusers: [{name: c}]\n"))
    put(tmp_path, "/oem/1x/sub.yml", cc("name: sub\nusers: [{name: b}]\n"))
    merged = collect(tmp_path, cmdline="")
    assert [u["name"] for u in merged.data["users"]] == ["a", "b", "c"]
    assert merged.data["name"] == "two"
    assert merged.sources["users[1].name"] == str(tmp_path / "oem/1x/sub.yml")
    assert [p.name for p in config_files(tmp_path)] == ["10.yaml", "sub.yml", "2.yaml"]


def test_header_extension_and_shape_rules(tmp_path: Path) -> None:
    put(tmp_path, "/oem/a.yaml", "hostname: noheader\n")
    put(tmp_path, "/oem/b.yaml", "# comment\n" * 9 + "#node-config\nhostname: legacy\n")
    put(tmp_path, "/oem/c.json", cc("hostname: json\n"))
    put(tmp_path, "/oem/d.yaml", "\n" * 10 + "#cloud-config\nhostname: tenth-line\n")
    put(tmp_path, "/oem/e.yaml", cc("- a list\n"))
    put(tmp_path, "/oem/f.yaml", cc("empty: \n"))
    put(tmp_path, "/oem/g.yaml", "#kairos-config\n")
    merged = collect(tmp_path, cmdline="")
    assert merged.data == {"hostname": "legacy", "empty": None}
    skipped = {Path(d.file).name: d for d in merged.warnings}
    assert set(skipped) == {"a.yaml", "d.yaml", "e.yaml"}
    assert "no #cloud-config header" in skipped["a.yaml"].message
    assert (skipped["e.yaml"].line, skipped["e.yaml"].column) == (2, 1)
    assert all(d.severity == "warning" for d in merged.warnings)


def test_size_limit(tmp_path: Path) -> None:
    head = cc("hostname: big\npad: ")
    put(tmp_path, "/oem/a.yaml", head + "x" * (MAX_FILE_SIZE - len(head)))  # exactly 1 MiB
    put(tmp_path, "/oem/b.yaml", cc("arch: x\npad: ") + "y" * MAX_FILE_SIZE)
    merged = collect(tmp_path, cmdline="")
    assert merged.data["hostname"] == "big" and "arch" not in merged.data
    [warning] = merged.warnings
    assert warning.file.endswith("b.yaml") and "larger than 1 MiB" in warning.message


def test_bad_yaml_is_a_warning_with_position_and_others_still_merge(tmp_path: Path) -> None:
    put(tmp_path, "/oem/a.yaml", cc('users:\n- name: "kairos\n'))
    put(tmp_path, "/oem/b.yaml", cc("hostname: ok\n"))
    merged = collect(tmp_path, cmdline="")
    assert merged.data == {"hostname": "ok"}
    [warning] = merged.warnings
    assert (warning.line, warning.column) == (3, 9) and "never closed" in warning.message


def test_type_mismatch_between_files_names_both(tmp_path: Path) -> None:
    a = put(tmp_path, "/etc/kairos/a.yaml", cc("install: {auto: true}\n"))
    b = put(tmp_path, "/oem/b.yaml", cc("install: [auto]\n"))
    with pytest.raises(MergeConflict, match=f"cannot merge install: {a} has a map, {b} has a list"):
        collect(tmp_path, cmdline="")


def test_cmdline_read_from_root_proc(tmp_path: Path) -> None:
    put(tmp_path, "/proc/cmdline", "BOOT_IMAGE=/k console=ttyS0 install.device=/dev/vda\n")
    put(tmp_path, "/oem/a.yaml", cc("install: {auto: true, device: /dev/sda}\n"))
    merged = collect(tmp_path)
    assert merged.data == {"install": {"auto": True, "device": "/dev/vda"}}
    assert merged.sources == {"install": "cmdline", "install.auto": str(tmp_path / "oem/a.yaml"),
                              "install.device": "cmdline"}
    assert merged.get("install.device") == "/dev/vda" and merged.get("nope", 1) == 1
    assert collect(tmp_path, cmdline="").data["install"]["device"] == "/dev/sda"


def test_custom_dirs(tmp_path: Path) -> None:
    put(tmp_path, "/system/oem/a.yaml", cc("hostname: sys\n"))
    put(tmp_path, "/oem/a.yaml", cc("hostname: oem\n"))
    assert collect(tmp_path, cmdline="", dirs=["/system/oem"]).data == {"hostname": "sys"}


# ---- config_url -------------------------------------------------------------------------


def test_config_url_file_is_merged_over_its_source_only(tmp_path: Path) -> None:
    remote = put(tmp_path, "/srv/remote.yaml", cc("hostname: remote\nk3s: {enabled: true}\n"
                                                   "users: [{name: r}]\n"))
    put(tmp_path, "/etc/kairos/a.yaml", cc(f"config_url: file://{remote}\nhostname: a\n"
                                           "users: [{name: a}]\n"))
    put(tmp_path, "/oem/b.yaml", cc("hostname: b\n"))
    merged = collect(tmp_path, cmdline="")
    assert merged.data["hostname"] == "b"  # a later source still wins over the remote
    assert merged.data["k3s"] == {"enabled": True}
    assert [u["name"] for u in merged.data["users"]] == ["a", "r"]
    url = f"file://{remote}"
    assert merged.sources["k3s.enabled"] == url
    assert merged.sources["users[1].name"] == url
    assert merged.sources["users[0].name"] == str(tmp_path / "etc/kairos/a.yaml")
    assert merged.files == [str(tmp_path / "etc/kairos/a.yaml"), url, str(tmp_path / "oem/b.yaml")]


def test_config_url_chain_loop_and_header(tmp_path: Path) -> None:
    two = tmp_path / "two.yaml"
    one = put(tmp_path, "one.yaml", cc(f"config_url: file://{two}\ndebug: true\n"))
    two.write_text(cc(f"config_url: file://{one}\narch: amd64\n"))  # loops back to one
    nohdr = put(tmp_path, "nohdr.yaml", "strict: true\n")
    put(tmp_path, "/oem/a.yaml", cc(f"config_url: file://{one}\n"))
    put(tmp_path, "/oem/b.yaml", cc(f"config_url: file://{nohdr}\n"))
    merged = collect(tmp_path, cmdline="")
    assert merged.data["debug"] is True and merged.data["arch"] == "amd64"
    assert "strict" not in merged.data
    messages = " | ".join(d.message for d in merged.warnings)
    assert "already in the chain" in messages and "no #cloud-config header" in messages


def test_config_url_failures_warn_templates_are_not_fetched_and_fetch_can_be_off(
        tmp_path: Path) -> None:
    remote = put(tmp_path, "r.yaml", cc("arch: x\n"))
    put(tmp_path, "/oem/a.yaml", cc(f"config_url: file://{tmp_path}/missing.yaml\n"))
    put(tmp_path, "/oem/b.yaml", cc("config_url: http://h/{{ .Values.x }}\n"))
    merged = collect(tmp_path, cmdline="", retry_delay=0)
    assert "arch" not in merged.data
    assert [Path(d.file).name for d in merged.warnings] == ["a.yaml", "b.yaml"]
    assert "config_url not fetched" in merged.warnings[0].message
    assert "templates" in merged.warnings[1].message
    put(tmp_path, "/oem/c.yaml", cc(f"config_url: file://{remote}\n"))
    assert "arch" not in collect(tmp_path, cmdline="", fetch=False).data


def test_cmdline_config_url_is_fetched(tmp_path: Path) -> None:
    remote = put(tmp_path, "r.yaml", cc("arch: x\n"))
    merged = collect(tmp_path, cmdline=f"kairos.config_url=file://{remote}")
    assert merged.data == {"config_url": f"file://{remote}", "arch": "x"}
    assert merged.sources["arch"] == f"file://{remote}"


class _Handler(http.server.BaseHTTPRequestHandler):
    pages: ClassVar[dict[str, tuple[int, str]]] = {}
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        status, body = self.pages.get(self.path, (404, "not found"))
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.pages, _Handler.hits = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_config_url_over_http(tmp_path: Path, server: str) -> None:
    _Handler.pages = {"/a.yaml": (200, cc(f"config_url: {server}/b.yaml\nhostname: a\n")),
                      "/b.yaml": (200, cc("hostname: b\nreset: {reboot: true}\n"))}
    put(tmp_path, "/oem/x.yaml", cc(f"config_url: {server}/a.yaml\nhostname: x\n"))
    merged = collect(tmp_path, cmdline="", retry_delay=0)
    assert merged.data["hostname"] == "b"  # each hop is merged over the one before
    assert merged.data["reset"] == {"reboot": True}
    assert merged.sources["hostname"] == f"{server}/b.yaml"
    assert _Handler.hits == ["/a.yaml", "/b.yaml"]


def test_http_failure_is_retried_three_times_then_warned(tmp_path: Path, server: str) -> None:
    put(tmp_path, "/oem/x.yaml", cc(f"config_url: {server}/gone.yaml\nhostname: x\n"))
    merged = collect(tmp_path, cmdline="", retry_delay=0)
    assert merged.data["hostname"] == "x"
    assert _Handler.hits == ["/gone.yaml"] * 3
    [warning] = merged.warnings
    assert "HTTP 404" in warning.message and warning.file.endswith("x.yaml")


def test_fetch_retries_with_injected_delay(server: str) -> None:
    sleeps: list[float] = []
    with pytest.raises(FetchError, match="HTTP 500"):
        _Handler.pages = {"/e": (500, "boom")}
        fetch_text(f"{server}/e", tries=3, delay=0.25, sleep=sleeps.append)
    assert sleeps == [0.25, 0.25] and len(_Handler.hits) == 3
    _Handler.pages = {"/ok": (200, "#cloud-config\n")}
    assert fetch_text(f"{server}/ok", sleep=sleeps.append) == "#cloud-config\n"


def test_injected_fetcher(tmp_path: Path) -> None:
    put(tmp_path, "/oem/x.yaml", cc("config_url: http://example.invalid/c\n"))
    calls: list[str] = []

    def fake(url: str) -> str:
        calls.append(url)
        return cc("hostname: fake\n")

    assert collect(tmp_path, cmdline="", fetcher=fake).data["hostname"] == "fake"
    assert calls == ["http://example.invalid/c"]


def test_validate_adds_schema_findings(tmp_path: Path) -> None:
    f = put(tmp_path, "/oem/90_custom.yaml", cc("hostnam: x\nusers:\n- name: kairos\n"
                                                 "  groups: admin\n"))
    merged = collect(tmp_path, cmdline="", validate=True)
    assert [str(d) for d in merged.warnings] == [
        f"{f}:2:1: warning: hostnam: unknown key (hint: did you mean 'hostname'?)",
        f"{f}:5:3: users[0].groups: expected a list, got a string (hint: write groups: [admin])",
    ]
