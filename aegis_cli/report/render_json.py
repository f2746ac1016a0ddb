"""The report as one JSON document (``schemas/report.schema.json``), the phi accesses streamed."""

from __future__ import annotations

import json
from typing import IO, Any


def render_json(report: Any, out: IO[str]) -> None:
    # Everything but the access list is small; the list is written item by item after it, so
    # memory stays flat however many accesses the period holds.
    head = json.dumps(report.data, indent=1, ensure_ascii=False)
    out.write(head[:-2] + ',\n "phi_accesses": [')
    first = True
    for chain in report.accesses():
        out.write(("\n  " if first else ",\n  ") + json.dumps(chain, ensure_ascii=False, separators=(",", ":")))
        first = False
    out.write("\n ]\n}\n" if not first else "]\n}\n")
