"""Shell-style `KEY="value"` files: /etc/os-release, /etc/kairos-release, /etc/environment,
/run/cos/cos-layout.env, /etc/default/useradd.

Read the way both sh and godotenv (what Kairos's Go tools use) read the common subset:
`#` comments, blank lines, an optional `export `, 'single' quotes taken literally, "double"
quotes with backslash escapes, and an unquoted ` #` starting a trailing comment. Junk lines
are skipped, never an error: these files are written by many hands. `render_env` writes
values that sh and godotenv read back unchanged (newlines as godotenv's `\\n`).
"""

from __future__ import annotations

from collections.abc import Mapping

# Backslash escapes inside double quotes: sh's ($ ` " \), godotenv's (\n \r, and \! which its
# writer emits); any other backslash stays, as sh keeps it.
_DOUBLE_ESCAPES = {"n": "\n", "r": "\r", '"': '"', "\\": "\\", "$": "$", "`": "`", "!": "!"}


def _double_quoted(text: str, start: int) -> tuple[str, int]:
    """The content of a "..." segment opening at `start`, and the index after it (an
    unterminated one runs to the end of the line)."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(_DOUBLE_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out), i


def parse_value(text: str) -> str:
    """The right-hand side of `KEY=...` as the shell would assign it (quotes removed,
    escapes applied, a trailing comment and unquoted outer white space dropped)."""
    out: list[str] = []
    pending = ""  # unquoted white space, kept only between parts of the value
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            pending += c
            i += 1
            continue
        if c == "#" and pending:
            break  # a comment: '#' at the start of a word (A=#x is the value "#x", as in sh)
        if out:
            out.append(pending)
        pending = ""
        if c == '"':
            segment, i = _double_quoted(text, i)
            out.append(segment)
        elif c == "'":
            end = text.find("'", i + 1)
            end = len(text) if end < 0 else end
            out.append(text[i + 1:end])
            i = end + 1
        elif c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_env(text: str) -> dict[str, str]:
    """The KEY → value pairs of an env file; a later line wins over an earlier one."""
    env: dict[str, str] = {}
    # Only "\n" ends a line: str.splitlines would also split inside a value on \f, \x1c, ….
    for line in text.split("\n"):
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        key = key.strip()
        if key.startswith("export") and key[6:7].isspace():
            key = key[6:].strip()
        if not key or any(c.isspace() or c in "\"'" for c in key):
            continue
        env[key] = parse_value(raw)
    return env


def quote(value: str) -> str:
    """`value` in double quotes, escaped so that sh and godotenv read it back unchanged."""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
               .replace("`", "\\`").replace("\n", "\\n").replace("\r", "\\r"))
    return f'"{escaped}"'


def render_env(env: Mapping[str, str]) -> str:
    """`KEY="value"` lines in the mapping's order."""
    return "".join(f"{key}={quote(value)}\n" for key, value in env.items())
