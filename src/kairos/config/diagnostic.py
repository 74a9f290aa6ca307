"""One finding about a config file: where it is, what is wrong, and how to fix it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    """A problem in a config source, printed as one line a person can act on.

    `line` and `column` are 1-based; 0 means the position is not known (e.g. a source that
    is not a file, or a key that is missing and so has no position).
    """

    severity: str
    file: str
    line: int
    column: int
    path: str
    message: str
    hint: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.line:
            where += f":{self.line}:{self.column}"
        text = f"{where}: "
        if self.severity == WARNING:
            text += "warning: "
        if self.path:
            text += f"{self.path}: "
        text += self.message
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_error(self) -> Diagnostic:
        """The same finding as an error (what --strict does to warnings)."""
        return Diagnostic(ERROR, self.file, self.line, self.column, self.path, self.message,
                          self.hint)
