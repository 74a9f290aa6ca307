"""The stage model: a document has stages, a stage is a list of steps, a step has
conditionals and plugin payloads.

A stage document is YAML `{name?, stages: {<stage>: [step, ...]}}`; cloud-init top-level keys
(users, runcmd, write_files, …) are mapped onto steps by kairos.stages.cloudinit.
Plugin payloads stay as raw YAML here; each plugin parses its own keys (plugins/<name>.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kairos.stages.fields import PayloadError, as_map, as_str, as_str_list
from kairos.stages.plugins import PLUGIN_KEYS, unknown_fields

# Step keys that are not plugin payloads.
CONDITION_KEYS = ("if", "node", "only_os", "only_os_version", "only_arch",
                  "only_service_manager", "if_files")
STEP_KEYS = frozenset({"name", "after", *CONDITION_KEYS, *PLUGIN_KEYS})
IF_FILES_CHECKS = ("any", "all", "none")


@dataclass
class Conditions:
    """Filters evaluated before a step runs (yip's conditionals, in this order)."""

    node: str = ""
    if_: str = ""
    only_os: str = ""
    only_os_version: str = ""
    only_arch: str = ""
    only_service_manager: str = ""
    if_files: dict[str, list[str]] = field(default_factory=dict)

    def describe(self) -> list[str]:
        out = []
        for label, value in (("node", self.node), ("if", self.if_), ("only_os", self.only_os),
                             ("only_os_version", self.only_os_version),
                             ("only_arch", self.only_arch),
                             ("only_service_manager", self.only_service_manager)):
            if value:
                out.append(f"{label}: {value.strip()}")
        for check, paths in self.if_files.items():
            out.append(f"if_files.{check}: {', '.join(paths)}")
        return out


@dataclass
class Step:
    name: str = ""
    after: list[str] = field(default_factory=list)
    conditions: Conditions = field(default_factory=Conditions)
    # plugin key -> raw YAML value, only for keys present in the step
    payloads: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    # True for the steps cloud-init keys generate; empty ones are dropped from plans
    generated: bool = False

    @property
    def empty(self) -> bool:
        return not self.payloads


@dataclass
class StageDoc:
    """One stage file (or one in-memory config) after parsing."""

    source: str
    name: str = ""
    stages: dict[str, list[Step]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # problems that made (part of) the document unusable; --strict stops on these
    errors: list[str] = field(default_factory=list)

    @property
    def root_name(self) -> str:
        """The prefix of this document's op names: its `name`, else its path."""
        return self.name or self.source


def parse_conditions(raw: dict[str, Any], where: str) -> Conditions:
    cond = Conditions(
        node=as_str(raw.get("node"), f"{where}.node"),
        if_=as_str(raw.get("if"), f"{where}.if"),
        only_os=as_str(raw.get("only_os"), f"{where}.only_os"),
        only_os_version=as_str(raw.get("only_os_version"), f"{where}.only_os_version"),
        only_arch=as_str(raw.get("only_arch"), f"{where}.only_arch"),
        only_service_manager=as_str(raw.get("only_service_manager"),
                                    f"{where}.only_service_manager"),
    )
    for check, paths in as_map(raw.get("if_files"), f"{where}.if_files").items():
        # an unknown check type is kept: the step is then skipped with a clear reason
        cond.if_files[check] = as_str_list(paths, f"{where}.if_files.{check}")
    return cond


def parse_after(value: Any, where: str) -> list[str]:
    """`after: [{name: x}, ...]`; plain strings are accepted too."""
    if value is None:
        return []
    if not isinstance(value, list):
        value = [value]
    names: list[str] = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            name = as_str(item.get("name"), f"{where}.after[{i}].name")
        else:
            name = as_str(item, f"{where}.after[{i}]")
        if name:
            names.append(name)
    return names


def parse_step(raw: Any, source: str, where: str) -> tuple[Step, list[str]]:
    """One step; returns it and warnings about keys nobody owns (typos such as `systctl`)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PayloadError(f"{where}: a step must be a mapping, got {type(raw).__name__}")
    raw = {str(k): v for k, v in raw.items()}
    step = Step(
        name=as_str(raw.get("name"), f"{where}.name"),
        after=parse_after(raw.get("after"), where),
        conditions=parse_conditions(raw, where),
        payloads={k: v for k, v in raw.items() if k in PLUGIN_KEYS and v is not None},
        source=source,
    )
    warnings = [f"{where}: unknown key '{k}' is ignored" for k in raw if k not in STEP_KEYS]
    for key, value in step.payloads.items():
        warnings += [f"{where}.{w}" for w in unknown_fields(key, value)]
    return step, warnings


def parse_stages(value: Any, doc: StageDoc) -> None:
    """Parse `stages:` into `doc`, appending to stages it already has (stages are additive)."""
    if value is None:
        return
    if not isinstance(value, dict):
        doc.errors.append(f"{doc.source}: 'stages' must be a mapping of stage name to steps")
        return
    for stage_name, steps in value.items():
        stage = str(stage_name)
        if steps is None:
            continue
        if not isinstance(steps, list):
            doc.errors.append(f"{doc.source}: stages.{stage} must be a list of steps")
            continue
        target = doc.stages.setdefault(stage, [])
        for i, raw in enumerate(steps):
            where = f"{doc.source}: stages.{stage}[{i}]"
            try:
                step, warns = parse_step(raw, doc.source, where)
            except PayloadError as exc:
                doc.errors.append(f"{exc.message}; step ignored")
                continue
            doc.warnings.extend(warns)
            target.append(step)


def parse_doc(data: Any, source: str, *, cloud_config: bool) -> StageDoc:
    """A document from its YAML data. `cloud_config` turns on the cloud-init key mapping
    (yip applies it only to files with the #cloud-config header)."""
    doc = StageDoc(source=source)
    if data is None:
        return doc
    if not isinstance(data, dict):
        doc.errors.append(f"{source}: the top level must be a mapping; file ignored")
        return doc
    doc.name = as_str(data.get("name"), f"{source}: name") if isinstance(
        data.get("name"), str | int | float) else ""
    if cloud_config:
        from kairos.stages.cloudinit import cloudinit_stages

        try:
            for stage, steps in cloudinit_stages(data, source).items():
                doc.stages.setdefault(stage, []).extend(steps)
        except PayloadError as exc:
            doc.errors.append(f"{exc.message}; cloud-init keys ignored")
    else:
        from kairos.stages.cloudinit import CLOUDINIT_KEYS

        ignored = sorted(k for k in CLOUDINIT_KEYS if data.get(k))
        if ignored:
            doc.warnings.append(
                f"{source}: top-level {', '.join(ignored)} ignored: the file has no "
                "#cloud-config header (put it on the first line to use them)")
    parse_stages(data.get("stages"), doc)
    return doc
