"""The errors aegis raises. Catch ``AegisError`` for all of them."""

from __future__ import annotations

from aegis_cli.engine.values import Value, init


class AegisError(Exception):
    """Base class of every error aegis raises on purpose."""


class Issue(Value):
    """One problem found in a policy file, located as precisely as the file allows."""

    _fields = ("file", "line", "column", "message", "severity", "path")
    __slots__ = _fields
    file: str
    line: int | None
    column: int | None
    message: str
    severity: str  # "error" or "warning"
    path: str  # JSON-pointer-ish path inside the document, e.g. rules/3/conditions

    def __init__(self, file: str, line: int | None, column: int | None, message: str, severity: str = "error",
                 path: str = "") -> None:
        init(self, file, line, column, message, severity, path)

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.severity}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "severity": self.severity,
            "message": self.message,
            "path": self.path,
        }


class PolicyError(AegisError, ValueError):
    """A policy file could not be loaded. ``issues`` lists every problem found, located."""

    def __init__(self, issues: list[Issue] | Issue) -> None:
        self.issues = [issues] if isinstance(issues, Issue) else list(issues)
        first = self.issues[0] if self.issues else Issue("<policy>", None, None, "invalid policy")
        self.file, self.line, self.column = first.file, first.line, first.column
        more = f" (and {len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        super().__init__(f"{first}{more}")


class InputError(AegisError, ValueError):
    """An action, trace line or other input was not of the expected shape."""
