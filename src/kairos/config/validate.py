"""Validate cloud-config and stage files against schema.json, with messages people can act on.

Every finding is a Diagnostic naming file, line, column and key path, with a hint. Wrong
types are errors; unknown keys are warnings (Kairos ignores them) unless `strict`. A file
without a #cloud-config header is an error, except a stage file (only `name`/`stages`),
which Kairos loads from /system/oem without a header.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kairos.config.diagnostic import ERROR, WARNING, Diagnostic
from kairos.config.paths import KeyPath, format_path
from kairos.config.schema import load_schema, stage_document_schema
from kairos.config.yamlsrc import (
    YamlDocument,
    YamlError,
    check_tree,
    has_header,
    load_yaml_document,
    read_text,
)
from kairos.errors import BadInput

CLOUD_CONFIG = "cloud-config"
STAGE = "stage"
STAGE_KEYS = frozenset({"name", "stages"})

_GENERIC = "see 'kairos print-schema' for what this key takes"
_TYPE_NAMES = {"object": "a map", "array": "a list", "string": "a string",
               "integer": "a whole number", "number": "a number", "boolean": "true or false",
               "null": "null"}


@dataclass
class ValidationResult:
    """What validating one source found."""

    file: str
    kind: str = CLOUD_CONFIG
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "kind": self.kind, "valid": self.ok,
                "diagnostics": [d.as_dict() for d in self.diagnostics]}


@functools.cache
def _validator(kind: str) -> Any:
    import jsonschema  # only when validating: the boot path does not pay for it

    schema = stage_document_schema() if kind == STAGE else load_schema()
    return jsonschema.Draft202012Validator(schema)


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return "a string"


def _expected(types: Any) -> str:
    names = [types] if isinstance(types, str) else list(types)
    if set(names) >= {"string", "number", "boolean"}:
        return "a single value (text, number or true/false)"
    return " or ".join(_TYPE_NAMES.get(n, n) for n in names)


def _close(word: str, choices: list[str]) -> str | None:
    lowered = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.75)
    return lowered[match[0]] if match else None


def _subschema(root: dict[str, Any], path: KeyPath) -> tuple[dict[str, Any], str]:
    """The schema that applies at `path`, and the nearest description on the way down."""
    node, desc = root, ""

    def deref(schema: dict[str, Any]) -> dict[str, Any]:
        nonlocal desc
        desc = schema.get("description", desc) if schema is not root else desc
        while "$ref" in schema:
            schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
            desc = desc or schema.get("description", "")
        return schema

    node = deref(node)
    for part in path:
        if isinstance(part, int):  # a list item keeps the list's description
            nxt = node.get("items")
        else:
            desc = ""
            nxt = node.get("properties", {}).get(part, node.get("additionalProperties"))
        if not isinstance(nxt, dict):
            return {}, ""
        node = deref(nxt)
    return node, desc


class _Checker:
    def __init__(self, doc: YamlDocument, kind: str) -> None:
        self.doc = doc
        self.kind = kind
        self.schema: dict[str, Any] = _validator(kind).schema
        self.found: list[Diagnostic] = []

    def add(self, severity: str, path: KeyPath, message: str, hint: str = "") -> None:
        line, col = self.doc.position(path)
        self.found.append(Diagnostic(severity, self.doc.name, line, col, format_path(path),
                                     message, hint))

    def key_name(self, path: KeyPath) -> str:
        names = [p for p in path if isinstance(p, str)]
        return names[-1] if names else "value"

    def run(self, data: Any) -> list[Diagnostic]:
        for err in _validator(self.kind).iter_errors(data):
            self.convert(err)
        self.semantics(data)
        self.found.sort(key=lambda d: (d.line, d.column, d.path, d.message))
        return self.found

    def convert(self, err: Any) -> None:
        path: KeyPath = tuple(err.absolute_path)
        value = err.instance
        kind = err.validator
        _, desc = _subschema(self.schema, path)
        if kind == "additionalProperties" and err.validator_value is False:
            self.unknown_keys(path, value, sorted(err.schema.get("properties", {})))
        elif kind == "type":
            if value is not None:  # null means "unset" for every key, as in Go
                self.add(ERROR, path, f"expected {_expected(err.validator_value)}, got "
                         f"{_describe(value)}", self.type_hint(path, value, err.validator_value,
                                                              desc))
        elif kind == "enum":
            options = [str(o) for o in err.validator_value if o != ""]
            near = _close(str(value), options) if isinstance(value, str) else None
            self.add(ERROR, path, f"{value!r} is not one of: {', '.join(options)}",
                     f"did you mean '{near}'?" if near else desc or _GENERIC)
        elif kind == "pattern":
            self.add(ERROR, path, f"{value!r} is not a valid {self.key_name(path)}",
                     desc or f"it must match {err.validator_value}")
        elif kind == "required":
            missing = [k for k in err.validator_value if isinstance(value, dict)
                       and k not in value]
            for key in missing:
                self.add(ERROR, path, f"missing the required key '{key}'",
                         f"add {key}: to this entry")
        elif kind in ("minimum", "maximum"):
            word = "at least" if kind == "minimum" else "at most"
            self.add(ERROR, path, f"{value!r} must be {word} {err.validator_value}",
                     desc or _GENERIC)
        else:
            self.add(ERROR, path, err.message, desc or _GENERIC)

    def unknown_keys(self, path: KeyPath, value: Any, known: list[str]) -> None:
        if not isinstance(value, dict):
            return
        for key in value:
            if key in known:
                continue
            near = _close(key, known) or self.nested(path, key)
            if near:
                hint = f"did you mean '{near}'?"
            elif not path and self.kind == STAGE:
                hint = "a stage file holds only name and stages"
            elif not path:
                hint = "Kairos ignores it unless a bundle or provider reads it"
            else:
                hint = "known keys here: " + ", ".join(known[:12]) + (
                    ", …" if len(known) > 12 else "")
            self.add(WARNING, (*path, key), "unknown key", hint)

    def nested(self, path: KeyPath, key: str) -> str | None:
        """`p2p.ha` for `p2p.auto.ha`: the key is known one level further down."""
        here, _ = _subschema(self.schema, path)
        for name in here.get("properties", {}):
            child, _ = _subschema(self.schema, (*path, name))
            if key in child.get("properties", {}):
                return f"{name}.{key}"
        return None

    def type_hint(self, path: KeyPath, value: Any, expected: Any, desc: str) -> str:
        want = {expected} if isinstance(expected, str) else set(expected)
        key = self.key_name(path)
        raw = self.doc.raw(path)
        text = raw if raw is not None else value if isinstance(value, str) else None
        if "array" in want and not isinstance(value, dict | list):
            shown = text if text is not None else _scalar_text(value)
            if "\n" in shown or len(shown) > 40:
                return f"make {key} a list: put each entry on its own line after '- '"
            return f"write {key}: [{shown}]"
        if "array" in want and isinstance(value, dict):
            return f"start each entry of {key} with '- '"
        if "object" in want and isinstance(value, list):
            return f"{key} takes keys and values, not a list: remove the '- '"
        if "string" in want and isinstance(value, int | float | bool):
            shown = text if text is not None else _scalar_text(value)
            return f'quote it: {key}: "{shown}"'
        if "object" in want and not desc:
            return f"{key} takes NAME: value lines indented under it"
        if want == {"boolean"} and isinstance(value, str):
            return f"write {key}: true or {key}: false"
        if "integer" in want and isinstance(value, str):
            return f"write a plain number without quotes or units, e.g. {key}: 512"
        return desc or _GENERIC

    def semantics(self, data: Any) -> None:
        """Checks JSON Schema cannot express (Kairos's ValidateSemantics, and yip pitfalls)."""
        if not isinstance(data, dict):
            return
        for path, value in _walk(data, ()):
            if path and path[-1] == "permissions" and isinstance(value, int) \
                    and not isinstance(value, bool):
                raw = self.doc.raw(path) or ""
                if raw.isdigit() and not raw.startswith("0") and set(raw) <= set("01234567") \
                        and value > 7:
                    self.add(WARNING, path, f"{raw} is read as a decimal number "
                             f"(mode {value:o} in octal)", f"write permissions: 0{raw}")
        install = data.get("install")
        if isinstance(install, dict) and install.get("ssh_hardening") is True:
            users = data.get("users")
            keyed = isinstance(users, list) and any(
                isinstance(u, dict) and u.get("ssh_authorized_keys") for u in users)
            if not keyed:
                self.add(ERROR, ("install", "ssh_hardening"),
                         "ssh_hardening needs at least one user with ssh_authorized_keys",
                         "add ssh_authorized_keys to a user, or the system is unreachable "
                         "over SSH")


def _walk(value: Any, path: KeyPath) -> Iterator[tuple[KeyPath, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, (*path, index))


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_stage_document(data: Any) -> bool:
    """A map whose keys are only `name` and `stages` (and has stages)."""
    return isinstance(data, dict) and "stages" in data and set(data) <= STAGE_KEYS


def validate_document(doc: YamlDocument, *, kind: str = CLOUD_CONFIG,
                      strict: bool = False) -> list[Diagnostic]:
    """Diagnostics for a loaded document validated as `kind` (cloud-config or stage)."""
    data = {} if doc.data is None else doc.data
    found: list[Diagnostic] = []
    if doc.extra_documents:
        found.append(Diagnostic(WARNING, doc.name, 0, 0, "", "only the first YAML document "
                                "is read", "Kairos ignores everything after the second '---'"))
    if not isinstance(data, dict):
        line, col = doc.position(())
        found.append(Diagnostic(ERROR, doc.name, line, col, "", f"the top level must be a map "
                                f"of keys, got {_describe(data)}", "start with keys such as "
                                "users:, install: or stages:"))
    else:
        try:
            check_tree(data, doc.name)
        except BadInput as exc:
            found.append(Diagnostic(ERROR, doc.name, 0, 0, "", exc.message, exc.hint))
        else:
            found.extend(_Checker(doc, kind).run(data))
    if strict:
        found = [d.as_error() for d in found]
    return found


def validate_data(data: Any, name: str = "<config>", *, kind: str = CLOUD_CONFIG,
                  strict: bool = False) -> list[Diagnostic]:
    """Diagnostics for data built in code (no positions). Raises only BadInput."""
    return validate_document(YamlDocument(name, data, {}), kind=kind, strict=strict)


def validate_text(text: str, name: str, *, strict: bool = False,
                  require_header: bool = True, kind: str | None = None) -> ValidationResult:
    """Validate YAML text. `kind` None: a cloud-config, or a stage file if it has no header
    and only name/stages keys. YAML syntax errors become one error diagnostic."""
    try:
        doc = load_yaml_document(text, name)
    except YamlError as exc:
        diag = Diagnostic(ERROR, exc.file, exc.line, exc.column, "", exc.problem, exc.hint)
        return ValidationResult(name, kind or CLOUD_CONFIG, [diag])
    header = has_header(text)
    if kind is None:
        kind = STAGE if not header and is_stage_document(doc.data) else CLOUD_CONFIG
    result = ValidationResult(name, kind, [])
    if kind == CLOUD_CONFIG and require_header and not header:
        result.diagnostics.append(Diagnostic(
            ERROR, name, 1, 1, "", "missing the #cloud-config header",
            "make '#cloud-config' the first line; Kairos skips files without it"))
    result.diagnostics.extend(validate_document(doc, kind=kind, strict=strict))
    return result


def validate_file(path: Path | str, *, strict: bool = False, require_header: bool = True,
                  kind: str | None = None, name: str | None = None) -> ValidationResult:
    """Validate a file; an unreadable file is one error diagnostic, not an exception."""
    label = name or str(path)
    try:
        text = read_text(path)
    except YamlError as exc:
        return ValidationResult(label, kind or CLOUD_CONFIG, [Diagnostic(
            ERROR, label, exc.line, exc.column, "", exc.problem, exc.hint)])
    except BadInput as exc:
        return ValidationResult(label, kind or CLOUD_CONFIG, [Diagnostic(
            ERROR, label, 0, 0, "", exc.message, exc.hint)])
    return validate_text(text, label, strict=strict, require_header=require_header, kind=kind)
