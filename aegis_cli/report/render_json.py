"""The report as one JSON document (``schemas/report.schema.json``), the phi accesses streamed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import IO, Any


def render_json(report: Any, out: IO[str]) -> None:
    # Everything but the access list is small; the list is written item by item after it, so
    # memory stays flat however many accesses the period holds.
    head = json.dumps(report.data, indent=1, ensure_ascii=False)
    out.write(head[:-2] + ',\n "phi_accesses": [')
    first = True
    encode = _encoder()
    for chain in report.accesses():
        out.write(("\n  " if first else ",\n  ") + encode(chain))
        first = False
    out.write("\n ]\n}\n" if not first else "]\n}\n")


def _encoder() -> Callable[[Any], str]:
    """``json.dumps(v, ensure_ascii=False, separators=(",", ":"))`` with its C encoder built once, not
    per call (building it costs more than encoding one access)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    # markers={} keeps dumps' cycle check; encode_basestring is its ensure_ascii=False string writer
    fast = make({}, json.JSONEncoder().default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    return lambda value: "".join(fast(value, 0))
