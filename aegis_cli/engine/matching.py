"""Globs over action type, target and agent: normalised, case-insensitive, compiled once."""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from collections.abc import Callable

from aegis_cli.engine.values import Value, init


def normalize(text: str) -> str:
    """NFKC then casefold, so 'ＤＥＬＥＴＥ' and 'Delete' both read 'delete'."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", text).casefold()


def forbidden_char(text: str) -> str | None:
    """The first control or invisible format character in ``text`` (NUL, newline, ZWSP, bidi), if any.

    Such characters make a name read one way and match another, so actions holding them are
    blocked rather than matched loosely.
    """
    if text.isprintable():
        return None
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs") or ch in "\u2028\u2029":
            return ch
    return None


class GlobError(ValueError):
    pass


class Glob(Value):
    """A compiled glob. ``literal`` is set when the pattern has no wildcard."""

    _fields = ("pattern", "literal", "test")
    __slots__ = _fields
    pattern: str
    literal: str | None
    test: Callable[[str], bool]

    def __init__(self, pattern: str, literal: str | None, test: Callable[[str], bool]) -> None:
        init(self, pattern, literal, test)

    @property
    def is_any(self) -> bool:
        return self.pattern == "*"


def _always(_: str) -> bool:
    return True


def compile_glob(pattern: str, *, fold: bool = True) -> Glob:
    """Compile ``pattern`` (``*``, ``?``, ``[seq]``, ``[!seq]``) to a full-string matcher.

    With ``fold`` (type, target, agent) both sides are NFKC-normalised and casefolded; without it
    (parameter globs) matching is exact.
    """
    norm = normalize(pattern) if fold else pattern
    if norm == "*" or (norm and set(norm) == {"*"}):
        return Glob(pattern, None, _always)
    _check_brackets(norm, pattern)  # what the matcher sees: NFKC makes [ of U+FF3B, folding makes Z z
    if not any(c in norm for c in "*?["):
        return Glob(pattern, norm, norm.__eq__)
    try:
        regex = re.compile(fnmatch.translate(norm), re.DOTALL)
    except re.error as exc:
        raise GlobError(f"bad glob {pattern!r}: {exc}") from None
    match = regex.match
    return Glob(pattern, None, lambda s: match(s) is not None)


def _check_brackets(pattern: str, shown: str) -> None:
    i = 0
    n = len(pattern)
    while i < n:
        if pattern[i] == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            close = pattern.find("]", j)
            if close < 0:
                raise GlobError(
                    f"bad glob {pattern!r}: '[' at position {i + 1} is never closed (write [[] for a literal '[')"
                )
            body = pattern[i + 1 : close].lstrip("!")
            for k in range(1, len(body) - 1):
                if body[k] == "-" and body[k - 1] > body[k + 1]:
                    raise GlobError(f"bad glob {shown!r}: range {body[k - 1]}-{body[k + 1]} is reversed")
            i = close + 1
        else:
            i += 1


def glob_covers(general: Glob, specific: Glob) -> bool:
    """True when every string ``specific`` matches is also matched by ``general`` (sound, not complete)."""
    if general.is_any:
        return True
    if specific.literal is not None:
        return general.test(specific.literal)
    return normalize(general.pattern) == normalize(specific.pattern)
