"""Canonical JSON, record bodies and the hash chain.

A record's hash is ``sha256(canonical(record without "hash"))`` in lowercase hex, where the
canonical form is ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``
encoded as UTF-8 (which, being ASCII, is the same bytes). The record includes ``prev_hash``, the
hash of the record before it (64 zeros for the first), so the records form a chain.

ASCII escapes rather than raw UTF-8 so that any string Python holds (lone surrogates included)
has exactly one encoding, and ``jq -caS`` prints the same bytes.

The hot path never builds the record as a dict: the parts that do not depend on the chain
(action, decision, source ...) are serialised once, outside the write lock, and spliced around
the id, prev_hash and timestamp inside it. Keys are spliced in sorted order, so the result is
byte-identical to ``canonical(record)``; tests check that property.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import json
import math
import time

from aegis_cli.engine.values import Value, _set

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up
if TYPE_CHECKING:
    from typing import Any

GENESIS = "0" * 64
KINDS = ("decision", "approval", "execution", "policy_change")
# Body keys in canonical (sorted) order; "hash" is stored beside the body, never inside it.
# "origin" (where the call came from: file and line, server, client) is named so that it sorts
# before prev_hash: see Pending.
BODY_KEYS = ("action", "data", "decision", "decision_id", "id", "kind", "origin", "policy_hash", "prev_hash", "ts")


def _default(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(map(str, value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False,
                           default=_default).encode
# JSONEncoder.encode builds a new C encoder on every call, which costs more than encoding a small
# record; build it once. (markers=None: no cycle check; a cycle ends in RecursionError below.)
_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_fast = (_c_encoder(None, _default, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, False)
         if _c_encoder is not None else None)
_quote = json.encoder.encode_basestring_ascii


def canonical(value: Any) -> str:
    """The canonical JSON text of ``value``; non-JSON values are made JSON first (see ``jsonable``)."""
    if value is None:
        return "null"
    if type(value) is str:
        return _quote(value)
    try:
        return "".join(_fast(value, 0)) if _fast is not None else _encode(value)
    except (TypeError, ValueError):  # NaN, or keys that are not all strings
        return _encode(jsonable(value))
    except RecursionError:
        raise ValueError("cannot record a value that contains itself") from None


def jsonable(value: Any) -> Any:
    """``value`` with non-string keys turned into strings and NaN/Infinity into their names."""
    if isinstance(value, dict):
        return {str(_default(k)) if not isinstance(k, str) else k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    return value


def record_hash(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def body_of(record: dict[str, Any]) -> str:
    """The canonical body of an exported record (everything but ``hash``)."""
    return canonical({k: v for k, v in record.items() if k != "hash"})


# -- timestamps ---------------------------------------------------------------------------------

_second_cache: tuple[int, str] = (-1, "")


def utc_now() -> str:
    """Now as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; cheap because the second's prefix is cached."""
    global _second_cache
    us = time.time_ns() // 1000
    sec, frac = divmod(us, 1_000_000)
    cached_sec, prefix = _second_cache
    if sec != cached_sec:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second_cache = (sec, prefix)
    return f"{prefix}.{frac:06d}Z"


def format_ts(ts: _dt.datetime) -> str:
    """A datetime in the audit trail's timestamp format (UTC, microseconds, ``Z``)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=_dt.UTC)
    return ts.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- record bodies ------------------------------------------------------------------------------


class Raw(str):
    """Text that is already canonical JSON; ``pending`` splices it in as it is."""


def _text(value: Any) -> str:
    return value if isinstance(value, Raw) else canonical(value)


class Pending(Value):
    """A record waiting for its place in the chain: everything but id, prev_hash and ts.

    ``head`` is the canonical text up to ``"decision_id":``; ``did`` the decision_id's text, or ""
    for "my own id" (a decision record points to itself, so one query on decision_id finds a
    decision and all its follow-up events); ``mid`` runs from ``,"kind":`` up to the prev_hash
    value. The keys sort so that the body always ends ``"prev_hash":"<64 hex>","ts":"<27>"}``:
    verify reads the link at a fixed offset from the end, with no JSON parsing.
    """

    _fields = ("head", "did", "mid")
    __slots__ = _fields
    head: str
    did: str
    mid: str

    def __init__(self, head: str, did: str, mid: str) -> None:
        _set(self, "head", head)  # not ``init``'s loop: one per record written (see engine.models.Action)
        _set(self, "did", did)
        _set(self, "mid", mid)

    def body(self, rid: int, prev: str, ts: str) -> str:
        return f'{self.head}{self.did or rid},"id":{rid}{self.mid}{prev}","ts":"{ts}"}}'


SUFFIX_LEN = len('"prev_hash":"') + 64 + len('","ts":"') + 27 + len('"}')


def link_of(body: str) -> str | None:
    """The prev_hash of a body aegis wrote, read at its fixed place; None if it is not there."""
    tail = body[-SUFFIX_LEN:]
    if tail[:13] == '"prev_hash":"' and tail[77:85] == '","ts":"' and tail[-2:] == '"}':
        return tail[13:77]
    return None


def pending(kind: str, *, action: Any = None, data: Any = None, decision: Any = None,
            decision_id: int | None = None, policy_hash: str | None = None, origin: Any = None) -> Pending:
    """Serialise the chain-independent parts of a record once.

    For kind "decision" ``decision_id`` is ignored (the record links to itself); for the
    follow-up kinds it is the decision the event belongs to, or None.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown audit record kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "decision":
        did = ""
    elif decision_id is None:
        did = "null"
    elif isinstance(decision_id, int) and not isinstance(decision_id, bool) and decision_id > 0:
        did = str(decision_id)
    else:
        raise ValueError(f"decision_id must be a positive integer or None, not {decision_id!r}")
    head = f'{{"action":{_text(action)},"data":{_text(data)},"decision":{_text(decision)},"decision_id":'
    mid = f',"kind":"{kind}","origin":{_text(origin)},"policy_hash":{_text(policy_hash)},"prev_hash":"'
    return Pending(head, did, mid)
