"""``POST /api/v1/evaluate`` answered by aegis's own HTTP protocol (serve.protocol), on raw sockets.

The protocol takes that route before uvicorn builds its ASGI objects; everything else still goes
through ASGI. A path that only decodes to the route (``/api/v1/%65valuate``) is not taken by the
protocol, so it reaches the same endpoint through ASGI: the two must answer alike, byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from pg import verifies
from test_serve_helpers import ServeProcess, records, trail_for

from aegis_cli.audit import open_audit
from aegis_cli.audit.checkpoint import BACKSTOP_PAGES
from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel
from aegis_cli.serve.writer import AuditWriter, WriterClosed

FAST = b"/api/v1/evaluate"
VIA_ASGI = b"/api/v1/%65valuate"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("serve-protocol")
    with ServeProcess(tmp, args=["--no-watch"], audit_db=trail_for(request, tmp)) as srv:
        yield srv


def post(path: bytes, body: bytes, headers: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (b"POST " + path + b" HTTP/" + version + b"\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + headers + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class Conn:
    """One keep-alive connection, reading whole responses (head, body) as they come."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[bytes, bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        m = re.search(rb"\r\ncontent-length: (\d+)", head)
        size = int(m.group(1)) if m else 0
        while len(self.buf) < size:
            self._more()
        body, self.buf = self.buf[:size], self.buf[size:]
        return head, body

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed; read so far: {self.buf!r}")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def ask(port: int, data: bytes) -> tuple[bytes, bytes]:
    conn = Conn(port)
    try:
        conn.send(data)
        return conn.response()
    finally:
        conn.close()


def _same_shape(head: bytes, body: bytes) -> tuple[bytes, bytes]:
    # Audit ids differ between two requests (and with them the Content-Length): everything else may not.
    return re.sub(rb"\r\ncontent-length: \d+", b"", head), re.sub(rb'"audit_id":\d+', b'"audit_id":N', body)


CASES: list[tuple[bytes, bytes, bytes]] = [  # (body, query, extra headers)
    (b'{"type": "read", "target": "crm", "params": {"q": "caf\xc3\xa9 \xe2\x82\xac"}, "agent": "bot"}', b"", b""),
    (b'{"type": "delete", "target": "production", "params": {"count": 1.5e10}, '
     b'"timestamp": "2024-05-01T10:00:00Z", "session": "s"}', b"?explain=true", b""),
    (b'{"actions": [{"type": "read", "target": "crm"}, {"type": "Bash", "target": "x"}]}', b"?explain=0", b""),
    (b'{"type": "read", "target": "crm"}', b"?explain=maybe", b""),
    (b'{"type": "read", "target": "crm"}', b"?verbose=1", b""),
    (b'{"type": "read", "type": "delete", "target": "crm"}', b"", b""),
    (b"", b"", b""),
    (b"[1, 2]", b"", b""),
    (b'{"type": "read", "target": "crm"}', b"", b"Origin: https://evil.example\r\n"),
    (b'{"type": "read", "target": "crm"}', b"", b"Host: evil.example\r\n"),
    (b'{"type": "read", "target": "\\ud800"}', b"", b""),
]


def test_answers_equal_the_asgi_route(server: ServeProcess) -> None:
    before = max(records(server.audit_db), default=0)
    audited = []
    for body, query, headers in CASES:
        fast = ask(server.port, post(FAST + query, body, headers))
        slow = ask(server.port, post(VIA_ASGI + query, body, headers))
        assert _same_shape(*fast) == _same_shape(*slow), (body, query, headers)
        if fast[0].startswith(b"HTTP/1.1 200"):
            answer = json.loads(fast[1])
            audited += [d["audit_id"] for d in answer.get("decisions", [answer])]
    assert len(audited) == 4  # 1 + 1 + 2 decisions, each in the trail with what was answered
    trail = records(server.audit_db)
    assert all(trail[i]["kind"] == "decision" for i in audited)
    assert len([i for i in trail if i > before]) == 8  # and nothing for the refused requests
    assert verifies(server.audit_db).ok


def test_pipelined_requests_are_answered_in_order(server: ServeProcess) -> None:
    conn = Conn(server.port)
    sent = []
    for i in range(60):
        if i % 10 == 3:
            sent.append(("health", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
        else:
            path = VIA_ASGI if i % 10 == 7 else FAST
            sent.append((f"t{i}", post(path, json.dumps({"type": "read", "target": f"t{i}"}).encode())))
    try:
        conn.send(b"".join(data for _, data in sent))  # all at once: the server reads them together
        got = []
        for _ in sent:
            head, body = conn.response()
            assert head.startswith(b"HTTP/1.1 200"), (head, body)
            answer = json.loads(body)
            got.append(answer["action"]["target"] if "action" in answer else "health")
    finally:
        conn.close()
    assert got == [name for name, _ in sent]


def test_continue_chunks_oversized_bodies_and_http_1_0(server: ServeProcess) -> None:
    conn = Conn(server.port)
    try:
        body = b'{"type": "read", "target": "expect"}'
        conn.send(b"POST /api/v1/evaluate HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        head, _ = conn.response()
        assert head.startswith(b"HTTP/1.1 100 Continue")
        conn.send(body)
        head, answer = conn.response()
        assert head.startswith(b"HTTP/1.1 200") and json.loads(answer)["action"]["target"] == "expect"

        conn.send(b"POST /api/v1/evaluate HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\n{\"typ\r\n")
        time.sleep(0.2)  # the rest arrives later, in another read
        rest = b'e": "read", "target": "chunked"}'
        conn.send(b"%x\r\n" % len(rest) + rest + b"\r\n0\r\n\r\n")
        head, answer = conn.response()
        assert head.startswith(b"HTTP/1.1 200") and json.loads(answer)["action"]["target"] == "chunked"

        # Over the limit without declaring a length: 413 once it is over, the rest read and dropped,
        # and the connection serves the next request.
        conn.send(b"POST /api/v1/evaluate HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b" " * 100_000
        conn.send(b"".join(b"%x\r\n" % len(piece) + piece + b"\r\n" for _ in range(12)) + b"0\r\n\r\n")
        head, answer = conn.response()
        assert head.startswith(b"HTTP/1.1 413") and json.loads(answer)["error"] == "body_too_large"
        conn.send(post(FAST, b'{"type": "read", "target": "after"}'))
        head, answer = conn.response()
        assert head.startswith(b"HTTP/1.1 200") and json.loads(answer)["action"]["target"] == "after"
    finally:
        conn.close()

    head, answer = ask(server.port, b"POST /api/v1/evaluate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    b"Content-Length: 2000000\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and "2000000" in json.loads(answer)["message"]

    old = Conn(server.port)
    try:
        old.send(post(FAST, b'{"type": "read", "target": "http10"}', version=b"1.0"))
        head, answer = old.response()
        assert head.startswith(b"HTTP/1.1 200") and b"\r\nconnection: close" in head
        assert old.closed()
    finally:
        old.close()


def test_clients_that_leave_before_the_answer(server: ServeProcess) -> None:
    def decisions() -> int:
        _, body = ask(server.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        return int(json.loads(body)["audit"]["decisions"])

    before = decisions()
    for i in range(40):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(post(FAST, json.dumps({"type": "read", "target": f"gone{i}"}).encode()))
        sock.close()
    # Each request was read whole, so each was decided and audited; nobody was there to be answered.
    deadline = time.monotonic() + 20
    while decisions() < before + 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert decisions() == before + 40
    head, _ = ask(server.port, post(FAST, b'{"type": "read", "target": "still"}'))
    assert head.startswith(b"HTTP/1.1 200")
    assert verifies(server.audit_db).ok


# -- AuditWriter.submit ------------------------------------------------------------------------------

DECISION = Decision(Approval.AUTO, RiskLevel.LOW, "r", "ok", "sha256:x")


def test_submissions_of_one_loop_pass_share_one_commit(tmp_path: Path, audit_target: str) -> None:
    writer = AuditWriter(lambda: open_audit(audit_target))
    writer.start()

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(50)]
        for i, future in enumerate(futures):
            def done(ids: Any, exc: BaseException | None, future: asyncio.Future[Any] = future) -> None:
                future.set_result(exc or ids)

            writer.submit([(Action("read", f"t{i}"), DECISION, None)] * 2, done)
        return await asyncio.gather(*futures)

    try:
        results = asyncio.run(main())
    finally:
        writer.close()
    assert [r for pair in results for r in pair] == list(range(1, 101))  # in order, each pair contiguous
    assert writer.batches == 1 and writer.decisions == 100


def test_submit_to_a_closing_writer_gives_no_ids(tmp_path: Path) -> None:
    writer = AuditWriter(lambda: open_audit(tmp_path / "a.db"))
    writer.start()
    got: list[Any] = []

    async def main() -> None:
        writer.submit([(Action("read", "x"), DECISION, None)], lambda ids, exc: got.append((ids, exc)))
        writer.close()  # before the loop pass ends: nothing of it reaches the writer thread
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert len(got) == 1 and got[0][0] is None and isinstance(got[0][1], WriterClosed)
    assert writer.decisions == 0
    with pytest.raises(WriterClosed):
        asyncio.run(_submit_now(writer))


async def _submit_now(writer: AuditWriter) -> None:
    writer.submit([(Action("read", "x"), DECISION, None)], lambda ids, exc: None)


def test_wal_checkpoints_run_beside_the_writer(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    writer = AuditWriter(lambda: open_audit(db))
    writer.start()

    async def main() -> None:
        for i in range(30):
            await writer.record([(Action("read", f"t{i}"), DECISION, None)] * 5)

    try:
        asyncio.run(main())
        checkpointer = writer.call_sync(lambda log: log._checkpointer)
        assert checkpointer is not None  # the group-commit writer's logger moved them to their thread
        # The writer checkpoints itself only as a backstop, at a larger size than SQLite's 1000 pages.
        assert writer.call_sync(lambda log: log.db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) \
            == BACKSTOP_PAGES
        deadline = time.monotonic() + 10
        while checkpointer.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert checkpointer.checkpoints > 0
    finally:
        writer.close()
    assert not checkpointer._thread.is_alive()  # this writer's (another test's unclosed logger may have one)
    assert verifies(str(db)).ok and writer.decisions == 150
