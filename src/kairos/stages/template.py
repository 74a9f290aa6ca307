"""The part of Go's text/template (plus sprig functions) that stage files use.

Kairos configs write things like `hostname: node-{{ trunc 4 .MachineID }}` or
`{{ .Values.node.hostname | upper }}`. Supported: field paths, string/number literals,
function calls, pipelines, parentheses and `{{-`/`-}}` trimming. Anything else (if, range,
unknown functions or fields) raises TemplateError, and callers keep the text unrendered,
as yip does when rendering fails.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import uuid
from collections.abc import Callable, Mapping
from typing import Any


class TemplateError(ValueError):
    pass


def _trunc(n: int, s: str) -> str:
    if n < 0:
        return s[len(s) + n:] if len(s) + n > 0 else s
    return s[:n]


def _substr(start: int, end: int, s: str) -> str:
    if start < 0:
        return s[:end]
    if end < 0 or end > len(s):
        return s[start:]
    return s[start:end]


FUNCS: dict[str, Callable[..., Any]] = {
    "trunc": _trunc,
    "upper": lambda s: str(s).upper(),
    "lower": lambda s: str(s).lower(),
    "title": lambda s: str(s).title(),
    "trim": lambda s: str(s).strip(),
    "trimPrefix": lambda p, s: str(s).removeprefix(str(p)),
    "trimSuffix": lambda p, s: str(s).removesuffix(str(p)),
    "replace": lambda old, new, s: str(s).replace(str(old), str(new)),
    "default": lambda d, v=None: v if v else d,
    "quote": lambda s: '"' + str(s) + '"',
    "squote": lambda s: "'" + str(s) + "'",
    "substr": _substr,
    "toString": str,
    "uuidv4": lambda: str(uuid.uuid4()),
    "randAlphaNum": lambda n: "".join(secrets.choice(string.ascii_letters + string.digits)
                                      for _ in range(int(n))),
    "randNumeric": lambda n: "".join(secrets.choice(string.digits) for _ in range(int(n))),
}

KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break",
            "continue"}
_ACTION = re.compile(r"(\s*)\{\{(-\s)?(.*?)(\s-)?\}\}(\s*)", re.S)
_TOKEN = re.compile(r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<num>-?\d+)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[|()])
)""", re.X)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"cannot parse template action '{text}'")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Eval:
    def __init__(self, tokens: list[tuple[str, str]], data: Mapping[str, Any]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.data = data

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def pipeline(self) -> Any:
        value = self.command(None, piped=False)
        while (tok := self.peek()) and tok == ("punct", "|"):
            self.pos += 1
            value = self.command(value, piped=True)
        return value

    def command(self, piped_value: Any, *, piped: bool) -> Any:
        tok = self.peek()
        if tok is None:
            raise TemplateError("empty command in template")
        if tok[0] == "ident":
            name = tok[1]
            if name in KEYWORDS:
                raise TemplateError(f"'{name}' is not supported in templates here")
            func = FUNCS.get(name)
            if func is None:
                raise TemplateError(f"function '{name}' is not defined")
            self.pos += 1
            args = []
            while (nxt := self.peek()) and nxt not in (("punct", "|"), ("punct", ")")):
                args.append(self.operand())
            if piped:
                args.append(piped_value)
            try:
                return func(*args)
            except (TypeError, ValueError) as exc:
                raise TemplateError(f"{name}: {exc}") from None
        if piped:
            raise TemplateError("only a function can follow '|' in a template")
        value = self.operand()
        if (nxt := self.peek()) and nxt not in (("punct", "|"), ("punct", ")")):
            raise TemplateError(f"unexpected '{nxt[1]}' in template")
        return value

    def operand(self) -> Any:
        kind, text = self.tokens[self.pos]
        self.pos += 1
        if kind == "str":
            try:
                return json.loads(text)  # Go's string escapes are JSON's, near enough
            except ValueError:
                raise TemplateError(f"bad string literal {text}") from None
        if kind == "raw":
            return text[1:-1]
        if kind == "num":
            return int(text)
        if kind == "field":
            return self.field(text)
        if (kind, text) == ("punct", "("):
            value = self.pipeline()
            if self.peek() != ("punct", ")"):
                raise TemplateError("missing ')' in template")
            self.pos += 1
            return value
        if kind == "ident" and text in FUNCS and not FUNCS[text].__code__.co_argcount:
            return FUNCS[text]()
        raise TemplateError(f"unexpected '{text}' in template")

    def field(self, path: str) -> Any:
        value: Any = self.data
        for part in [p for p in path.split(".") if p]:
            if not isinstance(value, Mapping) or part not in value:
                raise TemplateError(f"no value for '{path}'")
            value = value[part]
        return value


def render(text: str, data: Mapping[str, Any]) -> str:
    """Render every {{ action }} in `text` against `data`; raise TemplateError if unsupported."""
    if "{{" not in text:
        return text

    def action(m: re.Match[str]) -> str:
        lead = "" if m.group(2) else m.group(1)
        trail = "" if m.group(4) else m.group(5)
        evaluator = _Eval(_tokens(m.group(3)), data)
        value = evaluator.pipeline()
        if evaluator.peek() is not None:
            raise TemplateError(f"unexpected '{evaluator.peek()[1]}' in template")  # type: ignore[index]
        return f"{lead}{'' if value is None else value}{trail}"

    return _ACTION.sub(action, text)
