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

from aegis_cli.engine.matching import Glob, compile_glob, normalize

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up
if TYPE_CHECKING:
    from typing import Any

REDACTED = "[REDACTED]"
_SEEN_LIMIT = 8192
_SCALARS = (str, int, float, type(None))  # checked first: isinstance against the Mapping ABC is slow


class Redactor:
    """Compiled redaction patterns; calling it returns a redacted copy (the input is not changed)."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(patterns)
        self._paths: list[Glob] = []
        self._names: list[Glob] = []
        self._seen: dict[str, bool] = {}
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
        # Parameter names repeat from call to call: decide each path once.
        hit = self._seen.get(path)
        if hit is None:
            npath, nkey = normalize(path), normalize(key)
            hit = any(g.test(npath) for g in self._paths) or any(g.test(nkey) for g in self._names)
            if len(self._seen) >= _SEEN_LIMIT:
                self._seen.clear()
            self._seen[path] = hit
        return hit

    def _walk(self, value: Any, prefix: str) -> Any:
        if isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                key = k if isinstance(k, str) else str(k)
                path = f"{prefix}.{key}" if prefix else key
                if self._hit(key, path):
                    out[k] = REDACTED
                elif not isinstance(v, _SCALARS) and isinstance(v, (Mapping, list, tuple)):
                    out[k] = self._walk(v, path)
                else:
                    out[k] = v
            return out
        if isinstance(value, (list, tuple)):
            return [REDACTED if self._hit(str(i), f"{prefix}.{i}") else self._walk(v, f"{prefix}.{i}")
                    for i, v in enumerate(value)]
        return value
