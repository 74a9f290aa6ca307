"""run-stage's kernel command line sources: config_url documents and dot-notation stages."""

from __future__ import annotations

import argparse
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kairos.cli import stages_cmd
from kairos.errors import KairosError
from kairos.stages.context import Context
from kairos.stages.runner import (
    CMDLINE_SOURCE,
    StageReport,
    UrlFetch,
    cmdline_docs,
    plan_stage,
)
from kairos.stages.runner import run_stage as _run_stage

FAST = UrlFetch(timeout=2.0, tries=1, delay=0.0)


def run_stage(stage: str, *, root: Path, **kwargs: Any) -> StageReport:
    kwargs.setdefault("url_fetch", FAST)
    return _run_stage(stage, root=root, ctx=Context(root=root, host_commands=True), **kwargs)


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


FILE_STAGE = "stages:\n  boot:\n  - name: from-file\n    files: [{path: /order, content: file}]\n"


def remote(name: str, path: str, content: str, config_url: str = "") -> str:
    text = (f"#cloud-config\nname: {name}\nstages:\n  boot:\n  - name: write\n"
            f"    files: [{{path: {path}, content: {content}}}]\n")
    return text + (f"config_url: {config_url}\n" if config_url else "")


# -- dot notation -------------------------------------------------------------------------

def test_dot_notation_stages_run_after_the_files(root: Path) -> None:
    write(root, "/oem/10.yaml", FILE_STAGE)
    cmdline = ("BOOT_IMAGE=/vmlinuz console=ttyS0 quiet "
               "stages.boot[0].files[0].path=/order stages.boot[0].files[0].content=cmdline "
               "stages.boot[0].name=keys")
    report = run_stage("boot", root=root, cmdline=cmdline)
    assert [(r.name, r.source) for r in report.run] == [
        ("/oem/10.yaml.from-file", "/oem/10.yaml"), ("cmdline.keys", CMDLINE_SOURCE)]
    assert (root / "order").read_text() == "cmdline"  # it ran last


def test_kairos_config_form(root: Path) -> None:
    cmdline = ('kairos.config=stages.boot[0].files[0].path=/made '
               'kairos.config=stages.boot[0].files[0].content=a '
               '"kairos.config=stages.boot[1].commands[0]=touch $ROOT/hi"')
    report = run_stage("boot", root=root, cmdline=cmdline)
    # two unnamed steps share the name "": yip then names them ".<index>", hence the dots
    assert [(r.stage, r.name) for r in report.run] == [("boot", "cmdline..0"),
                                                       ("boot", "cmdline..1")]
    assert (root / "made").read_text() == "a"
    assert (root / "hi").exists()


def test_dotted_stage_names_cannot_be_given_in_dot_notation(root: Path) -> None:
    # `boot.after` splits into boot -> after, as in Kairos: a shape error, skipped
    report = run_stage("boot", root=root, cmdline="stages.boot.after[0].commands[0]=true")
    assert report.results == []
    assert any("stages.boot must be a list of steps" in w for w in report.warnings)


def test_authorized_keys_example_from_the_docs(root: Path) -> None:
    cmdline = "stages.boot[0].authorized_keys.root[0]=github:mudler"
    plan = plan_stage("boot", root=root, cmdline=cmdline)
    assert [(p.name, p.source, p.plugins) for p in plan] == [
        ("cmdline.0", CMDLINE_SOURCE, ["authorized_keys"])]


def test_none_reads_root_proc_cmdline_and_empty_means_none(root: Path) -> None:
    write(root, "/proc/cmdline", "quiet stages.fs[0].files[0].path=/fs "
          "stages.fs[0].files[0].content=x\n")
    assert [r.name for r in run_stage("fs", root=root).run] == ["cmdline.0"]
    assert (root / "fs").read_text() == "x"
    (root / "fs").unlink()
    assert run_stage("fs", root=root, cmdline="").results == []
    assert not (root / "fs").exists()


def test_a_plain_kernel_cmdline_adds_nothing(root: Path) -> None:
    docs, warnings = cmdline_docs("BOOT_IMAGE=/boot/vmlinuz root=LABEL=COS_ACTIVE quiet "
                                  "rd.neednet=1 console=tty1", Context(root=root))
    assert docs == [] and warnings == []


def test_malformed_cmdline_stages_are_skipped_not_fatal(root: Path) -> None:
    write(root, "/oem/10.yaml", FILE_STAGE)
    report = run_stage("boot", root=root, cmdline="stages.boot.0=x stages.boot[1.name=y")
    assert [r.name for r in report.run] == ["/oem/10.yaml.from-file"]
    assert any("step must be a mapping" in w for w in report.warnings)


# -- config_url ---------------------------------------------------------------------------

def test_config_url_file_chain_runs_after_files_before_dot_notation(root: Path,
                                                                    tmp_path: Path) -> None:
    second = write(tmp_path, "srv/second.yaml", remote("second", "/second", "2"))
    first = write(tmp_path, "srv/first.yaml",
                  remote("first", "/first", "1", config_url=second.as_uri()))
    write(root, "/oem/10.yaml", FILE_STAGE)
    cmdline = (f"config_url={first.as_uri()} stages.boot[0].files[0].path=/dot "
               "stages.boot[0].files[0].content=d")
    report = run_stage("boot", root=root, cmdline=cmdline)
    assert [(r.name, r.source) for r in report.run] == [
        ("/oem/10.yaml.from-file", "/oem/10.yaml"),
        ("first.write", first.as_uri()),
        ("second.write", second.as_uri()),
        ("cmdline.0", CMDLINE_SOURCE)]
    assert [(root / n).read_text() for n in ("first", "second", "dot")] == ["1", "2", "d"]


def test_config_url_loop_is_fetched_once_with_a_warning(tmp_path: Path, root: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(remote("a", "/a", "a", config_url=b.as_uri()))
    b.write_text(remote("b", "/b", "b", config_url=a.as_uri()))
    docs, warnings = cmdline_docs(f"kairos.config_url={a.as_uri()}", Context(root=root), FAST)
    assert [d.source for d in docs] == [a.as_uri(), b.as_uri()]
    assert len(warnings) == 1 and "loops" in warnings[0]


def test_templated_config_url_is_rendered(tmp_path: Path, root: Path) -> None:
    # conftest's os-release says ID=debian
    target = write(tmp_path, "debian.yaml", remote("t", "/t", "t"))
    url = (tmp_path / "{{ .Values.os.vendor }}.yaml").as_uri().replace("%7B", "{").replace(
        "%7D", "}").replace("%20", " ")
    docs, warnings = cmdline_docs(f'"kairos.config_url={url}"', Context(root=root), FAST)
    assert warnings == [] and [d.source for d in docs] == [url]
    assert docs[0].data["name"] == "t" and docs[0].cloud_config and target.exists()


def test_missing_file_url_is_a_warning(root: Path, tmp_path: Path) -> None:
    write(root, "/oem/10.yaml", FILE_STAGE)
    missing = (tmp_path / "nope.yaml").as_uri()
    report = run_stage("boot", root=root, cmdline=f"config_url={missing}", strict=True)
    assert [r.name for r in report.run] == ["/oem/10.yaml.from-file"]
    assert any(w.startswith(f"config_url {missing} (from {CMDLINE_SOURCE}): not fetched")
               for w in report.warnings)


def test_fetching_can_be_turned_off(tmp_path: Path, root: Path) -> None:
    doc = write(tmp_path, "d.yaml", remote("d", "/d", "d"))
    docs, warnings = cmdline_docs(f"config_url={doc.as_uri()}", Context(root=root),
                                  UrlFetch(enabled=False))
    assert docs == [] and warnings == []


class Served:
    """An http.server on 127.0.0.1 serving a dict of path -> (status, body)."""

    def __init__(self, pages: dict[str, tuple[int, str]]) -> None:
        self.pages = pages
        self.requests: list[str] = []
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.requests.append(self.path)
                status, body = served.pages.get(self.path, (404, "not found"))
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@pytest.fixture
def http() -> Iterator[Served]:
    served = Served({})
    served.thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


def test_config_url_over_http(http: Served, root: Path) -> None:
    http.pages["/next.yaml"] = (200, remote("next", "/next", "n"))
    http.pages["/config.yaml"] = (200, remote("http", "/http", "h",
                                              config_url=http.url("/next.yaml")))
    report = run_stage("boot", root=root, cmdline=f"quiet config_url={http.url('/config.yaml')}")
    assert [r.name for r in report.run] == ["http.write", "next.write"]
    assert (root / "http").read_text() == "h" and (root / "next").read_text() == "n"
    assert http.requests == ["/config.yaml", "/next.yaml"]


def test_templated_http_url_has_its_values_query_escaped(http: Served, root: Path) -> None:
    # conftest's os-release: PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
    http.pages["/c?os=Debian+GNU%2FLinux+12+%28bookworm%29"] = (200, remote("q", "/q", "q"))
    cmdline = f'"kairos.config_url={http.url("/c")}?os={{{{ .Values.os.name }}}}"'
    docs, warnings = cmdline_docs(cmdline, Context(root=root), FAST)
    assert warnings == [] and [d.data["name"] for d in docs] == ["q"]


def test_unrenderable_url_template_is_a_warning(http: Served, root: Path) -> None:
    cmdline = f'"config_url={http.url("/c")}?x={{{{ .Values.no.such }}}}"'
    docs, warnings = cmdline_docs(cmdline, Context(root=root), FAST)
    assert docs == [] and "template not rendered" in warnings[0] and http.requests == []


def test_http_errors_are_warnings_and_retries_are_bounded(http: Served, root: Path) -> None:
    write(root, "/oem/10.yaml", FILE_STAGE)
    report = run_stage("boot", root=root, cmdline=f"config_url={http.url('/gone.yaml')}",
                       url_fetch=UrlFetch(timeout=2.0, tries=3, delay=0.0))
    assert report.ok and [r.name for r in report.run] == ["/oem/10.yaml.from-file"]
    assert http.requests == ["/gone.yaml"] * 3
    assert any("HTTP 404" in w for w in report.warnings)


def test_invalid_remote_yaml_is_a_warning(http: Served, root: Path) -> None:
    http.pages["/bad.yaml"] = (200, "#cloud-config\nstages: [\n")
    docs, warnings = cmdline_docs(f"config_url={http.url('/bad.yaml')}", Context(root=root),
                                  FAST)
    assert docs == [] and "invalid YAML" in warnings[0]


def test_unreachable_and_silent_servers_end_with_a_warning(root: Path) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    docs, warnings = cmdline_docs(f"config_url=http://127.0.0.1:{port}/x", Context(root=root),
                                  FAST)
    assert docs == [] and "not fetched" in warnings[0]
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/x"
        docs, warnings = cmdline_docs(f"config_url={url}", Context(root=root),
                                      UrlFetch(timeout=0.2, tries=1))
    assert docs == [] and "timed out" in warnings[0]


# -- the CLI ------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kairos")
    stages_cmd.register(parser.add_subparsers())
    try:
        args = parser.parse_args(argv)
        return int(args.func(args))
    except KairosError as exc:
        return exc.exit_code


def test_analyze_shows_cmdline_steps_with_their_source(root: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    write(root, "/oem/10.yaml", FILE_STAGE)
    doc = write(tmp_path, "r.yaml", remote("remote", "/r", "r"))
    cmdline = f"config_url={doc.as_uri()} stages.boot[0].commands[0]=true"
    assert main(["run-stage", "boot", "--root", str(root), "-a", "--cmdline", cmdline]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["  1. [boot] /oem/10.yaml.from-file  (files)",
                     f"  2. [boot] remote.write  (files)  from {doc.as_uri()}",
                     f"  3. [boot] cmdline.0  (commands)  from {CMDLINE_SOURCE}"]
    assert main(["run-stage", "boot", "--root", str(root), "-a", "--json", "--cmdline",
                 cmdline, "--url-tries", "0"]) == 0
    steps = json.loads(capsys.readouterr().out)
    assert [(s["name"], s["source"]) for s in steps] == [
        ("/oem/10.yaml.from-file", "/oem/10.yaml"), ("cmdline.0", CMDLINE_SOURCE)]
    assert not (root / "r").exists()


def test_cli_runs_cmdline_stages_and_checks_fetch_flags(root: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    cmdline = "stages.boot[0].files[0].path=/cli stages.boot[0].files[0].content=c"
    assert main(["run-stage", "boot", "--root", str(root), "--cmdline", cmdline,
                 "--url-timeout", "1.5", "--url-tries", "1"]) == 0
    assert (root / "cli").read_text() == "c"
    for bad in (["--url-timeout", "0"], ["--url-timeout", "x"], ["--url-tries", "11"],
                ["--url-tries", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            main(["run-stage", "boot", "--root", str(root), *bad])
        assert exit_.value.code == 2
    capsys.readouterr()


def test_cli_fetch_options() -> None:
    parser = argparse.ArgumentParser()
    stages_cmd.register(parser.add_subparsers())
    default = stages_cmd.url_fetch(parser.parse_args(["run-stage", "boot"]))
    assert default == UrlFetch()
    assert default.timeout <= 5 and default.tries <= 2  # a boot must not wait long
    off = stages_cmd.url_fetch(parser.parse_args(["run-stage", "boot", "--url-tries", "0"]))
    assert not off.enabled
    custom = stages_cmd.url_fetch(parser.parse_args(
        ["run-stage", "boot", "--url-timeout", "0.5", "--url-tries", "4"]))
    assert (custom.timeout, custom.tries, custom.enabled) == (0.5, 4, True)
