"""``--record-trace``: the JSON-RPC exchange as JSONL, in the shape ``aegis simulate`` reads.

One line per message, as the host saw it (aegis's own answers included):
``{"ts": ISO-8601, "dir": "c2s" | "s2c", "server": NAME, "msg": {...}}``. Lines written before
the server has said its name are held back and written once it has, so every line carries it.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import IO, Any


class TraceRecorder:
    def __init__(self, path: str) -> None:
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._held: list[tuple[str, str, Any]] = []
        self.server: str | None = None

    def record(self, direction: str, msg: Any) -> None:
        ts = _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        if self.server is None:
            self._held.append((ts, direction, msg))
            return
        self._write(ts, direction, msg)

    def record_line(self, direction: str, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            msg = {"unparsed": line.decode("utf-8", "replace").rstrip("\r\n")}
        self.record(direction, msg)

    def name_server(self, name: str) -> None:
        self.server = name
        held, self._held = self._held, []
        for ts, direction, msg in held:
            self._write(ts, direction, msg)

    def _write(self, ts: str, direction: str, msg: Any) -> None:
        self._file.write(json.dumps({"ts": ts, "dir": direction, "server": self.server, "msg": msg},
                                    ensure_ascii=False, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self, fallback_name: str) -> None:
        if self._held:
            self.name_server(self.server or fallback_name)
        self._file.close()
