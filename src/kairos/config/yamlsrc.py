"""Safe YAML loading that reads values the way Kairos (Go, yaml.v3) reads them.

- Values: only true/false are booleans (YAML 1.2), so `on`, `yes`, `no` stay strings;
  dates stay strings; no sexagesimal numbers; `0755` is octal as in yaml.v3.
- Keys are always the key's text (`1:` is the key "1"); a key given twice is an error,
  as in yaml.v3. Unknown tags load as plain values instead of failing.
- Every YAML problem becomes a YamlError (a BadInput) naming file, line and column with a
  hint, never a traceback; recursive aliases and alias bombs are refused.
- `load_yaml_document` also keeps the position of every key and list item, so validation
  messages can say file:line:column.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kairos.config.paths import KeyPath, format_path
from kairos.errors import BadInput

HEADERS = ("#cloud-config", "#kairos-config", "#node-config")
HEADER_LINES = 10
MAX_DEPTH = 100  # far beyond any real config; keeps every recursive walk safe
MAX_NODES = 200_000  # after alias expansion: refuses "billion laughs" documents

_T = "tag:yaml.org,2002:"


def has_header(text: str) -> bool:
    """True if one of the first 10 lines is a cloud-config header (Kairos's rule)."""
    lines = text.lstrip("\ufeff").split("\n")[:HEADER_LINES]
    return any(line.rstrip() in HEADERS for line in lines)


class YamlError(BadInput):
    """A file that is not valid YAML (or not a usable tree): where, what, and a hint."""

    def __init__(self, file: str, line: int, column: int, problem: str, hint: str) -> None:
        where = f"{file}:{line}:{column}" if line else file
        super().__init__(f"{where}: {problem}", hint)
        self.file = file
        self.line = line
        self.column = column
        self.problem = problem


class Mark(NamedTuple):
    line: int  # 1-based
    column: int  # 1-based
    raw: str | None  # the value's text when it is a plain (unquoted) scalar


@dataclass
class YamlDocument:
    """A loaded document plus the position of every key path in it."""

    name: str
    data: Any
    marks: dict[KeyPath, Mark] = field(default_factory=dict)
    extra_documents: bool = False  # more `---` documents follow; Kairos reads only the first

    def position(self, path: KeyPath) -> tuple[int, int]:
        """Line and column of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            mark = self.marks.get(tuple(path[:end]))
            if mark:
                return mark.line, mark.column
        return 0, 0

    def raw(self, path: KeyPath) -> str | None:
        mark = self.marks.get(tuple(path))
        return mark.raw if mark else None


# ---- the loader -------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader with yaml.v3-like scalars and string keys."""

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, MappingNode):
            raise ConstructorError(None, None, "expected a map here", node.start_mark)
        seen: dict[str, Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _T + "merge":
                continue
            if not isinstance(key_node, ScalarNode):
                raise ConstructorError(None, None, "a key must be a plain value, not a list or "
                                       "map", key_node.start_mark)
            first = seen.get(key_node.value)
            if first is not None:
                raise ConstructorError(
                    None, None, f"key '{key_node.value}' is defined twice (first at line "
                    f"{first.start_mark.line + 1})", key_node.start_mark)
            seen[key_node.value] = key_node
        self.flatten_mapping(node)
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise ConstructorError(None, None, "a key must be a plain value, not a list or "
                                       "map", key_node.start_mark)
            mapping[key_node.value] = self.construct_object(value_node, deep=deep)
        return mapping


def _checked(convert: Any, what: str) -> Any:
    def construct(loader: _Loader, node: Node) -> Any:
        try:
            return convert(loader, node)
        except (ValueError, KeyError, OverflowError) as exc:
            raise ConstructorError(None, None, f"'{node.value}' is not {what}",
                                   node.start_mark) from exc
    return construct


def _generic(loader: _Loader, node: Node) -> Any:
    """Unknown or exotic tags load as the plain value underneath (as yaml.v3 does)."""
    if isinstance(node, ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, SequenceNode):
        return loader.construct_yaml_seq(node)
    return loader.construct_yaml_map(node)


def _set(loader: _Loader, node: Node) -> Any:
    data: dict[str, Any] = {}
    yield data
    data.update(loader.construct_mapping(node))


_DROP = {_T + t for t in ("bool", "int", "float", "timestamp", "value")}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _DROP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_T + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(
    _T + "int",
    re.compile(r"^(?:[-+]?0b[01][01_]*|[-+]?0[0-7][0-7_]*|[-+]?0x[0-9a-fA-F][0-9a-fA-F_]*"
               r"|[-+]?(?:0|[1-9][0-9_]*))$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(
    _T + "float",
    re.compile(r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))
_Loader.add_constructor(_T + "int", _checked(SafeConstructor.construct_yaml_int, "a number"))
_Loader.add_constructor(_T + "float", _checked(SafeConstructor.construct_yaml_float, "a number"))
_Loader.add_constructor(_T + "bool", _checked(SafeConstructor.construct_yaml_bool, "true or false"))
_Loader.add_constructor(_T + "timestamp", _generic)
_Loader.add_constructor(_T + "binary", _generic)
_Loader.add_constructor(_T + "omap", _generic)
_Loader.add_constructor(_T + "pairs", _generic)
_Loader.add_constructor(_T + "set", _set)
_Loader.add_constructor(None, _generic)


@functools.cache
def _resolver() -> _Loader:
    return _Loader("")


def resolves_as_string(text: str) -> bool:
    """True if `text`, written unquoted, loads back as a string (not a number, bool, null)."""
    tag = _resolver().resolve(ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    return bool(tag == _T + "str")


# ---- errors -----------------------------------------------------------------------------


def _hint(problem: str, context: str, line_text: str) -> str:
    p = problem.lower()
    indent = line_text[: len(line_text) - len(line_text.lstrip())]
    if "'\\t'" in problem or "\t" in indent:
        return "YAML indents with spaces only; replace the tab"
    if "defined twice" in p:
        return "keep one of the two keys"
    if "is never closed with" in p:
        return "add the closing bracket at the end of the list or map"
    if "never closed" in p:
        return "add the closing quote at the end of the value"
    if "mapping values are not allowed" in p:
        return "a value containing ': ' must be quoted"
    if "found character '@'" in p or "found character '`'" in p:
        return "values starting with @ or ` must be quoted"
    if "expected <block end>" in p or "did not find expected key" in p:
        if line_text.count('"') > 2 or line_text.count("'") > 2:
            return "the value's quote ends early; use single quotes around text that holds \""
        return "check the indentation of this line against the lines above"
    if "alias" in p:
        return "define the anchor (&name) before using it (*name)"
    if "could not find expected ':'" in p:
        return "each key needs a ':' after it; check quotes and indentation"
    return "check the YAML syntax here (quotes, indentation, ': ' after keys)"


def _error_from(exc: yaml.YAMLError, name: str, text: str) -> YamlError:
    lines = text.split("\n")
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark and "quoted scalar" in (exc.context or ""):
            mark = exc.context_mark  # point at the opening quote, not the end of the file
            exc.problem = "this quoted value is never closed (" + (exc.problem or "") + ")"
        elif (exc.context_mark and "flow" in (exc.context or "")
              and exc.problem_mark and exc.problem_mark.line > exc.context_mark.line):
            # An unclosed [ or { is reported where the file ends: point at the bracket.
            mark = exc.context_mark
            opener, closer = ("[", "]") if "sequence" in (exc.context or "") else ("{", "}")
            exc.problem = f"this '{opener}' is never closed with '{closer}'"
        line = mark.line + 1 if mark else 0
        col = mark.column + 1 if mark else 0
        problem = exc.problem or exc.context or "invalid YAML"
        context = exc.context or ""
    elif isinstance(exc, yaml.reader.ReaderError):
        before = text[: exc.position]
        line = before.count("\n") + 1
        col = exc.position - (before.rfind("\n") + 1) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or " ")
        problem = f"the control character U+{code:04X} is not allowed in YAML"
        context = ""
    else:
        line, col, problem, context = 0, 0, str(exc).splitlines()[0], ""
    line_text = lines[line - 1] if 0 < line <= len(lines) else ""
    if exc.__class__.__name__ == "ConstructorError" and context.startswith("while"):
        context = ""
    return YamlError(name, line, col, problem.rstrip("."), _hint(problem, context, line_text))


# ---- walking the node graph -------------------------------------------------------------


def _walk_marks(root: Node, name: str) -> dict[KeyPath, Mark]:
    """Positions of every key and list item; refuses cycles, deep nesting and alias bombs."""
    marks: dict[KeyPath, Mark] = {(): Mark(root.start_mark.line + 1, root.start_mark.column + 1,
                                           None)}
    count = 0
    on_path: set[int] = set()

    def visit(node: Node, path: KeyPath) -> None:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            raise YamlError(name, 0, 0, f"more than {MAX_NODES} values after expanding aliases",
                            "write the values out instead of nesting aliases")
        if len(path) > MAX_DEPTH:
            line = node.start_mark.line + 1
            raise YamlError(name, line, node.start_mark.column + 1,
                            f"nested more than {MAX_DEPTH} levels deep", "flatten the structure")
        if id(node) in on_path:
            raise YamlError(name, node.start_mark.line + 1, node.start_mark.column + 1,
                            "an alias refers to a value that contains itself",
                            "an alias (*name) cannot point inside its own anchor (&name)")
        if isinstance(node, MappingNode):
            on_path.add(id(node))
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode):
                    mark = key_node.start_mark
                    raise YamlError(name, mark.line + 1, mark.column + 1,
                                    "a key must be a plain value, not a list or map",
                                    "write the key as text")
                child = (*path, key_node.value)
                marks[child] = _mark(key_node, value_node)
                visit(value_node, child)
            on_path.discard(id(node))
        elif isinstance(node, SequenceNode):
            on_path.add(id(node))
            for index, item in enumerate(node.value):
                child = (*path, index)
                marks[child] = _mark(item, item)
                visit(item, child)
            on_path.discard(id(node))

    visit(root, ())
    return marks


def _mark(at: Node, value: Node) -> Mark:
    raw = value.value if isinstance(value, ScalarNode) and value.style is None else None
    return Mark(at.start_mark.line + 1, at.start_mark.column + 1, raw)


# ---- public API -------------------------------------------------------------------------


def load_yaml_document(text: str, name: str) -> YamlDocument:
    """Parse YAML text; raise YamlError (BadInput) with file:line:column on any problem."""
    text = text.lstrip("\ufeff")
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # the reader refuses control characters right here
        node = loader.get_node() if loader.check_node() else None
        if node is None:
            return YamlDocument(name, None, {})
        _walk_marks(node, name)  # first: refuses cycles and alias bombs before building
        data = loader.construct_document(node)
        marks = _walk_marks(node, name)  # again: merge keys (<<) are now flattened
        try:
            extra = bool(loader.check_event(yaml.DocumentStartEvent))
        except yaml.YAMLError:
            extra = True
        return YamlDocument(name, data, marks, extra)
    except yaml.YAMLError as exc:
        raise _error_from(exc, name, text) from None
    except RecursionError:
        raise YamlError(name, 0, 0, "nested too deeply to read", "flatten the structure") from None
    except (ValueError, TypeError, KeyError, OverflowError, IndexError) as exc:
        raise YamlError(name, 0, 0, f"cannot read the YAML ({exc})",
                        "check the YAML syntax") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_text(text: str, name: str = "<text>") -> Any:
    """The data of the first YAML document in `text` (None when empty)."""
    return load_yaml_document(text, name).data


def read_text(path: Path | str) -> str:
    """A config file's text; unreadable or non-UTF-8 files are BadInput."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}",
                       "check the path and its permissions") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        raise YamlError(str(path), line, exc.start - (before.rfind(b"\n") + 1) + 1,
                        "the file is not UTF-8 text", "save the file as UTF-8") from None


def load_yaml_file(path: Path | str) -> Any:
    """The data of a YAML file; errors name the file, line and column."""
    return load_yaml_document(read_text(path), str(path)).data


def check_tree(data: Any, name: str = "<config>") -> None:
    """Refuse trees that cannot be config: cycles, huge depth, non-string keys, odd types.

    YAML we load always passes; this guards data built in code (e.g. merged or generated).
    """
    count = 0
    on_path: set[int] = set()

    def visit(value: Any, path: KeyPath) -> None:
        nonlocal count
        count += 1
        where = format_path(path) or "the top level"
        if count > MAX_NODES or len(path) > MAX_DEPTH:
            raise BadInput(f"{name}: the config is too large or too deep at {where}",
                           f"keep it under {MAX_DEPTH} levels and {MAX_NODES} values")
        if isinstance(value, dict | list):
            if id(value) in on_path:
                raise BadInput(f"{name}: {where} contains itself", "remove the cycle")
            on_path.add(id(value))
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise BadInput(f"{name}: key {key!r} at {where} is not a string",
                                       "quote the key")
                    visit(item, (*path, key))
            else:
                for index, item in enumerate(value):
                    visit(item, (*path, index))
            on_path.discard(id(value))
        elif not isinstance(value, str | int | float | bool | type(None)):
            raise BadInput(f"{name}: {where} holds a {type(value).__name__}, not a YAML value",
                           "use strings, numbers, true/false, lists and maps only")

    visit(data, ())
