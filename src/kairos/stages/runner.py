"""Run a stage: STAGE.before, STAGE, STAGE.after, over every stage file, step by step.

A step runs when its conditionals pass; then its plugins run in yip's order. A failing plugin
is logged and the rest go on (a device must finish booting), unless `strict` is set, in which
case the first failure raises KairosError naming the step. With `strict` off nothing in the
stage files, extra documents or kernel command line makes `run_stage` raise.

Sources, in run order: the stage files (`dirs`), the caller's `extra_docs`, then the kernel
command line as Kairos's run-stage reads it: the documents at `config_url=` /
`kairos.config_url=` (followed when they name another config_url), and the dot-notation
stages (`stages.boot[0].commands[0]=...`, also inside `kairos.config=`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from kairos.errors import BadInput, KairosError
from kairos.stages import plugins
from kairos.stages.conditionals import skip_reason
from kairos.stages.context import Context
from kairos.stages.graph import Op, build_ops, order
from kairos.stages.loader import (
    DEFAULT_DIRS,
    Loaded,
    is_cloud_config,
    load_docs,
    load_file,
    parse_yaml,
    stage_files,
)
from kairos.stages.model import StageDoc, parse_doc

log = logging.getLogger("kairos.stages")

Status = Literal["ok", "skipped", "failed"]
@dataclass
class SourceDoc:
    """A document from the kernel command line. `cloud_config` as for a file: on when the
    text had the #cloud-config header (yip maps cloud-init keys only then)."""

    source: str
    data: dict[str, Any]
    cloud_config: bool = False

CMDLINE_NAME = "cmdline"             # the `name` of the document the cmdline stages form
CMDLINE_SOURCE = "kernel cmdline"    # its source, as --analyze and the report show it
MAX_URL_CHAIN = 10                   # config_url -> config_url -> ...: stop loops and runaways
DETAIL_CHARS = 300                   # a failure line on the boot console stays short


@dataclass(frozen=True)
class UrlFetch:
    """How a config_url from the kernel command line is fetched. Short by default: in early
    boot the network is often not up yet, and a boot must not wait for it."""

    timeout: float = 5.0   # seconds per try
    tries: int = 2
    delay: float = 0.5     # seconds between tries
    enabled: bool = True


@dataclass
class PlannedStep:
    """One step as it will run: where it comes from, its filters and its plugins."""

    stage: str       # e.g. "boot.before"
    name: str        # op name: "<doc name or file path>.<step name or index>"
    source: str
    plugins: list[str]
    conditions: list[str]
    after: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepResult:
    stage: str
    name: str
    source: str
    status: Status
    detail: str = ""
    plugins: list[str] = field(default_factory=list)


@dataclass
class StageReport:
    stage: str
    results: list[StepResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def run(self) -> list[StepResult]:
        return [r for r in self.results if r.status == "ok"]

    @property
    def skipped(self) -> list[StepResult]:
        return [r for r in self.results if r.status == "skipped"]

    @property
    def failed(self) -> list[StepResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        return (f"stage {self.stage}: {len(self.run)} steps run, {len(self.skipped)} skipped, "
                f"{len(self.failed)} failed")

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "ok": self.ok, "results": [asdict(r) for r in self.results],
                "warnings": list(self.warnings)}


# Where boot-time stage runs leave their reports (below the root; /run is a tmpfs, so they
# describe this boot). `kairos state` reads them back.
REPORT_DIR = "run/kairos/stages"
RUNNER_STEP = "run-stage"  # the name of the step a report gets when the runner itself broke


def report_path(stage: str, root: Path = Path("/")) -> Path:
    """ROOT/run/kairos/stages/<stage>.json (a stage name is made a plain file name)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", stage).lstrip(".") or "_"
    return root / REPORT_DIR / f"{name}.json"


def crashed_report(stage: str, exc: BaseException) -> StageReport:
    """The report of a stage run that broke off: one failed step naming the error."""
    detail = f"the stage runner failed: {type(exc).__name__}: {exc}"
    return StageReport(stage=stage, results=[StepResult(
        stage=stage, name=RUNNER_STEP, source="kairos", status="failed", detail=one_line(detail))])


def save_report(report: StageReport, root: Path = Path("/")) -> Path | None:
    """Write `report` atomically to ROOT/run/kairos/stages/<stage>.json, with the time it was
    written. Never raises (a boot goes on): a problem is logged and None returned."""
    from kairos.safefs import write_file_atomic

    path = report_path(report.stage, root)
    data = {**report.to_json(), "finished": round(time.time(), 3)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(path, (json.dumps(data, indent=1) + "\n").encode(), mode=0o644)
    except (OSError, KairosError) as exc:
        log.warning("cannot record the report of stage %s in %s: %s", report.stage, path, exc)
        return None
    return path


class _PluginFailureFilter(logging.Filter):
    """Plugins log each failed item (`Failures.add`: "<plugin>: <what>") at warning level,
    and the runner then logs the step's failure with the same text plus file and step name.
    On the boot console that is one line per failure, not two: the plugin's copy drops to info
    (it still reaches the log file)."""

    names = frozenset(name for name, _ in plugins.ORDER)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (record.levelno == logging.WARNING and record.msg == "%s: %s"
                and isinstance(args, tuple) and len(args) == 2 and args[0] in self.names):
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


# The logger the plugins of a run_stage without a caller-given Context write to.
step_log = logging.getLogger("kairos.stages.step")
step_log.addFilter(_PluginFailureFilter())


def substages(stage: str) -> tuple[str, str, str]:
    return (f"{stage}.before", stage, f"{stage}.after")


def one_line(text: str, limit: int = DETAIL_CHARS) -> str:
    """`text` on one line of at most `limit` characters (command output can be long)."""
    flat = " | ".join(part.strip() for part in text.splitlines() if part.strip())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def failure_line(sub: str, op: Op, detail: str) -> str:
    """`<file>: step '<name>' (<stage>) failed: <reason>`, the name without the file prefix."""
    source = op.step.source
    name = op.name.removeprefix(f"{source}.") if source else op.name
    return f"{source or '?'}: step '{name}' ({sub}) failed: {one_line(detail)}"


# -- kernel command line ------------------------------------------------------------------

def _url_escaped(value: Any) -> Any:
    """Template values URL-escaped, as Kairos renders a templated config_url."""
    from urllib.parse import quote_plus

    if isinstance(value, dict):
        return {k: _url_escaped(v) for k, v in value.items()}
    return quote_plus(value) if isinstance(value, str) else value


def _render_url(url: str, ctx: Context) -> str:
    """config_url with `{{ .Values.product.uuid }}` and the like filled in; raises
    KairosError when the template cannot be rendered (the URL would be wrong)."""
    if "{{" not in url:
        return url
    from kairos.stages.template import TemplateError, render

    try:
        return render(url, {"Values": _url_escaped(ctx.values())})
    except TemplateError as exc:
        raise KairosError(f"template not rendered ({exc})", "write the URL out in full") from None


def url_docs(url: str, ctx: Context, fetch: UrlFetch, warnings: list[str]) -> list[SourceDoc]:
    """The documents of a config_url chain, first URL first. Problems end the chain and
    become warnings: a missing network or server must not stop a boot."""
    from kairos.config.fetch import fetch_text

    docs: list[SourceDoc] = []
    seen: list[str] = []
    next_url: str | None = url.strip()
    while next_url:
        origin = seen[-1] if seen else CMDLINE_SOURCE
        if next_url in seen or len(seen) >= MAX_URL_CHAIN:
            warnings.append(f"config_url {next_url} (from {origin}): not fetched, the chain "
                            f"loops or is longer than {MAX_URL_CHAIN}")
            break
        seen.append(next_url)
        try:
            text = fetch_text(_render_url(next_url, ctx), tries=fetch.tries, delay=fetch.delay,
                              timeout=fetch.timeout)
        except KairosError as exc:
            warnings.append(f"config_url {next_url} (from {origin}): not fetched: {exc.message}")
            break
        data, problem = parse_yaml(text, next_url)
        if problem:
            warnings.append(problem)
            break
        if data is None:
            data = {}
        if not isinstance(data, dict):
            warnings.append(f"{next_url}: the top level is not a map of keys; ignored")
            break
        docs.append(SourceDoc(next_url, data, is_cloud_config(text)))
        log.info("config_url %s: read (from %s)", next_url, origin)
        value = data.get("config_url")
        next_url = value.strip() if isinstance(value, str) else None
    return docs


def _may_hold_config(text: str) -> bool:
    # most command lines have none of these: skip loading the config schema on those boots
    return any(word in text for word in ("stages", "config_url", "kairos.config", "cos.setup"))


def _read_cmdline(root: Path) -> str:
    # Not kairos.config.collect's: importing that module costs seconds on a slow boot CPU.
    try:
        return (root / "proc/cmdline").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cmdline_docs(cmdline: str | None, ctx: Context, fetch: UrlFetch | None = None
                 ) -> tuple[list[SourceDoc], list[str]]:
    """Documents from the kernel command line (None: ROOT/proc/cmdline, if present), in run
    order: the config_url chain, then the dot-notation stages as a document named "cmdline".
    Never raises; problems come back as warnings."""
    fetch = fetch or UrlFetch()
    warnings: list[str] = []
    docs: list[SourceDoc] = []
    try:
        text = _read_cmdline(ctx.root) if cmdline is None else cmdline
        if not text.strip() or not _may_hold_config(text):
            return docs, warnings
        from kairos.config.cmdline import parse_cmdline

        parsed = parse_cmdline(text)
        url = parsed.get("config_url")
        if isinstance(url, str) and url.strip():
            if fetch.enabled:
                docs.extend(url_docs(url, ctx, fetch, warnings))
            else:
                log.info("config_url %s on the kernel command line: not fetched (disabled)", url)
        if "stages" in parsed:
            # plain yip stages, as Kairos runs them (no cloud-init key mapping)
            docs.append(SourceDoc(CMDLINE_SOURCE,
                                  {"name": CMDLINE_NAME, "stages": parsed["stages"]}))
    except Exception as exc:  # a bug here must not stop a boot; the files still run
        log.debug("reading the kernel command line failed", exc_info=True)
        warnings.append(f"kernel command line ignored: {type(exc).__name__}: {exc}")
    return docs, warnings


# -- loading and planning -----------------------------------------------------------------

def _guarded(source: str, build: Callable[[], StageDoc]) -> StageDoc:
    try:
        return build()
    except Exception as exc:
        log.debug("loading %s failed", source, exc_info=True)
        doc = StageDoc(source=source)
        doc.errors.append(f"{source}: cannot be read ({type(exc).__name__}: {exc}); ignored")
        return doc


def _load(root: Path, dirs: Sequence[str] | None,
          extra_docs: Sequence[tuple[str, dict[str, Any]]],
          cmdline: Sequence[SourceDoc] = ()) -> Loaded:
    """load_docs, then the kernel command line's documents. Should loading hit a bug, the
    sources are loaded one by one so that one document's problem does not hide the others."""
    try:
        loaded = load_docs(root, dirs, extra_docs)
    except Exception:
        log.debug("loading stage documents failed; loading them one by one", exc_info=True)
        loaded = Loaded()
        for path, source in stage_files(root, DEFAULT_DIRS if dirs is None else dirs):
            loaded.docs.append(_guarded(source, partial(load_file, path, source)))
        for source, data in extra_docs:
            loaded.docs.append(_guarded(source, partial(parse_doc, data, source,
                                                        cloud_config=True)))
        done = 0
    else:
        done = len(loaded.docs)
    for extra in cmdline:
        loaded.docs.append(_guarded(extra.source, partial(
            parse_doc, extra.data, extra.source, cloud_config=extra.cloud_config)))
    for doc in loaded.docs[done:]:
        loaded.errors.extend(doc.errors)
        loaded.warnings.extend(doc.warnings)
    return loaded


def _plan(stage: str, loaded: Loaded) -> tuple[list[tuple[str, Op]], list[str]]:
    """(stage name, op) pairs in run order for STAGE.before/STAGE/STAGE.after, and warnings."""
    warnings: list[str] = []
    planned: list[tuple[str, Op]] = []
    for sub in substages(stage):
        try:
            ops = build_ops(sub, loaded.docs)
        except Exception as exc:  # an ordering bug: skip the substage rather than the boot
            log.debug("planning %s failed", sub, exc_info=True)
            warnings.append(f"stage {sub} skipped: its steps could not be ordered "
                            f"({type(exc).__name__}: {exc})")
            continue
        try:
            ordered, warns = order(ops)
        except Exception as exc:
            log.debug("ordering %s failed", sub, exc_info=True)
            ordered, warns = ops, [f"stage {sub}: steps run in file order ('after' could not "
                                   f"be applied: {type(exc).__name__}: {exc})"]
        warnings.extend(warns)
        # steps the cloud-init mapping generated empty exist only to keep yip's numbering
        planned.extend((sub, op) for op in ordered if not (op.step.generated and op.step.empty))
    return planned, warnings


def _log_load_problems(loaded: Loaded) -> None:
    for error in loaded.errors:
        log.warning("%s", error)
    for warning in loaded.warnings:  # unknown keys: worth seeing, not worth alarming at boot
        log.info("%s", warning)


def _sources(root: Path, dirs: Sequence[str] | None,
             extra_docs: Sequence[tuple[str, dict[str, Any]]], cmdline: str | None,
             url_fetch: UrlFetch | None, ctx: Context) -> tuple[Loaded, list[str]]:
    """Every document in run order (files, extra docs, kernel command line) and the
    warnings met while gathering the command-line ones."""
    from_cmdline, warnings = cmdline_docs(cmdline, ctx, url_fetch)
    for warning in warnings:
        log.warning("%s", warning)
    loaded = _load(root, dirs, extra_docs, from_cmdline)
    _log_load_problems(loaded)
    return loaded, warnings


def plan_stage(stage: str, *, root: Path = Path("/"), dirs: Sequence[str] | None = None,
               extra_docs: Sequence[tuple[str, dict[str, Any]]] = (),
               cmdline: str | None = None, url_fetch: UrlFetch | None = None
               ) -> list[PlannedStep]:
    """The steps `run_stage` would consider, in order, without evaluating conditionals.
    The kernel command line's config_url is fetched (to list its steps)."""
    ctx = Context(root=Path(root), dry_run=True)
    loaded, _ = _sources(ctx.root, dirs, extra_docs, cmdline, url_fetch, ctx)
    planned, warnings = _plan(stage, loaded)
    for warning in warnings:
        log.warning("%s", warning)
    return [PlannedStep(stage=sub, name=op.name, source=op.step.source,
                        plugins=plugins.plugins_for(op.step),
                        conditions=op.step.conditions.describe(), after=list(op.step.after))
            for sub, op in planned]


def run_step(sub: str, op: Op, ctx: Context) -> StepResult:
    step = op.step
    names = plugins.plugins_for(step)
    result = StepResult(stage=sub, name=op.name, source=step.source, status="ok",
                        plugins=names)
    try:
        reason = skip_reason(step.conditions, ctx)
    except (KairosError, OSError) as exc:  # e.g. no shell to evaluate `if` with
        reason = f"conditions could not be evaluated: {exc}"
    except Exception as exc:  # a filter bug skips the step; it does not stop the stage
        log.debug("conditions of %s crashed", op.name, exc_info=True)
        reason = f"conditions could not be evaluated: internal error {type(exc).__name__}: {exc}"
    if reason:
        log.info("skip %s: %s", op.name, reason)
        result.status, result.detail = "skipped", reason
        return result
    if ctx.dry_run:
        log.info("would run %s (%s)", op.name, ", ".join(names) or "nothing")
        result.detail = "dry run"
        return result
    log.info("run %s (%s)", op.name, ", ".join(names) or "nothing")
    errors: list[str] = []
    for name in names:
        try:
            plugins.load(name).apply(step, ctx)
        except KairosError as exc:
            errors.append(f"{name}: {exc.message}")
        except OSError as exc:
            errors.append(f"{name}: {exc.strerror or exc}"
                          + (f" ({exc.filename})" if exc.filename else ""))
        except Exception as exc:  # a plugin bug must not stop the boot either
            # the traceback goes to the debug log only; the console gets the one line below
            log.debug("plugin %s crashed", name, exc_info=True)
            errors.append(f"{name}: internal error {type(exc).__name__}: {exc}")
    if errors:
        result.status, result.detail = "failed", "; ".join(errors)
        log.error("%s", failure_line(sub, op, result.detail))
    return result


def run_stage(stage: str, *, root: Path = Path("/"), dirs: Sequence[str] | None = None,
              extra_docs: Sequence[tuple[str, dict[str, Any]]] = (), strict: bool = False,
              dry_run: bool = False, ctx: Context | None = None, cmdline: str | None = None,
              url_fetch: UrlFetch | None = None) -> StageReport:
    """Run STAGE.before, STAGE and STAGE.after from `dirs` (default: /system/oem, /oem,
    /usr/local/cloud-config, below `root`), `extra_docs` ((name, config dict) pairs) and the
    kernel command line.

    `cmdline`: the kernel command line; None reads ROOT/proc/cmdline when there is one (on a
    device: /proc/cmdline), "" means none. Its config_url is fetched as `url_fetch` says.
    `ctx` lets callers and tests supply their own Context (shell, key URLs, arch).
    With `strict` off this raises only for an empty stage name."""
    if not stage or not stage.strip():
        raise BadInput("no stage name given", "for example: kairos run-stage boot")
    ctx = ctx or Context(root=Path(root), dry_run=dry_run, logger=step_log)
    ctx.dry_run = ctx.dry_run or dry_run
    report = StageReport(stage=stage)
    loaded, cmdline_warnings = _sources(ctx.root, dirs, extra_docs, cmdline, url_fetch, ctx)
    report.warnings.extend(cmdline_warnings + loaded.errors + loaded.warnings)
    if strict and loaded.errors:
        raise BadInput(f"stage files have errors: {loaded.errors[0]}",
                       "fix the file, or run without --strict to skip it")
    planned, warnings = _plan(stage, loaded)
    report.warnings.extend(warnings)
    for warning in warnings:
        log.warning("%s", warning)
    for sub, op in planned:
        result = run_step(sub, op, ctx)
        report.results.append(result)
        if strict and result.status == "failed":
            raise KairosError(f"stage {sub}: step '{op.name}' failed: {one_line(result.detail)}",
                              "run without --strict to continue past failing steps")
    log.info("%s", report.summary())
    if report.failed and not strict:
        log.info("some steps failed and were skipped over; use --strict to stop on errors")
    return report
