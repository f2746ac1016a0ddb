"""``aegis report`` over a large trail: one verifying pass, every section, HTML written.

    python bench/bench_report.py                       # 1,000,000 records
    python bench/bench_report.py --records 200000 --format json --keep /tmp/report-bench.db

Target (issue 13): the report over 1,000,000 records in under 15 s and under 200 MB peak memory.
The trail is a month of clinic-like activity (tagged decisions, approvals, executions, a policy
change) stamped across 30 days; the report runs as the real CLI in a fresh process, so its time
includes start-up and its peak memory is that process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aegis_cli import Action, Policy
from aegis_cli.audit import open_audit, store
from aegis_cli.audit.canonical import format_ts
from aegis_cli.audit.sqlite import decision_entry, event_entry

POLICY = Path(__file__).parent.parent / "examples" / "compliance" / "policy.yaml"
CALLS = [  # (type, target, agent, params maker)
    ("book_appointment", "calendar", "scheduling-agent", lambda r: {"patient": f"P{r.randint(1, 40000)}"}),
    ("send_reminder", "sms", "scheduling-agent", lambda r: {"patient": f"P{r.randint(1, 40000)}"}),
    ("read_chart", "ehr", "records-agent", lambda r: {"patient": f"P{r.randint(1, 40000)}", "appointment_id": "A1"}),
    ("read_chart", "ehr", "records-agent", lambda r: {"patient": f"P{r.randint(1, 40000)}"}),
    ("submit_claim", "billing", "billing-agent", lambda r: {"amount": round(r.lognormvariate(6.5, 0.9), 2)}),
    ("export_record", "ehr", "records-agent", lambda r: {"patient": f"P{r.randint(1, 40000)}"}),
    ("read_charts_bulk", "ehr", "records-agent", lambda r: {"query": "everyone"}),
]
WEIGHTS = (30, 25, 25, 6, 9, 3, 2)


def fill(path: str, records: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    policy = Policy.from_yaml(POLICY)
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    step = dt.timedelta(days=30) / records
    n = 0
    store.utc_now = lambda: format_ts(start + step * n)  # spread the records over a month
    with open_audit(path) as log:
        conn = log._conn
        next_id = 1
        while next_id <= records:
            batch = []
            while len(batch) < 20_000 and next_id + len(batch) <= records:
                type_, target, agent, params = rng.choices(CALLS, WEIGHTS)[0]
                action = Action(type_, target, params(rng), agent=agent, session=f"s{rng.randint(1, 5000)}")
                decision = policy.evaluate(action)
                did = next_id + len(batch)
                batch.append(decision_entry(action, decision, {"via": "bench"}))
                if decision.approval.value == "approve" and next_id + len(batch) <= records:
                    ok = rng.random() < 0.85
                    batch.append(event_entry("approval", did, {"status": "approved" if ok else "denied",
                                                               "by": rng.choice(("dr.a", "dr.b", "nurse.c"))}))
                    if not ok:
                        continue
                if decision.approval.value != "block" and next_id + len(batch) <= records:
                    batch.append(event_entry("execution", did, {"status": "ok", "duration_ms": 3.5}))
            n = next_id
            store.write(conn, batch)  # ids follow in order (one writer), so each event's decision_id holds
            next_id += len(batch)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--format", default="html", choices=("html", "md", "json"))
    parser.add_argument("--keep", help="build (or reuse) the trail here instead of a temporary file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.keep or os.path.join(tmp, "bench.db")
        if not os.path.exists(db):
            t = time.perf_counter()
            fill(db, args.records)
            print(f"built a trail of {args.records:,} records in {time.perf_counter() - t:.1f} s")
        out = os.path.join(tmp, f"report.{args.format}")
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "aegis_cli", "report", "--audit-db", db, "-o", out],
                           capture_output=True, text=True)
        elapsed = time.perf_counter() - t
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
            return 1
        size = os.path.getsize(out) / 1e6
        print(f"aegis report --format {args.format} over {args.records:,} records: {elapsed:.1f} s, "
              f"peak {peak_mb:.0f} MB, {size:.1f} MB written "
              f"(target: < 15 s, < 200 MB) -> {'ok' if elapsed < 15 and peak_mb < 200 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
