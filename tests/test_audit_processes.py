"""The audit trail across real processes: concurrent writers, SIGKILL, tail -f."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from aegis_cli.audit import open_audit, open_reader, query
from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel

WRITER = textwrap.dedent("""
    import sys
    from aegis_cli.audit import open_audit
    from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel
    path, name, batches, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    dec = Decision(Approval.AUTO, RiskLevel.LOW, "r", "ok", "sha256:x")
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    sys.stdin.readline()  # start together
    with open_audit(path) as log:
        for b in range(batches):
            items = [(Action("read", f"{name}-{b}-{i}", {"w": name, "b": b, "i": i}, agent=name), dec, None)
                     for i in range(size)]
            if size == 1:
                ids = [log.record_decision(*items[0][:2])]
            else:
                ids = log.record_decisions(items)
            # reported only after record_* returned
            sys.stdout.write(" ".join(map(str, ids)) + "\\n"); sys.stdout.flush()
""")


def _interruptible() -> None:
    # A job started in the background by a non-interactive shell (`cmd &`, as some CI runners do)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: Ctrl-C is what
    # these children are stopped with, so they get the default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _spawn(args: list[str], **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_interruptible,
                            **kw)  # type: ignore[call-overload]


_queues: dict[int, queue.Queue[str]] = {}


def _readline(proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    """The child's next stdout line (a thread reads, so buffering cannot hide lines from select)."""
    q = _queues.get(proc.pid)
    if q is None:
        q = _queues[proc.pid] = queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout

        def pump() -> None:
            for line in stream:
                q.put(line)
            q.put("")

        threading.Thread(target=pump, daemon=True).start()
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("no output from the child process in time") from None


def _rest(proc: subprocess.Popen[str]) -> list[str]:
    """Every line still to come, once the child has exited."""
    out = []
    while (line := _readline(proc)) != "":
        out.append(line)
    return out


def test_four_processes_writing_at_once_make_one_complete_chain(audit_target: str) -> None:
    _four_writers(audit_target, 30, 25)


def test_four_processes_times_5000_records_into_one_postgresql_trail(pg_url: str) -> None:
    # 20,000 records from 4 processes at once: one chain, no gaps, batches never interleaved
    _four_writers(pg_url, 50, 100, small=10)


def _four_writers(db: str, batches: int, size: int, small: int = 1) -> None:
    """Writers w0, w2 append ``batches`` x ``size``; w1, w3 the same number of batches of ``small``."""
    open_audit(db).close()  # created up front; concurrent creation is covered below
    procs = [_spawn(["-c", WRITER, str(db), f"w{k}", str(batches), str(small if k % 2 else size)])
             for k in range(4)]
    for p in procs:
        assert _readline(p) == "ready\n"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    reported: dict[str, list[int]] = {}
    for k, p in enumerate(procs):
        assert p.wait(timeout=90) == 0, p.stderr.read() if p.stderr else ""
        reported[f"w{k}"] = [int(x) for line in _rest(p) for x in line.split()]
    expected = 2 * batches * size + 2 * batches * small
    reader = open_reader(db)
    result = reader.verify()
    assert result.ok and result.records == expected
    recs = [query.record(r) for r in reader.rows()]
    reader.close()
    by_id = {r["id"]: r for r in recs}
    for name, ids in reported.items():
        assert len(ids) == len(set(ids))
        # every id a writer was given holds that writer's record, in the order it wrote them
        targets = [by_id[i]["action"]["target"] for i in ids]
        assert all(t.startswith(f"{name}-") for t in targets)
        order = [by_id[i]["action"]["params"]["b"] for i in ids]
        assert order == sorted(order)
    # each batch is contiguous: records of one transaction are never interleaved with another's
    for name, n in (("w0", size), ("w1", small), ("w2", size), ("w3", small)):
        ids = reported[name]
        assert len(ids) == batches * n
        for b in range(batches):
            chunk = ids[b * n:(b + 1) * n]
            assert chunk == list(range(chunk[0], chunk[0] + n))


def test_concurrent_first_open_migrates_once(audit_target: str) -> None:
    db = audit_target
    procs = [_spawn(["-c", WRITER, str(db), f"w{k}", "3", "2"]) for k in range(4)]
    for p in procs:
        assert _readline(p) == "ready\n"
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read() if p.stderr else ""
    reader = open_reader(db)
    assert reader.verify().records == 24
    names = [r[0] for r in reader.conn.execute("SELECT name FROM _aegis_migrations")]
    reader.close()
    assert len(names) == len(set(names))


def test_a_writer_killed_with_sigkill_loses_no_reported_decision(audit_target: str) -> None:
    db = audit_target
    for size in ("1", "50"):
        p = _spawn(["-c", WRITER, str(db), f"k{size}", "100000", size])
        assert _readline(p) == "ready\n"
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
        reported: list[int] = []
        while len(reported) < 200:
            reported.extend(int(x) for x in _readline(p).split())
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        # anything it managed to print before dying was reported too
        reported.extend(int(x) for line in _rest(p) for x in line.split() if x.isdigit())
        reader = open_reader(db)
        result = reader.verify()
        present = {r[0] for r in reader.rows()}
        reader.close()
        assert result.ok
        assert set(reported) <= present
    # and the database still takes writes after the crash
    with open_audit(db) as log:
        log.record_decision(Action("x", "y"), Decision(Approval.AUTO, RiskLevel.LOW, None, "", ""))


def test_tail_follow_sees_records_written_by_another_process(audit_target: str) -> None:
    db = audit_target
    dec = Decision(Approval.BLOCK, RiskLevel.HIGH, "r", "no", "h")
    with open_audit(db) as log:
        log.record_decision(Action("old", "one"), dec)
    env = {**os.environ, "AEGIS_AUDIT_DB": str(db)}
    tail = _spawn(["-m", "aegis_cli", "tail-audit", "-f", "-n", "1", "--format", "jsonl"], env=env)
    try:
        assert json.loads(_readline(tail))["action"]["type"] == "old"
        writer = _spawn(["-c", WRITER, str(db), "other", "2", "3"])
        assert _readline(writer) == "ready\n"
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.wait(timeout=30) == 0
        got = []
        start = time.monotonic()
        while len(got) < 6:
            got.append(json.loads(_readline(tail, timeout=10)))
        assert time.monotonic() - start < 10
        assert [g["action"]["agent"] for g in got] == ["other"] * 6
        assert [g["id"] for g in got] == [2, 3, 4, 5, 6, 7]
    finally:
        tail.send_signal(signal.SIGINT)
        tail.wait(timeout=10)
    err = tail.stderr.read() if tail.stderr else ""
    assert tail.returncode == 0, err
    assert "Traceback" not in err


def test_tail_follow_waits_for_a_trail_that_does_not_exist_yet(tmp_path: Path) -> None:
    db = tmp_path / "later.db"
    tail = _spawn(["-m", "aegis_cli", "tail-audit", "-f", "-n", "100", "--format", "jsonl", "--audit-db", str(db)])
    try:
        time.sleep(1.0)
        assert tail.poll() is None  # still waiting, not exited
        writer = _spawn(["-c", WRITER, str(db), "late", "2", "2"])
        assert _readline(writer) == "ready\n"
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.wait(timeout=30) == 0
        got = [json.loads(_readline(tail, timeout=15)) for _ in range(4)]
        assert [g["id"] for g in got] == [1, 2, 3, 4] and {g["action"]["agent"] for g in got} == {"late"}
    finally:
        tail.send_signal(signal.SIGINT)
        tail.wait(timeout=10)
    err = tail.stderr.read() if tail.stderr else ""
    assert tail.returncode == 0 and "does not exist yet; waiting" in err and "Traceback" not in err
