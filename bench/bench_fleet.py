"""Fleet benchmark: records/s appended by 1, 2 and 4 writer processes, PostgreSQL beside SQLite.

    python bench/bench_fleet.py                          # starts a throwaway PostgreSQL 15 cluster
    python bench/bench_fleet.py --url postgresql://aegis@db/aegis_bench --records 20000 --batch 1

Each writer is its own process with its own connection (as agents on several hosts would be),
appending ``--records`` records in batches of ``--batch`` with ``record_decisions``; all start
together. The figure is all records over the wall time from the first start to the last finish,
then the trail is verified (one chain, every record). SQLite runs on a file in a temporary
directory with the default ``synchronous=normal``. The throwaway cluster runs with fsync off (as
the tests do); pass ``--url`` to measure a real server. Both stores share this machine's cores
with the writers, so the figures are lower bounds for a database on its own host.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WRITER = textwrap.dedent("""
    import json, sys, time
    from aegis_cli.audit import open_audit
    from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel
    target, name, n, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    dec = Decision(Approval.AUTO, RiskLevel.LOW, "reads-ok", "reads are fine", "sha256:" + "a" * 64)
    items = [(Action("read_file", f"/srv/app/{name}-{i}.py", {"path": f"/srv/app/{name}-{i}.py", "limit": 4096},
                     agent=name, session="bench"), dec, {"via": "bench", "line": i}) for i in range(n)]
    log = open_audit(target)
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    sys.stdin.readline()
    start = time.time()
    for k in range(0, n, batch):
        log.record_decisions(items[k:k + batch])
    end = time.time()
    log.close()
    sys.stdout.write(json.dumps({"start": start, "end": end}) + "\\n")
""")


def run(target: str, writers: int, records: int, batch: int) -> float:
    """Records/s of ``writers`` processes appending ``records`` each into ``target``."""
    from aegis_cli.audit import open_audit, open_reader

    open_audit(target).close()  # created and migrated before the clock starts
    with open_reader(target) as r:
        before = r.head()[0]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, target, f"w{k}", str(records), str(batch)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for k in range(writers)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    spans = []
    for p in procs:
        assert p.stdout is not None
        spans.append(json.loads(p.stdout.readline()))
        if p.wait() != 0:
            raise SystemExit(f"a writer failed on {target}")
    with open_reader(target) as r:
        result = r.verify()
    if not result.ok or result.records != before + writers * records:
        raise SystemExit(f"the trail in {target} does not verify: {result}")
    wall = max(s["end"] for s in spans) - min(s["start"] for s in spans)
    return writers * records / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a PostgreSQL database to use (default: start a throwaway cluster)")
    ap.add_argument("--records", type=int, default=20000, help="records per writer (default 20000)")
    ap.add_argument("--batch", type=int, default=100, help="records per transaction (default 100)")
    ap.add_argument("--writers", default="1,2,4", help="writer counts to run (default 1,2,4)")
    args = ap.parse_args()
    counts = [int(x) for x in args.writers.split(",")]
    cluster = None
    url = args.url
    if url is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from pg import PgCluster, pg_available  # the tests' throwaway cluster

        if not pg_available():
            raise SystemExit("no PostgreSQL binaries (run .ci/setup, or pass --url)")
        root = Path(tempfile.mkdtemp(prefix="aegis-bench-pg-"))
        if os.geteuid() == 0:
            import shutil

            shutil.chown(root, "postgres", "postgres")
        cluster = PgCluster(root, as_postgres=os.geteuid() == 0)
        cluster.init()
        cluster.start()
    try:
        print(f"records/s appended ({args.records:,} records per writer, batches of {args.batch}; "
              f"each run verified)")
        print(f"{'writers':>8}  {'SQLite':>12}  {'PostgreSQL':>12}  {'PG/SQLite':>9}")
        with tempfile.TemporaryDirectory() as tmp:
            for n in counts:
                sqlite = run(str(Path(tmp) / f"w{n}.db"), n, args.records, args.batch)
                target = cluster.create_database(f"bench{n}") if cluster is not None else url
                pg = run(target, n, args.records, args.batch)
                print(f"{n:>8}  {sqlite:>12,.0f}  {pg:>12,.0f}  {pg / sqlite:>8.2f}x", flush=True)
    finally:
        if cluster is not None:
            cluster.stop("immediate")
            import shutil

            shutil.rmtree(cluster.root, ignore_errors=True)


if __name__ == "__main__":
    main()
