"""BFCL multi-turn ground truth: ``{"id", "ground_truth": [["cd(folder='document')", ...], ...]}``.

Each call is a Python call expression. It is parsed, never evaluated: keyword arguments become
params, positional ones ``params["args"]``; any argument that is not a literal makes the call
malformed rather than guessed at.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import Any, ClassVar

from aegis_cli.traces.base import Item, Location, MalformedRecord, Problem, ToolCall, as_str


def parse_call(text: str) -> tuple[str, dict[str, Any]]:
    """``"mv(source='a', destination='b')"`` -> ("mv", {"source": "a", "destination": "b"})."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise MalformedRecord(f"not a Python call: {exc.msg}") from None
    if not isinstance(node, ast.Call):
        raise MalformedRecord("not a function call")
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if name is None:
        raise MalformedRecord("call of something that is not a name")
    try:
        params: dict[str, Any] = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        if node.args:
            params["args"] = [ast.literal_eval(a) for a in node.args]
    except ValueError:
        raise MalformedRecord(f"{name}(): an argument is not a literal") from None
    return name, params


class BFCLReader:
    name: ClassVar[str] = "bfcl"
    description: ClassVar[str] = "BFCL ground truth ({id, ground_truth: [[python call strings]]})"

    @staticmethod
    def detect(record: Any) -> bool:
        return isinstance(record, dict) and isinstance(record.get("ground_truth"), list)

    def read(self, record: Any, where: Location) -> Iterator[Item]:
        if not isinstance(record, dict) or not isinstance(record.get("ground_truth"), list):
            raise MalformedRecord("BFCL record without a 'ground_truth' list")
        session = as_str(record.get("id"))
        for t, turn in enumerate(record["ground_truth"]):
            turn_calls = turn if isinstance(turn, list) else [turn]
            for c, text in enumerate(turn_calls):
                at = where.at("ground_truth", t, c) if isinstance(turn, list) else where.at("ground_truth", t)
                if not isinstance(text, str):
                    yield Problem(at, "a BFCL call must be a string")
                    continue
                try:
                    name, params = parse_call(text)
                except MalformedRecord as exc:
                    yield Problem(at, str(exc))
                    continue
                yield ToolCall(name, params, at, session=session)
