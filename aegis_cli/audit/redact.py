"""Redaction of action parameters before they reach the audit trail.

A policy's ``audit: {redact: [...]}`` lists patterns. Each is a glob (``*``, ``?``, ``[seq]``,
case-insensitive) matched against the dotted path of every key in the parameters:
``{"db": {"password": "x"}}`` has the paths ``db`` and ``db.password``; list items are numbered
(``items.0.token``). ``*`` spans dots, so ``*.token`` matches a ``token`` key at any depth below
the top. A pattern without a dot also matches a key of that name at any depth, because
``password`` is meant to hide every password. A matched key keeps its name; its value (however
deep) becomes ``"[REDACTED]"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aegis_cli.matching import Glob, compile_glob, normalize

REDACTED = "[REDACTED]"


class Redactor:
    """Compiled redaction patterns; calling it returns a redacted copy (the input is not changed)."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(patterns)
        self._paths: list[Glob] = []
        self._names: list[Glob] = []
        for p in self.patterns:
            glob = compile_glob(p)
            self._paths.append(glob)
            if "." not in p:
                self._names.append(glob)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __call__(self, params: Mapping[str, Any]) -> dict[str, Any]:
        if not self.patterns or not params:
            return dict(params)
        return self._walk(params, "")

    def _hit(self, key: str, path: str) -> bool:
        npath = normalize(path)
        if any(g.test(npath) for g in self._paths):
            return True
        nkey = normalize(key)
        return any(g.test(nkey) for g in self._names)

    def _walk(self, value: Any, prefix: str) -> Any:
        if isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                key = str(k)
                path = f"{prefix}.{key}" if prefix else key
                out[k] = REDACTED if self._hit(key, path) else self._walk(v, path)
            return out
        if isinstance(value, (list, tuple)):
            return [REDACTED if self._hit(str(i), f"{prefix}.{i}") else self._walk(v, f"{prefix}.{i}")
                    for i, v in enumerate(value)]
        return value
