"""One error type for people: a one-line message, a hint, and an exit code."""

from __future__ import annotations

import sys

# Exit codes: 2 is bad input (the user can fix it), 1 is a failure of the system or a tool.
EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


class KairosError(Exception):
    """An error that is shown to a person as one line plus a hint, never as a traceback."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def report(self, prefix: str) -> None:
        """Write the error as people see it: `PREFIX: MESSAGE`, then the hint's line."""
        sys.stderr.write(f"{prefix}: {self.message}\n")
        if self.hint:
            sys.stderr.write(f"  hint: {self.hint}\n")


class BadInput(KairosError):
    """The user gave something we cannot use: exit code 2."""

    exit_code = EXIT_BAD_INPUT


class MissingTool(BadInput):
    """A host tool the command needs is not installed."""


class CommandFailed(KairosError):
    """An external command exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, stderr_tail: str) -> None:
        cmd = " ".join(argv[:6]) + (" …" if len(argv) > 6 else "")
        tail = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else ""
        super().__init__(
            f"'{cmd}' failed with exit code {returncode}" + (f": {tail}" if tail else ""),
            "run again with --debug to see the full command and its output",
        )
        self.argv = argv
        self.returncode = returncode
        self.stderr_tail = stderr_tail
