"""Where a trail lives: an SQLite path, or a PostgreSQL URL. Imports nothing, so any module may ask."""

from __future__ import annotations

import os
import re

SCHEMES = ("postgresql://", "postgres://")
_PASSWORD = re.compile(r"(://[^:/@?#]*):[^@/?#]*@")


def is_postgres(target: str | os.PathLike[str] | object) -> bool:
    return isinstance(target, str) and target.lower().startswith(SCHEMES)


def shown(target: str | os.PathLike[str]) -> str:
    """The target as messages and logs may show it: a URL's password hidden."""
    text = os.fspath(target)
    return _PASSWORD.sub(r"\1:***@", text) if is_postgres(text) else text
