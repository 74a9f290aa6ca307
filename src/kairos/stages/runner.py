"""Run a stage: STAGE.before, STAGE, STAGE.after, over every stage file, step by step.

A step runs when its conditionals pass; then its plugins run in yip's order. A failing plugin
is logged and the rest go on (a device must finish booting), unless `strict` is set, in which
case the first failure raises KairosError naming the step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from kairos.errors import BadInput, KairosError
from kairos.stages import plugins
from kairos.stages.conditionals import skip_reason
from kairos.stages.context import Context
from kairos.stages.graph import Op, build_ops, order
from kairos.stages.loader import Loaded, load_docs

log = logging.getLogger("kairos.stages")

Status = Literal["ok", "skipped", "failed"]


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


def substages(stage: str) -> tuple[str, str, str]:
    return (f"{stage}.before", stage, f"{stage}.after")


def _plan(stage: str, loaded: Loaded) -> tuple[list[tuple[str, Op]], list[str]]:
    """(stage name, op) pairs in run order for STAGE.before/STAGE/STAGE.after, and warnings."""
    warnings: list[str] = []
    planned: list[tuple[str, Op]] = []
    for sub in substages(stage):
        ordered, warns = order(build_ops(sub, loaded.docs))
        warnings.extend(warns)
        # steps the cloud-init mapping generated empty exist only to keep yip's numbering
        planned.extend((sub, op) for op in ordered if not (op.step.generated and op.step.empty))
    return planned, warnings


def _log_load_problems(loaded: Loaded) -> None:
    for error in loaded.errors:
        log.warning("%s", error)
    for warning in loaded.warnings:  # unknown keys: worth seeing, not worth alarming at boot
        log.info("%s", warning)


def plan_stage(stage: str, *, root: Path = Path("/"), dirs: Sequence[str] | None = None,
               extra_docs: Sequence[tuple[str, dict[str, Any]]] = ()) -> list[PlannedStep]:
    """The steps `run_stage` would consider, in order, without evaluating conditionals."""
    loaded = load_docs(Path(root), dirs, extra_docs)
    _log_load_problems(loaded)
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
            log.debug("plugin %s crashed", name, exc_info=True)
            errors.append(f"{name}: internal error {type(exc).__name__}: {exc}")
    if errors:
        result.status, result.detail = "failed", "; ".join(errors)
        log.error("step %s failed: %s", op.name, result.detail)
    return result


def run_stage(stage: str, *, root: Path = Path("/"), dirs: Sequence[str] | None = None,
              extra_docs: Sequence[tuple[str, dict[str, Any]]] = (), strict: bool = False,
              dry_run: bool = False, ctx: Context | None = None) -> StageReport:
    """Run STAGE.before, STAGE and STAGE.after from `dirs` (default: /system/oem, /oem,
    /usr/local/cloud-config, below `root`) and `extra_docs` ((name, config dict) pairs).

    `ctx` lets callers and tests supply their own Context (shell, key URLs, arch)."""
    if not stage or not stage.strip():
        raise BadInput("no stage name given", "for example: kairos run-stage boot")
    ctx = ctx or Context(root=Path(root), dry_run=dry_run)
    ctx.dry_run = ctx.dry_run or dry_run
    report = StageReport(stage=stage)
    loaded = load_docs(ctx.root, dirs, extra_docs)
    report.warnings.extend(loaded.errors + loaded.warnings)
    _log_load_problems(loaded)
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
            raise KairosError(f"stage {sub}: step '{op.name}' failed: {result.detail}",
                              "run without --strict to continue past failing steps")
    log.info("%s", report.summary())
    if report.failed and not strict:
        log.info("some steps failed and were skipped over; use --strict to stop on errors")
    return report
