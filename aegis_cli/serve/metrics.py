"""``GET /metrics``: what a server has decided and how fast, in the Prometheus text format.

The hot path only adds to plain numbers: the guard times each request into a fixed list of
buckets, and the audit writer thread counts each committed batch's decisions and how long the
commit took. ``prometheus-client`` is used only when someone scrapes, to write the exposition
format from those numbers (a registry's ``Counter.inc`` takes a lock and costs more than this).

Decisions are counted once written to the trail (the only ones ever answered). The pending
approvals are counted in the store at scrape time, so every replica on one database shows the
same number; when the store cannot be read the gauge is left out rather than shown as 0.

With ``--workers N`` each worker writes its numbers to a file in a directory the workers share,
at most a second apart, and a scrape sums every worker's file: the counters are the host's.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("aegis.serve")

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SHARE_INTERVAL = 1.0  # seconds between a worker's snapshots, with --workers

# Paths reported as themselves; anything else is folded so that label values stay few.
_PATHS = frozenset({"/", "/healthz", "/metrics", "/openapi.json", "/api/v1/evaluate", "/api/v1/policy",
                    "/api/v1/approvals", "/api/v1/audit", "/api/v1/audit/stream", "/api/v1/hooks/claude-code",
                    "/api/v1/hooks/codex", "/api/v1/hooks/gemini"})


def route_of(path: str) -> str:
    if path in _PATHS:
        return path
    if path.startswith("/api/v1/approvals/"):
        tail = path.rsplit("/", 1)[-1]
        return f"/api/v1/approvals/{{id}}/{tail}" if tail in ("approve", "deny") else "/api/v1/approvals/{id}"
    if path.startswith("/static/"):
        return "/static/{name}"
    return "other"


class Histogram:
    """Counts per bucket (not cumulative), a sum and a count; one writer at a time."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    def dump(self) -> list[Any]:
        return [list(self.counts), self.sum]

    def add(self, dumped: list[Any]) -> None:
        counts, total = dumped
        for i, n in enumerate(counts[:len(self.counts)]):
            self.counts[i] += n
        self.sum += total


class Metrics:
    """The numbers of one server process."""

    def __init__(self, share_dir: str | None = None) -> None:
        self.decisions: dict[tuple[str, str], int] = {}  # (approval, risk_level) -> count
        self.requests: dict[str, Histogram] = {}  # route -> durations
        self.commits = Histogram()
        self.share_dir = share_dir
        self._shared_at = 0.0

    # -- recording (hot paths) ---------------------------------------------------------------

    def request(self, path: str, seconds: float) -> None:
        route = route_of(path)
        hist = self.requests.get(route)
        if hist is None:
            hist = self.requests[route] = Histogram()
        hist.observe(seconds)

    def committed(self, entries: Any, seconds: float) -> None:
        """On the writer thread, after a batch of decisions was committed."""
        self.commits.observe(seconds)
        counts = self.decisions
        for entry in entries:
            decision = entry[1]
            key = (decision.approval.value, decision.risk_level.value)
            counts[key] = counts.get(key, 0) + 1

    # -- sharing between workers ---------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {"decisions": [[a, r, n] for (a, r), n in list(self.decisions.items())],
                "requests": {route: h.dump() for route, h in list(self.requests.items())},
                "commits": self.commits.dump()}

    def share(self, force: bool = False) -> None:
        """Write this worker's numbers for the others (atomically: a reader never sees half a file)."""
        if self.share_dir is None:
            return
        now = time.monotonic()
        if not force and now - self._shared_at < SHARE_INTERVAL:
            return
        self._shared_at = now
        path = Path(self.share_dir) / f"{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.dump()))
        os.replace(tmp, path)

    def merged(self) -> Metrics:
        """This process's numbers plus every other worker's last snapshot."""
        if self.share_dir is None:
            return self
        self.share(force=True)
        total = Metrics()
        for path in sorted(Path(self.share_dir).glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being replaced right now: its previous numbers are in the next scrape
            for approval, risk, n in data["decisions"]:
                total.decisions[(approval, risk)] = total.decisions.get((approval, risk), 0) + n
            for route, dumped in data["requests"].items():
                total.requests.setdefault(route, Histogram()).add(dumped)
            total.commits.add(data["commits"])
        return total


def exposition(metrics: Metrics, policy_hash: str, pending: int | None) -> tuple[bytes, str]:
    """The text format (body, content type) for a scrape."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    def histogram(family: Any, labels: list[str], hist: Histogram) -> None:
        cumulative, running = [], 0
        for bound, n in zip([*(repr(float(b)) for b in BUCKETS), "+Inf"], hist.counts, strict=True):
            running += n
            cumulative.append((bound, running))
        family.add_metric(labels, cumulative, hist.sum)

    class Collector:
        def collect(self) -> Any:
            decisions = CounterMetricFamily("aegis_decisions", "Decisions given (each written to the audit trail).",
                                            labels=["approval", "risk_level"])
            for (approval, risk), n in sorted(metrics.decisions.items()):
                decisions.add_metric([approval, risk], n)
            yield decisions
            requests = HistogramMetricFamily("aegis_request_duration_seconds",
                                             "Time from a request's arrival to its answer.", labels=["path"])
            for route, hist in sorted(metrics.requests.items()):
                histogram(requests, [route], hist)
            yield requests
            commits = HistogramMetricFamily("aegis_audit_commit_seconds",
                                            "Time to write and commit one batch of decisions to the audit trail.")
            histogram(commits, [], metrics.commits)
            yield commits
            if pending is not None:
                yield GaugeMetricFamily("aegis_approvals_pending", "Approval requests waiting for an answer.",
                                        value=pending)
            info = GaugeMetricFamily("aegis_policy_info", "The policy in force (always 1).", labels=["hash"])
            info.add_metric([policy_hash], 1)
            yield info

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST


async def endpoint(request: Any) -> Any:
    """``GET /metrics``: the approve role, like the audit API (no token on a loopback-only server)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response

    from aegis_cli.serve.auth import Role
    from aegis_cli.serve.http import authorize, only_params

    authorize(request, Role.APPROVE)
    only_params(request)
    state = request.app.state.aegis
    pending = None
    if state.approvals is not None:
        try:
            pending = await run_in_threadpool(lambda: len(state.approvals.list("pending", limit=1 << 62)))
        except Exception as exc:  # the store is away: say what we know, leave the gauge out
            log.warning("metrics: cannot count pending approvals: %s", exc)
    merged = await run_in_threadpool(state.metrics.merged)
    body, ctype = exposition(merged, state.policy.hash, pending)
    return Response(body, 200, headers={"content-type": ctype})
