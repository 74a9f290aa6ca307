"""A failing step is one short console line; nothing malformed makes run_stage raise."""

from __future__ import annotations

import io
import json
import logging
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kairos.stages import plugins
from kairos.stages.context import Context
from kairos.stages.runner import UrlFetch, failure_line, one_line, plan_stage, run_stage, step_log

from .conftest import RecordingShell, make_root
from .helpers import make_step


def test_one_line_flattens_and_shortens() -> None:
    assert one_line("first\n\n  second  \nthird") == "first | second | third"
    long = one_line("x" * 1000)
    assert len(long) == 300 and long.endswith("…")


def test_failure_line_names_file_step_and_stage() -> None:
    step = make_step(name="bad", commands=["false"])
    op = SimpleNamespace(name="test.yaml.bad", step=step)
    assert failure_line("boot", op, "commands: 'false' exited 1\nmore") == (  # type: ignore[arg-type]
        "test.yaml: step 'bad' (boot) failed: commands: 'false' exited 1 | more")
    op.name = "Named doc.bad"
    assert failure_line("boot.after", op, "x").startswith(  # type: ignore[arg-type]
        "test.yaml: step 'Named doc.bad' (boot.after) failed")


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """A console as early-init sets one up: root logger, WARNING and up, message only."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("kairos-early: %(message)s"))
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)
    yield stream
    root_logger.removeHandler(handler)
    root_logger.setLevel(old_level)


def test_a_failing_step_is_one_short_console_line(root: Path, console: io.StringIO,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "oem").mkdir()
    (root / "oem/10.yaml").write_text("""stages:
  boot:
  - name: bad-file
    files:
    - {path: /a, content: "abc", encoding: base64}
    - {path: /b, content: "abcde", encoding: base64}
  - name: crash
    directories: [{path: /d}]
  - name: fine
    files: [{path: /ok, content: ok}]
""")
    real_load = plugins.load

    def load(name: str) -> Any:
        if name != "directories":
            return real_load(name)

        def apply(step: Any, ctx: Any) -> None:
            raise ZeroDivisionError("division by zero")
        return SimpleNamespace(apply=apply)

    monkeypatch.setattr(plugins, "load", load)
    report = run_stage("boot", root=root, cmdline="")
    assert [r.name for r in report.failed] == ["/oem/10.yaml.bad-file", "/oem/10.yaml.crash"]
    assert (root / "ok").read_text() == "ok"
    lines = console.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(r"kairos-early: /oem/10\.yaml: step 'bad-file' \(boot\) failed: "
                        r"files: /a: content is not valid base64.*; /b: .*", lines[0])
    assert lines[1] == ("kairos-early: /oem/10.yaml: step 'crash' (boot) failed: directories: "
                        "internal error ZeroDivisionError: division by zero")
    assert "Traceback" not in console.getvalue()


def test_plugin_item_messages_stay_in_the_log(root: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    # the per-item message still reaches the log file, at info level
    (root / "oem").mkdir()
    (root / "oem/10.yaml").write_text(
        "stages:\n  boot:\n  - files: [{path: /a, content: abc, encoding: base64}]\n")
    with caplog.at_level(logging.DEBUG):
        run_stage("boot", root=root, cmdline="")
    items = [r for r in caplog.records if r.name == step_log.name]
    assert [(r.levelno, r.getMessage()[:12]) for r in items] == [(logging.INFO, "files: /a: c")]


# -- nothing malformed raises -------------------------------------------------------------
# Documents are drawn as plausible stage files in which any part may be swapped for garbage
# (wrong types, odd strings, huge numbers), so most of them reach the plugins.

STAGES = ["boot", "boot", "boot.before", "boot.after", "network"]

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
               max_size=12) | st.sampled_from(
    ["", "/", "root", "kairos", "github:x", "{{ .Values.node.hostname }}", "{{", "{{ x }}",
     "0755", "true", "%", "a\nb", "\x00"])
leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | text
garbage = st.recursive(leaf, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(text | st.integers(-3, 3), inner, max_size=3),
                       max_leaves=10)
paths = st.sampled_from(["/etc/x", "/etc/passwd", "/etc/hosts", "/tmp/a", "/a/b/c", "/", "",
                         "../../../x", "relative", "/etc/x/../../y", "/dev/null"]) | text.map(
    lambda t: "/" + t)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly `strategy`, sometimes garbage in its place."""
    return st.one_of(strategy, strategy, strategy, garbage)


def some(mapping: dict[str, st.SearchStrategy[Any]], max_keys: int = 4
         ) -> st.SearchStrategy[dict[str, Any]]:
    keys = sorted(mapping)
    return st.lists(st.sampled_from(keys), max_size=max_keys, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({k: maybe(mapping[k]) for k in chosen}))


names = st.sampled_from(["root", "kairos", "nobody", "daemon", "new-user", "", "0"]) | text
modes = st.integers(0, 0o7777) | st.sampled_from(["0644", "755", "rwx"])
entries = some({"path": paths, "content": text, "encoding": st.sampled_from(
    ["", "b64", "base64", "gz", "gzip", "gz+b64", "gz+base64", "bogus"]),
    "permissions": modes, "owner": names | st.integers(-1, 70000), "group": names,
    "owner_string": names}, 6)
user = some({"passwd": text, "groups": st.lists(names, max_size=3), "homedir": paths,
             "uid": st.integers(-1, 2**33), "shell": paths, "lock_passwd": st.booleans(),
             "ssh_authorized_keys": st.lists(text, max_size=2), "primary_group": names,
             "no_create_home": st.booleans(), "system": st.booleans(), "gecos": text,
             "name": names})
SAFE_PLUGINS: dict[str, st.SearchStrategy[Any]] = {
    "files": st.lists(entries, max_size=3),
    "directories": st.lists(entries, max_size=3),
    "commands": st.lists(text, max_size=3),
    "environment": st.dictionaries(text, leaf, max_size=3),
    "environment_file": paths,
    "hostname": text,
    "users": st.dictionaries(names, user, max_size=2),
    "ensure_entities": st.lists(some({"path": paths, "entity": text}), max_size=2),
    "delete_entities": st.lists(some({"path": paths, "entity": text}), max_size=2),
    "dns": some({"nameservers": st.lists(text, max_size=2), "search": st.lists(text),
                 "options": st.lists(text), "path": paths}),
    "timesyncd": st.dictionaries(text, leaf, max_size=2),
    "authorized_keys": st.dictionaries(names, st.lists(text, max_size=2), max_size=2),
    "systemctl": some({"enable": st.lists(text, max_size=2), "disable": st.lists(text),
                       "mask": st.lists(text), "overrides": st.lists(
                           some({"service": text, "name": text, "content": text}),
                           max_size=2)}),
}
CONDITIONS: dict[str, st.SearchStrategy[Any]] = {
    "name": text, "if": text, "node": text, "only_os": text, "only_os_version": text,
    "only_arch": text, "only_service_manager": st.sampled_from(["systemd", "openrc", "x"]),
    "if_files": st.dictionaries(st.sampled_from(["any", "all", "none"]) | text,
                                st.lists(paths, max_size=2), max_size=2),
    "after": st.lists(some({"name": text}) | text, max_size=2),
}
# for the dry run: every plugin key, with garbage payloads (plugins do not run then)
ALL_PLUGINS: dict[str, st.SearchStrategy[Any]] = {
    **{k: garbage for k in sorted(plugins.PLUGIN_KEYS)}, **SAFE_PLUGINS}


def documents(plugin_payloads: dict[str, st.SearchStrategy[Any]]
              ) -> st.SearchStrategy[dict[str, Any]]:
    step = some({**plugin_payloads, **CONDITIONS}, 5)
    stage_map = st.dictionaries(st.one_of(*[st.sampled_from(STAGES)] * 3, text),
                                maybe(st.lists(maybe(step), min_size=1, max_size=4)),
                                min_size=1, max_size=3)
    cloud_init = {"users": st.lists(user, max_size=2), "runcmd": st.lists(text, max_size=2),
                  "write_files": st.lists(entries, max_size=2), "hostname": text,
                  "ssh_authorized_keys": st.lists(text, max_size=2)}
    return some({"name": text, "stages": stage_map, **cloud_init}, 4)


def scratch() -> tuple[tempfile.TemporaryDirectory[str], Context]:
    tmp = tempfile.TemporaryDirectory(prefix="kairos-hyp-")
    root = make_root(Path(tmp.name) / "root")
    ctx = Context(root=root, logger=step_log, shell=RecordingShell(root),
                  key_urls={"github": "http://127.0.0.1:9/{user}",
                            "gitlab": "http://127.0.0.1:9/{user}"}, http_timeout=0.5)
    return tmp, ctx


QUIET = settings(max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@QUIET
@given(docs=st.lists(documents(ALL_PLUGINS) | garbage, max_size=3))
def test_any_documents_plan_and_dry_run_without_raising(docs: list[Any]) -> None:
    tmp, ctx = scratch()
    with tmp:
        extra = [(f"doc{i}", d) for i, d in enumerate(docs)]
        report = run_stage("boot", root=ctx.root, extra_docs=extra, dry_run=True, ctx=ctx,
                           cmdline="")
        json.dumps(report.to_json())
        plan_stage("boot", root=ctx.root, extra_docs=extra, cmdline="")


@QUIET
@given(docs=st.lists(documents(SAFE_PLUGINS), min_size=1, max_size=3))
def test_malformed_documents_really_run_without_raising(docs: list[Any]) -> None:
    tmp, ctx = scratch()
    with tmp:
        extra = [(f"doc{i}", d) for i, d in enumerate(docs)]
        report = run_stage("boot", root=ctx.root, extra_docs=extra, ctx=ctx, cmdline="")
        for result in report.failed:
            assert result.detail and "\n" not in one_line(result.detail)


cmdline_token = st.sampled_from(["stages", "stages.boot", "stages.boot[0]", "stages.boot.0",
                                 "kairos.config=stages.boot[0]", "kairos.config", "cos.setup",
                                 "config_url", "kairos.config_url", "quiet", "="]).flatmap(
    lambda head: st.tuples(st.just(head), st.sampled_from(["", ".", "[", "]", "=", ".files[0]",
                                                           ".commands[0]", ".name", "[99999]"]),
                           text).map(lambda t: "".join(t)))


@QUIET
@given(tokens=st.lists(cmdline_token | text, max_size=6))
def test_any_kernel_cmdline_runs_without_raising(tokens: list[str]) -> None:
    tmp, ctx = scratch()
    with tmp:
        line = " ".join(tokens)
        run_stage("boot", root=ctx.root, ctx=ctx, cmdline=line,
                  url_fetch=UrlFetch(enabled=False))
        plan_stage("boot", root=ctx.root, cmdline=line, url_fetch=UrlFetch(enabled=False))


# -- the runner's own guards (what a bug in the loader, the ordering or a filter does) ------

TWO_FILES = {"/oem/01.yaml": "stages:\n  boot:\n  - name: one\n    files: [{path: /one, content: x}]\n",
             "/oem/02.yaml": "stages:\n  boot:\n  - name: two\n    files: [{path: /two, content: x}]\n"}


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def test_a_loader_crash_costs_only_the_document_that_caused_it(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kairos.stages import runner

    write_files(root, TWO_FILES)
    real_load_file = runner.load_file

    def load_file(path: Path, source: str) -> Any:
        if source == "/oem/01.yaml":
            raise RecursionError("maximum recursion depth exceeded")
        return real_load_file(path, source)

    def load_docs(*args: Any, **kwargs: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(runner, "load_docs", load_docs)
    monkeypatch.setattr(runner, "load_file", load_file)
    report = run_stage("boot", root=root, cmdline="stages.boot[0].name=c")
    assert [r.name for r in report.run] == ["/oem/02.yaml.two", "cmdline.c"]
    assert any(w.startswith("/oem/01.yaml: cannot be read (RecursionError") for w in
               report.warnings)


def test_an_ordering_crash_falls_back_to_file_order(root: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from kairos.stages import runner

    write_files(root, TWO_FILES)

    def order(ops: Any) -> Any:
        raise KeyError("x")

    monkeypatch.setattr(runner, "order", order)
    report = run_stage("boot", root=root, cmdline="")
    assert [r.name for r in report.run] == ["/oem/01.yaml.one", "/oem/02.yaml.two"]
    assert any("steps run in file order" in w for w in report.warnings)

    def build_ops(stage: str, docs: Any) -> Any:
        raise ValueError("bad")

    monkeypatch.setattr(runner, "build_ops", build_ops)
    report = run_stage("boot", root=root, cmdline="")
    assert report.results == []
    assert any(w.startswith("stage boot skipped") for w in report.warnings)


def test_a_filter_crash_skips_the_step(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kairos.stages import runner

    write_files(root, TWO_FILES)

    def skip_reason(cond: Any, ctx: Any) -> Any:
        raise IndexError("list index out of range")

    monkeypatch.setattr(runner, "skip_reason", skip_reason)
    report = run_stage("boot", root=root, cmdline="")
    assert [r.status for r in report.results] == ["skipped", "skipped"]
    assert "internal error IndexError" in report.results[0].detail
    assert not (root / "one").exists()
