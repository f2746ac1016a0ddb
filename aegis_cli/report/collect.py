"""One streaming pass over the trail: verify the chain and gather the figures every section needs.

The pass reads each record once, in id order, from record 1 (a chain can only be checked from its
genesis), hashes every body and parses only the records of the period, so memory does not grow
with the trail: counts go into small dicts keyed by day, rule, tag or policy version, and keys
that can be many (agents, targets, approvers) into ``Top`` counters with a fixed capacity. The
one list that must be complete, every access to ``phi``-tagged actions with its approval chain,
is spooled to a temporary SQLite file as each chain completes, and read back in decision order.

Cost per record is what decides the time over a large trail, so the loop keeps it small: bodies
are parsed with the C scanner behind ``json.loads`` (without its per-call wrapper), decisions
are counted once per distinct (day, approval, rule, agent, system, type, risk, policy, tags)
and those counts spread into the section figures in batches, and timestamps are parsed only
for approval waits.

A record belongs to the period when its ``ts`` is at or after ``since`` and before ``until``.
Follow-ups (approvals, executions) of a ``phi`` decision in the period join its chain even when
they were written after the period ended.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import marshal
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aegis_cli.audit.verify import ChainWalk, VerifyResult

PHI = "phi"
TOP_CAPACITY = 10_000  # distinct keys a Top keeps before it starts dropping the rarest
OPEN_CAPACITY = 100_000  # decisions awaiting a follow-up that are remembered (oldest dropped first)
# approval wait buckets, upper bounds in seconds (the last is open-ended)
WAIT_BUCKETS = ((60, "< 1 min"), (300, "1-5 min"), (900, "5-15 min"), (3600, "15-60 min"),
                (4 * 3600, "1-4 h"), (24 * 3600, "4-24 h"), (float("inf"), "> 24 h"))
DENIED = ("denied", "timed_out", "cancelled", "error")
COMBO_CAPACITY = 20_000  # distinct decision shapes counted before they are added to the figures
SPOOL_BATCH = 2_000  # phi chains written to the spool at once
APPROVALS = ("auto", "approve", "block")
_scan = json.decoder.JSONDecoder().scan_once  # json.loads without its per-call Python wrapper
# a phi access's approval chain, key by key (the spool keeps the values in this order)
CHAIN_KEYS = ("decision_id", "ts", "agent", "session", "type", "target", "rule", "reason", "approval", "risk_level",
              "tags", "origin", "answer", "wait_s", "execution", "outcome")
ANSWER_KEYS = ("status", "by", "note", "ts", "id")
RUN_KEYS = ("status", "duration_ms", "error", "ts", "id")


class Top:
    """Counts per key, with a fixed capacity: past it the rarest half is dropped, and the counts
    become lower bounds (``approximate``). Exact whenever the distinct keys fit."""

    __slots__ = ("approximate", "cap", "counts", "width")

    def __init__(self, width: int = 1, cap: int = TOP_CAPACITY) -> None:
        self.counts: dict[Any, list[int]] = {}
        self.cap, self.width, self.approximate = cap, width, False

    def add(self, key: Any, column: int = 0, n: int = 1) -> None:
        row = self.counts.get(key)
        if row is None:
            if len(self.counts) >= self.cap:
                self._shrink()
            row = self.counts[key] = [0] * self.width
        row[column] += n

    def _shrink(self) -> None:
        self.approximate = True
        keep = sorted(self.counts.items(), key=lambda kv: -sum(kv[1]))[: self.cap // 2]
        self.counts = dict(keep)

    def most_common(self, n: int | None = None, column: int | None = None) -> list[tuple[Any, list[int]]]:
        def weight(kv: tuple[Any, list[int]]) -> tuple[int, str]:
            return (-(kv[1][column] if column is not None else sum(kv[1])), str(kv[0]))

        items = sorted((kv for kv in self.counts.items() if column is None or kv[1][column]), key=weight)
        return items if n is None else items[:n]


@dataclass
class TagFacts:
    decisions: int = 0
    first: str = ""
    last: str = ""
    by_approval: dict[str, int] = field(default_factory=lambda: {"auto": 0, "approve": 0, "block": 0})
    agents: Top = field(default_factory=Top)
    systems: Top = field(default_factory=Top)
    purposes: Top = field(default_factory=Top)  # (rule, reason)
    per_day: dict[str, int] = field(default_factory=dict)


@dataclass
class Facts:
    """Everything the sections are built from; plain counts, JSON-ready once sorted."""

    since: str | None
    until: str | None
    integrity: VerifyResult | None = None
    records_total: int = 0
    records: int = 0  # in the period
    first: str = ""
    last: str = ""
    last_id: int = 0  # the period's last record
    last_hash: str = ""
    by_kind: dict[str, int] = field(default_factory=dict)
    decisions: int = 0
    by_approval: dict[str, int] = field(default_factory=lambda: {"auto": 0, "approve": 0, "block": 0})
    by_risk: dict[str, int] = field(default_factory=dict)
    per_day: dict[str, list[int]] = field(default_factory=dict)  # day -> auto, approve, block, denied
    approvals: dict[str, int] = field(default_factory=dict)  # status -> n
    executions: dict[str, int] = field(default_factory=dict)
    waits: list[int] = field(default_factory=lambda: [0] * len(WAIT_BUCKETS))
    wait_sum: float = 0.0
    wait_max: float = 0.0
    wait_n: int = 0
    rules: Top = field(default_factory=lambda: Top(3))  # rule -> auto, approve, block
    access: Top = field(default_factory=lambda: Top(4))  # (agent, target) -> auto, approve, block, denied
    blocked: Top = field(default_factory=Top)  # (agent, type, target, rule)
    denied: Top = field(default_factory=Top)  # (agent, type, target, rule, status)
    approvers: Top = field(default_factory=lambda: Top(2))  # (by, rule) -> approved, refused
    agents: Top = field(default_factory=lambda: Top(2))  # agent -> decisions, refused (blocked or denied)
    targets: Top = field(default_factory=Top)
    versions: dict[str, list[Any]] = field(default_factory=dict)  # policy hash -> [n, first, last, by approval]
    changes: list[dict[str, Any]] = field(default_factory=list)
    tags: dict[str, TagFacts] = field(default_factory=dict)
    phi_decisions: int = 0
    phi_by_outcome: dict[str, int] = field(default_factory=dict)
    unmatched_followups: int = 0  # approvals/executions whose decision is outside the pass's memory
    spool: PhiSpool | None = None

    def accesses(self) -> Iterator[dict[str, Any]]:
        return self.spool.read() if self.spool is not None else iter(())


class PhiSpool:
    """The complete approval chains of phi decisions, on disk, read back in decision order.

    Each chain is stored as a ``marshal`` blob of its values in ``CHAIN_KEYS`` order (a private
    temporary file this process writes and reads back: the cheapest exact round trip of JSON values).
    """

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="aegis-report-", suffix=".db")
        os.close(fd)
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = OFF")
        self.conn.execute("PRAGMA synchronous = OFF")
        self.conn.execute("CREATE TABLE chain (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        self.conn.execute("BEGIN")
        self.n = 0
        self._batch: list[tuple[int, bytes]] = []

    def put(self, chain: dict[str, Any]) -> None:
        # values only, in CHAIN_KEYS order (the keys would be most of each blob); the chain's keys
        # are in that order because collect builds it so and _close adds "outcome" last
        row = list(chain.values())
        if row[12] is not None:
            row[12] = tuple(row[12].values())  # answer: ANSWER_KEYS
        if row[14] is not None:
            row[14] = tuple(row[14].values())  # execution: RUN_KEYS
        self._batch.append((chain["decision_id"], marshal.dumps(row)))
        self.n += 1
        if len(self._batch) >= SPOOL_BATCH:
            self._write()

    def _write(self) -> None:
        self.conn.executemany("INSERT OR REPLACE INTO chain VALUES (?, ?)", self._batch)
        self._batch.clear()

    def done(self) -> None:
        if self._batch:
            self._write()
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")

    def read(self) -> Iterator[dict[str, Any]]:
        self.done()
        loads, keys, answer_keys, run_keys = marshal.loads, CHAIN_KEYS, ANSWER_KEYS, RUN_KEYS
        for (body,) in self.conn.execute("SELECT body FROM chain ORDER BY id"):
            chain = dict(zip(keys, loads(body), strict=True))
            if chain["answer"] is not None:
                chain["answer"] = dict(zip(answer_keys, chain["answer"], strict=True))
            if chain["execution"] is not None:
                chain["execution"] = dict(zip(run_keys, chain["execution"], strict=True))
            yield chain

    def close(self) -> None:
        self.conn.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _outcome(chain: dict[str, Any]) -> str:
    """One word for what became of a phi access."""
    if chain["approval"] == "block":
        return "blocked"
    answer = chain.get("answer")
    if chain["approval"] == "approve":
        if answer is None:
            return "no answer recorded"
        if answer["status"] != "approved":
            return answer["status"]
    run = chain.get("execution")
    if run is None:
        return "allowed, no execution recorded"
    return "ran" if run["status"] == "ok" else f"ran: {run['status']}"


def _seconds(later: str, earlier: str) -> float:
    # the trail's own format (UTC, "Z") directly; anything else the general way
    if later[-1:] == "Z" and earlier[-1:] == "Z":
        with contextlib.suppress(ValueError):
            return (_dt.datetime.fromisoformat(later) - _dt.datetime.fromisoformat(earlier)).total_seconds()
    from aegis_cli.engine.models import parse_timestamp

    return (parse_timestamp(later) - parse_timestamp(earlier)).total_seconds()


def collect(rows: Iterable[tuple[int, str, str]], head: Callable[[], tuple[int, str]], *,
            since: str | None = None, until: str | None = None,
            progress: Callable[[int], None] | None = None) -> Facts:
    """Walk ``(id, hash, body)`` rows in id order once; the chain is verified as they pass."""
    f = Facts(since, until)
    f.spool = PhiSpool()
    walk = ChainWalk()
    sha = hashlib.sha256
    scan, loads = _scan, json.loads
    open_approvals: dict[int, tuple[Any, ...]] = {}  # decision id -> (ts, agent, type, target, rule)
    open_phi: dict[int, dict[str, Any]] = {}  # decision id -> its chain so far
    # (day, approval column, rule, agent, target, type, risk, policy hash, reason, tags) -> [n, first ts,
    # last ts, last id]: the same few shapes recur, so each is counted here and added once per batch
    combos: dict[tuple[Any, ...], list[Any]] = {}
    marks: dict[Any, int] = {}  # policy hash or tag -> id of the last decision whose ts is its "last"
    per_day, by_kind, approvals, executions = f.per_day, f.by_kind, f.approvals, f.executions
    col = {"auto": 0, "approve": 1, "block": 2}
    total = records = 0
    first = last = last_hash = ""
    last_id = 0
    intact, expected_prev, expected_id, verified = True, walk.expected_prev, walk.expected_id, walk.n
    for rid, stored, body in rows:
        total += 1
        if progress is not None and not total % 10_000:
            progress(10_000)
        if intact:
            # the common case inlined, on locals (ChainWalk.step does the same, and words any problem)
            if (rid == expected_id and body[-101:-37] == expected_prev
                    and body[-114:-101] == '"prev_hash":"' and body[-37:-29] == '","ts":"'
                    and sha(body.encode()).hexdigest() == stored):
                expected_prev, expected_id, verified = stored, rid + 1, verified + 1
            else:
                walk.expected_prev, walk.expected_id, walk.n = expected_prev, expected_id, verified
                intact = walk.step(rid, stored, body)
                expected_prev, expected_id, verified = walk.expected_prev, walk.expected_id, walk.n
        ts = body[-29:-2]
        if (since is not None and ts < since) or (until is not None and ts >= until):
            if open_phi and (until is not None and ts >= until) and '"kind":"decision"' not in body:
                rec = loads(body)
                chain = open_phi.get(rec["decision_id"])
                if chain is not None:
                    _follow(f, chain, rec, open_phi)
            continue
        try:
            rec, end = scan(body, 0)
        except (StopIteration, ValueError):
            end = -1
        if end != len(body):  # not one bare JSON value: json.loads words the problem (or reads it)
            rec = loads(body)
        kind = rec["kind"]
        records += 1
        if not first:
            first = ts
        last, last_id, last_hash = ts, rid, stored
        by_kind[kind] = by_kind.get(kind, 0) + 1
        if kind == "decision":
            d, a = rec["decision"], rec["action"]
            c = col[d["approval"]]
            rule = d["rule"] or "(defaults)"
            agent, target, type_ = a["agent"] or "(none)", a["target"], a["type"]
            tags = d.get("tags")
            key = (ts[:10], c, rule, agent, target, type_, d["risk_level"], rec["policy_hash"] or "(none)",
                   d["reason"] if tags else None, tuple(tags) if tags else ())
            n = combos.get(key)
            if n is None:
                if len(combos) >= COMBO_CAPACITY:
                    _add_decisions(f, combos, marks)
                combos[key] = [1, ts, ts, rid]
            else:
                n[0] += 1
                n[2] = ts
                n[3] = rid
            if c == 1:
                if len(open_approvals) >= OPEN_CAPACITY:
                    del open_approvals[next(iter(open_approvals))]
                open_approvals[rid] = (ts, agent, type_, target, rule)
            if tags and PHI in tags:
                f.phi_decisions += 1
                approval = APPROVALS[c]
                chain = {"decision_id": rid, "ts": ts, "agent": a["agent"], "session": a["session"],
                         "type": type_, "target": target, "rule": d["rule"], "reason": d["reason"],
                         "approval": approval, "risk_level": d["risk_level"], "tags": tags,
                         "origin": rec["origin"], "answer": None, "wait_s": None, "execution": None}
                if c == 2:
                    _close(f, chain)
                else:
                    if len(open_phi) >= OPEN_CAPACITY:
                        _close(f, open_phi.pop(next(iter(open_phi))))
                    open_phi[rid] = chain
        elif kind == "execution":
            status = (rec["data"] or {}).get("status", "")
            executions[status] = executions.get(status, 0) + 1
            did = rec["decision_id"]
            chain = open_phi.get(did) if did is not None else None
            if chain is not None:
                _follow(f, chain, rec, open_phi)
        elif kind == "approval":
            data = rec["data"] or {}
            status = data.get("status", "")
            approvals[status] = approvals.get(status, 0) + 1
            did = rec["decision_id"]
            asked = open_approvals.pop(did, None) if did is not None else None
            if asked is None:
                f.unmatched_followups += 1
            else:
                wait = _seconds(ts, asked[0])
                f.wait_n += 1
                f.wait_sum += wait
                f.wait_max = max(f.wait_max, wait)
                for i, (bound, _) in enumerate(WAIT_BUCKETS):
                    if wait < bound:
                        f.waits[i] += 1
                        break
                _, agent, type_, target, rule = asked
                refused = status != "approved"
                f.approvers.add((data.get("by") or "(unknown)", rule), 1 if refused else 0)
                if refused:
                    f.denied.add((agent, type_, target, rule, status))
                    f.agents.add(agent, 1)
                    f.access.add((agent, target), 3)
            if status in DENIED:
                day = ts[:10]
                row = per_day.get(day)
                if row is None:
                    row = per_day[day] = [0, 0, 0, 0]
                row[3] += 1
            chain = open_phi.get(did) if did is not None else None
            if chain is not None:
                _follow(f, chain, rec, open_phi)
        elif kind == "policy_change" and len(f.changes) < TOP_CAPACITY:
            data = rec["data"] or {}
            f.changes.append({"id": rid, "ts": ts, "by": data.get("by", ""), "old_hash": data.get("old_hash"),
                              "new_hash": data.get("new_hash"), "source": data.get("source", "")})
    if progress is not None:
        progress(total % 10_000)
    _add_decisions(f, combos, marks)
    for chain in open_phi.values():
        _close(f, chain)
    f.records_total, f.records = total, records
    f.first, f.last, f.last_id, f.last_hash = first, last, last_id, last_hash
    if intact:
        walk.expected_prev, walk.expected_id, walk.n = expected_prev, expected_id, verified
    f.integrity = walk.finish(head()) if walk.bad is None else walk.bad
    f.spool.done()
    return f


def _add_decisions(f: Facts, combos: dict[tuple[Any, ...], list[Any]], marks: dict[Any, int]) -> None:
    """Add the counted decision shapes to the figures, then forget them.

    Called in id order (each batch after the one before), and a dict keeps its keys in the order
    they were first seen, so "first" is the first batch's first shape that has it and "last" the
    shape seen last (``marks``): the same as adding each decision as it passed. Counts are sums,
    whatever the order; only ``Top`` counters past their capacity (marked approximate) may keep
    slightly different lower bounds than one-by-one adding would.
    """
    per_day, by_approval, by_risk, versions, tags_ = f.per_day, f.by_approval, f.by_risk, f.versions, f.tags
    for (day, c, rule, agent, target, type_, risk, ph, reason, tags), (n, first, last, last_id) in combos.items():
        approval = APPROVALS[c]
        f.decisions += n
        by_approval[approval] = by_approval.get(approval, 0) + n
        by_risk[risk] = by_risk.get(risk, 0) + n
        row = per_day.get(day)
        if row is None:
            row = per_day[day] = [0, 0, 0, 0]
        row[c] += n
        f.rules.add(rule, c, n)
        f.access.add((agent, target), c, n)
        f.agents.add(agent, 0, n)
        f.targets.add(target, 0, n)
        if c == 2:
            f.blocked.add((agent, type_, target, rule), 0, n)
            f.agents.add(agent, 1, n)
        v = versions.get(ph)
        if v is None:
            v = versions[ph] = [0, first, last, {"auto": 0, "approve": 0, "block": 0}]
        v[0] += n
        v[3][approval] += n
        if last_id > marks.get(("policy", ph), 0):
            marks[("policy", ph)] = last_id
            v[2] = last
        for tag in tags:
            t = tags_.get(tag)
            if t is None:
                t = tags_[tag] = TagFacts(first=first)
            t.decisions += n
            if last_id > marks.get(("tag", tag), 0):
                marks[("tag", tag)] = last_id
                t.last = last
            t.by_approval[approval] += n
            t.agents.add(agent, 0, n)
            t.systems.add(target, 0, n)
            t.purposes.add((rule, reason), 0, n)
            t.per_day[day] = t.per_day.get(day, 0) + n
    combos.clear()


def _follow(f: Facts, chain: dict[str, Any], rec: dict[str, Any], open_phi: dict[int, dict[str, Any]]) -> None:
    """Add an approval or execution to an open phi chain; close the chain when nothing more can follow."""
    data = rec["data"] or {}
    if rec["kind"] == "approval":
        chain["answer"] = {"status": data.get("status"), "by": data.get("by", ""), "note": data.get("note", ""),
                           "ts": rec["ts"], "id": rec["id"]}
        chain["wait_s"] = round(_seconds(rec["ts"], chain["ts"]), 3)
        if data.get("status") != "approved":
            _close(f, open_phi.pop(chain["decision_id"]))
    elif rec["kind"] == "execution":
        chain["execution"] = {"status": data.get("status"), "duration_ms": data.get("duration_ms"),
                              "error": data.get("error", ""), "ts": rec["ts"], "id": rec["id"]}
        _close(f, open_phi.pop(chain["decision_id"]))


def _close(f: Facts, chain: dict[str, Any]) -> None:
    chain["outcome"] = outcome = _outcome(chain)
    f.phi_by_outcome[outcome] = f.phi_by_outcome.get(outcome, 0) + 1
    assert f.spool is not None
    f.spool.put(chain)
