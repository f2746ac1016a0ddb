"""Fleet benchmark: records/s appended by 1, 2 and 4 writer processes, and audited requests/s of
``aegis serve`` with 1 and 2 replicas, PostgreSQL beside SQLite.

    python bench/bench_fleet.py                          # starts a throwaway PostgreSQL 15 cluster
    python bench/bench_fleet.py --url postgresql://aegis@db/aegis_bench --records 20000 --batch 1
    python bench/bench_fleet.py --serve-only --seconds 10

Requests/s: ``POST /api/v1/evaluate`` (bench_serve.py's four actions, every decision audited)
against one ``aegis serve`` on SQLite, one on PostgreSQL, two replicas on one PostgreSQL database
(each driven by its own load generator with half the connections, figures summed) and one server
with ``--workers 2``: 16 connections in all, with ``wrk`` when installed (``apt-get install wrk``;
otherwise bench_serve.py's asyncio client, which cannot drive two servers at once, so those rows
are skipped). The servers, the database and the load generator share this machine's cores.

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
from typing import Any

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


def serve_rps(name: str, target: str, replicas: int, args: argparse.Namespace, workers: int = 1) -> float:
    """Audited requests/s of ``replicas`` servers (each ``--workers workers``) on ``target``."""
    import signal
    import time

    sys.path.insert(0, str(ROOT / "bench"))
    import bench_serve

    procs, ports = [], []
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp, "policy.yaml")
        policy.write_text(bench_serve.POLICY)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
        try:
            for _ in range(replicas):
                port = bench_serve._free_port()
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "aegis_cli", "serve", "-p", str(policy), "--port", str(port),
                     "--audit-db", target, "--no-watch", "--workers", str(workers)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env))
                ports.append(port)
                bench_serve._wait_ready(port, procs[-1], "/healthz")
            time.sleep(0.5 * workers)  # every worker up, not only the first to answer
            result = bench_serve.drive(ports, args)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
    from aegis_cli.audit import open_reader

    with open_reader(target) as r:
        verified = r.verify()
    if not verified.ok:
        raise SystemExit(f"the trail in {target} does not verify after {name}: {verified}")
    print(f"{name:<36} {result['rps']:>9,.0f} req/s   p50 {result['p50_ms']:6.2f} ms   "
          f"p99 {result['p99_ms']:6.2f} ms", flush=True)
    return float(result["rps"])


def serve_table(cluster: Any, url: str | None, args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_serve

    several = bench_serve.wrk_available() and args.client != "python"
    print(f"\naudited requests/s of aegis serve ({args.connections} connections in all, "
          f"{'wrk' if several else 'asyncio client'}, {args.seconds:g} s; load average "
          f"{os.getloadavg()[0]:.2f}; each trail verified)", flush=True)

    def pg(name: str) -> str:
        return cluster.create_database(name) if cluster is not None else str(url)

    with tempfile.TemporaryDirectory() as tmp:
        sqlite = serve_rps("1 server, SQLite", str(Path(tmp) / "serve.db"), 1, args)
    one = serve_rps("1 server, PostgreSQL", pg("serve1"), 1, args)
    rows = [("PostgreSQL, 1 server / SQLite", one / sqlite)]
    if several:
        two = serve_rps("2 replicas, PostgreSQL", pg("serve2"), 2, args)
        workers = serve_rps("1 server --workers 2, PostgreSQL", pg("servew"), 1, args, workers=2)
        rows += [("PostgreSQL, 2 replicas / 1", two / one), ("PostgreSQL, 2 replicas / SQLite", two / sqlite),
                 ("PostgreSQL, --workers 2 / 1", workers / one)]
    for label, ratio in rows:
        print(f"  {label:<34} {ratio:>6.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a PostgreSQL database to use (default: start a throwaway cluster)")
    ap.add_argument("--records", type=int, default=20000, help="records per writer (default 20000)")
    ap.add_argument("--batch", type=int, default=100, help="records per transaction (default 100)")
    ap.add_argument("--writers", default="1,2,4", help="writer counts to run (default 1,2,4)")
    ap.add_argument("--serve-only", action="store_true", help="only the aegis serve requests/s")
    ap.add_argument("--appends-only", action="store_true", help="only the records/s appended")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds of load per server run (default 8)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per server run (default 2)")
    ap.add_argument("--connections", type=int, default=16, help="connections in all (default 16)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads in all (default 2)")
    ap.add_argument("--client", choices=["auto", "wrk", "python"], default="auto", help="load generator")
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
        if not args.serve_only:
            print(f"records/s appended ({args.records:,} records per writer, batches of {args.batch}; "
                  f"each run verified)")
            print(f"{'writers':>8}  {'SQLite':>12}  {'PostgreSQL':>12}  {'PG/SQLite':>9}")
            with tempfile.TemporaryDirectory() as tmp:
                for n in counts:
                    sqlite = run(str(Path(tmp) / f"w{n}.db"), n, args.records, args.batch)
                    target = cluster.create_database(f"bench{n}") if cluster is not None else url
                    pg = run(target, n, args.records, args.batch)
                    print(f"{n:>8}  {sqlite:>12,.0f}  {pg:>12,.0f}  {pg / sqlite:>8.2f}x", flush=True)
        if not args.appends_only:
            serve_table(cluster, url, args)
    finally:
        if cluster is not None:
            cluster.stop("immediate")
            import shutil

            shutil.rmtree(cluster.root, ignore_errors=True)


if __name__ == "__main__":
    main()
