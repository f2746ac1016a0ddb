"""The evidence sections, one function per control, each built from the collected ``Facts``.

A section is plain data (JSON-ready): the framework and control it is evidence for, the query
behind its figures in words, headline figures, tables and charts. Renderers (HTML, Markdown,
JSON) only lay it out, so every format says the same thing.
"""

from __future__ import annotations

from typing import Any

from aegis_cli.report.collect import PHI, WAIT_BUCKETS, Facts, Top

FRAMEWORKS = ("soc2", "gdpr", "hipaa")
NOT_CERTIFICATION = ("Evidence for an assessor, drawn from the aegis audit trail; not a certification or an "
                     "attestation of compliance. An assessor decides what it shows.")
TOP = 25  # rows in ranked tables


def _table(id_: str, title: str, columns: list[str], rows: list[list[Any]], *, approximate: bool = False,
           total: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": id_, "title": title, "columns": columns, "rows": rows, "approximate": approximate}
    if total is not None and total > len(rows):
        out["note"] = f"the {len(rows)} largest of {total:,}"
    return out


def _section(id_: str, framework: str, control: str, title: str, evidence: str, query: str,
             figures: list[tuple[str, Any]], tables: list[dict[str, Any]] | None = None,
             charts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": id_, "framework": framework, "control": control, "title": title, "evidence": evidence,
            "query": query, "disclaimer": NOT_CERTIFICATION,
            "figures": [{"label": k, "value": v} for k, v in figures],
            "tables": tables or [], "charts": charts or []}


def _top_rows(top: Top, n: int = TOP, column: int | None = None) -> list[tuple[Any, list[int]]]:
    return top.most_common(n, column)


def integrity(f: Facts) -> dict[str, Any]:
    v = f.integrity
    assert v is not None
    out = {"ok": v.ok, "records_total": f.records_total, "records_verified": v.records,
           "head_id": v.head_id, "head_hash": v.head_hash, "bad_id": v.bad_id, "problem": v.problem,
           "records_in_period": f.records, "first": f.first or None, "last": f.last or None,
           "period_last_id": f.last_id or None, "period_last_hash": f.last_hash or None}
    if v.ok:
        out["message"] = (f"Chain intact: all {f.records_total:,} records of the trail verify from the genesis hash "
                          f"to head #{v.head_id} {v.head_hash}.")
    else:
        out["message"] = (f"CHAIN BROKEN at record #{v.bad_id}: {v.problem}. Only the {v.records:,} records "
                          "before it verify; the figures below are read from a trail that has been altered "
                          "and must not be relied on.")
    return out


def overview(f: Facts) -> dict[str, Any]:
    days = sorted(f.per_day)
    chart = {"id": "decisions-per-day", "title": "Decisions per day by approval", "kind": "stacked",
             "labels": days, "series": [{"name": name, "values": [f.per_day[d][i] for d in days]}
                                        for i, name in enumerate(("auto", "approve", "block"))]}
    return _section(
        "overview", "all", "Scope of the evidence", "What the trail holds for the period",
        "The volume and shape of agent activity the other sections draw on.",
        "every record with since <= ts < until; decisions grouped by decision.approval and by day of ts",
        [("records", f.records), ("decisions", f.decisions),
         *((f"decisions: {k}", f.by_approval.get(k, 0)) for k in ("auto", "approve", "block")),
         *((f"records: {k}", n) for k, n in sorted(f.by_kind.items()))],
        [_table("risk", "Decisions by risk level", ["risk level", "decisions"],
                [[r, f.by_risk[r]] for r in ("low", "medium", "high", "critical") if r in f.by_risk])],
        [chart])


def soc2_access(f: Facts) -> dict[str, Any]:
    access = _top_rows(f.access)
    approvers = _top_rows(f.approvers)
    blocked = _top_rows(f.blocked)
    denied = _top_rows(f.denied)
    return _section(
        "soc2-cc6", "SOC 2", "CC6.1 / CC6.3 (logical access: who may act on which systems, and how access is "
        "granted and refused)", "Which agents acted on which systems, what was refused, who approved what",
        "Every agent action was decided by policy before it ran; refusals and human approvals are recorded "
        "with the person who gave them.",
        "decision records grouped by (action.agent, action.target) and decision.approval; decision records with "
        "approval = block grouped by (agent, type, target, rule); approval records joined to their decision "
        "by decision_id, grouped by (data.by, rule) and, when data.status != approved, by (agent, type, target, "
        "rule, status)",
        [("agents", len(f.agents.counts)), ("agent-system pairs", len(f.access.counts)),
         ("blocked", f.by_approval.get("block", 0)),
         ("approval requests answered", sum(f.approvals.values())),
         ("approved", f.approvals.get("approved", 0)),
         ("refused (denied, timed out, cancelled, error)", sum(n for s, n in f.approvals.items() if s != "approved"))],
        [_table("access", "Agents by system", ["agent", "system (target)", "auto", "approve", "block",
                                               "approval refused"],
                [[k[0], k[1], *v] for k, v in access], approximate=f.access.approximate, total=len(f.access.counts)),
         _table("blocked", "Blocked actions", ["agent", "type", "target", "rule", "count"],
                [[*k, v[0]] for k, v in blocked], approximate=f.blocked.approximate, total=len(f.blocked.counts)),
         _table("denied", "Approvals refused", ["agent", "type", "target", "rule", "status", "count"],
                [[*k, v[0]] for k, v in denied], approximate=f.denied.approximate, total=len(f.denied.counts)),
         _table("approvers", "Who approved what", ["approver", "rule", "approved", "refused"],
                [[*k, *v] for k, v in approvers], approximate=f.approvers.approximate,
                total=len(f.approvers.counts))],
        [_wait_chart(f)])


def _wait_chart(f: Facts) -> dict[str, Any]:
    return {"id": "approval-waits", "title": "Approval wait times (decision to answer)", "kind": "bars",
            "labels": [label for _, label in WAIT_BUCKETS], "series": [{"name": "answers", "values": list(f.waits)}]}


def soc2_monitoring(f: Facts) -> dict[str, Any]:
    days = sorted(f.per_day)
    refused = {"id": "refused-per-day", "title": "Blocked and refused actions per day", "kind": "stacked",
               "labels": days, "series": [{"name": "block", "values": [f.per_day[d][2] for d in days]},
                                          {"name": "approval refused", "values": [f.per_day[d][3] for d in days]}]}
    blocking = _top_rows(f.rules, 10, column=2)
    rules_chart = {"id": "top-blocking-rules", "title": "Rules that block most", "kind": "hbars",
                   "labels": [str(k) for k, _ in blocking],
                   "series": [{"name": "blocks", "values": [v[2] for _, v in blocking]}]}
    rare_agents = sorted((k, v[0]) for k, v in f.agents.counts.items() if 0 < v[0] <= 2)[:TOP]
    rare_targets = sorted((k, v[0]) for k, v in f.targets.counts.items() if v[0] <= 2)[:TOP]
    overall = (f.by_approval.get("block", 0) + sum(n for s, n in f.approvals.items() if s != "approved"))
    rate = overall / f.decisions if f.decisions else 0.0
    hot = sorted(((k, v[0], v[1]) for k, v in f.agents.counts.items()
                  if v[0] >= 5 and v[1] / v[0] > max(2 * rate, 0.25)), key=lambda t: (-t[2] / t[1], t[0]))[:TOP]
    return _section(
        "soc2-cc7", "SOC 2", "CC7.2 (system monitoring: anomalies and security events are detected and "
        "evaluated)", "Blocked and refused actions over time, the rules that fire most, unusual agents and targets",
        "Refusals are visible day by day; the rules doing the work and the agents or targets out of the ordinary "
        "are named for review.",
        "decision records grouped by day of ts (approval = block) and approval records with data.status != "
        "approved by day of ts; decision records grouped by decision.rule; agents and targets with at most 2 "
        "decisions in the period; agents (at least 5 decisions) refused more than twice the overall rate and "
        "more than 25% of the time",
        [("blocked", f.by_approval.get("block", 0)),
         ("approvals refused", sum(n for s, n in f.approvals.items() if s != "approved")),
         ("overall refusal rate", f"{rate:.1%}"), ("rules that fired", len(f.rules.counts))],
        [_table("rules", "Rules that fire most", ["rule", "auto", "approve", "block"],
                [[k, *v] for k, v in _top_rows(f.rules)], approximate=f.rules.approximate, total=len(f.rules.counts)),
         _table("rare-agents", "Rare agents (at most 2 decisions)", ["agent", "decisions"],
                [list(t) for t in rare_agents], approximate=f.agents.approximate),
         _table("rare-targets", "Rare targets (at most 2 decisions)", ["target", "decisions"],
                [list(t) for t in rare_targets], approximate=f.targets.approximate),
         _table("refused-agents", "Agents refused unusually often", ["agent", "decisions", "refused"],
                [list(t) for t in hot], approximate=f.agents.approximate)],
        [refused, rules_chart])


def soc2_change(f: Facts) -> dict[str, Any]:
    versions = sorted(f.versions.items(), key=lambda kv: kv[1][1])
    return _section(
        "soc2-cc8", "SOC 2", "CC8.1 (change management: changes are authorised, recorded and traceable)",
        "Every policy change, and the decisions each policy version made",
        "The rules in force changed only as recorded here; every decision names the hash of the policy that "
        "made it.",
        "policy_change records (data.by, data.old_hash, data.new_hash, data.source); decision records grouped "
        "by policy_hash with their first and last ts",
        [("policy changes", len(f.changes)), ("policy versions that decided", len(f.versions))],
        [_table("changes", "Policy changes", ["record", "when", "by", "old hash", "new hash", "source"],
                [[c["id"], c["ts"], c["by"], c["old_hash"], c["new_hash"], c["source"]] for c in f.changes]),
         _table("versions", "Decisions by policy version", ["policy hash", "decisions", "first", "last", "auto",
                                                           "approve", "block"],
                [[h, v[0], v[1], v[2], v[3]["auto"], v[3]["approve"], v[3]["block"]] for h, v in versions])])


def gdpr(f: Facts) -> dict[str, Any]:
    tags = sorted(f.tags.items())
    rows = [[t, x.decisions, x.first, x.last, x.by_approval["auto"], x.by_approval["approve"],
             x.by_approval["block"], len(x.agents.counts), len(x.systems.counts)] for t, x in tags]
    columns = ["tag", "decisions", "first seen", "last seen", "auto", "approve", "block", "agents", "systems"]
    tables = [_table("tags", "Processing by data category (tag)", columns, rows)]
    for t, x in tags:
        tables.append(_table(f"tag-{t}-agents", f"{t}: agents and systems", ["agent", "decisions"],
                             [[k, v[0]] for k, v in x.agents.most_common(TOP)], approximate=x.agents.approximate,
                             total=len(x.agents.counts)))
        tables.append(_table(f"tag-{t}-systems", f"{t}: systems (targets)", ["system", "decisions"],
                             [[k, v[0]] for k, v in x.systems.most_common(TOP)], approximate=x.systems.approximate,
                             total=len(x.systems.counts)))
        tables.append(_table(f"tag-{t}-purposes", f"{t}: rules and reasons (purposes)", ["rule", "reason", "decisions"],
                             [[k[0], k[1], v[0]] for k, v in x.purposes.most_common(TOP)],
                             approximate=x.purposes.approximate, total=len(x.purposes.counts)))
    chart = {"id": "tag-activity", "title": "Activity per data category (tag)", "kind": "hbars",
             "labels": [t for t, _ in tags],
             "series": [{"name": "decisions", "values": [x.decisions for _, x in tags]}]}
    return _section(
        "gdpr-art30", "GDPR", "Article 30 (records of processing activities)",
        "Per data category: which agents and systems processed it, under which rules and reasons, how often, "
        "first and last seen",
        "For each category of data named by a policy tag, the processing aegis decided: by whom, on which "
        "systems, for which stated purposes (the rule and its reason), and when.",
        "decision records with decision.tags containing the tag, grouped by action.agent, action.target and "
        "(decision.rule, decision.reason); count, min(ts), max(ts)",
        [("data categories", len(tags)), ("tagged decisions", sum(x.decisions for _, x in tags))],
        tables, [chart])


def hipaa(f: Facts) -> list[dict[str, Any]]:
    phi = f.tags.get(PHI)
    audit = _section(
        "hipaa-312b", "HIPAA", "45 CFR 164.312(b) (audit controls: record and examine activity in systems "
        "that contain ePHI)", "Activity on phi-tagged actions is recorded, tamper-evident and examinable",
        "Every decision on an action the policy tags phi was recorded before the action could run, in a "
        "hash chain whose integrity is shown at the top of this report.",
        "decision records with 'phi' in decision.tags; their approval and execution records by decision_id",
        [("phi decisions", f.phi_decisions),
         ("phi auto", phi.by_approval["auto"] if phi else 0), ("phi approve", phi.by_approval["approve"] if phi else 0),
         ("phi block", phi.by_approval["block"] if phi else 0),
         ("first", phi.first if phi else None), ("last", phi.last if phi else None)],
        [_table("phi-outcomes", "What became of phi accesses", ["outcome", "accesses"],
                [[k, v] for k, v in sorted(f.phi_by_outcome.items(), key=lambda kv: (-kv[1], kv[0]))])])
    mean = f.wait_sum / f.wait_n if f.wait_n else None
    review = _section(
        "hipaa-308", "HIPAA", "45 CFR 164.308(a)(1)(ii)(D) (information system activity review)",
        "Every access to phi-tagged actions, with its full approval chain",
        "Each access to health data by an agent, who asked (agent, session, origin), who approved or refused "
        "it, how long it waited, and what ran: the material for a regular activity review.",
        "decision records with 'phi' in decision.tags, each joined by decision_id to its approval record "
        "(data.status, data.by, data.note; wait = approval ts - decision ts) and its execution record "
        "(data.status, data.duration_ms), in decision id order",
        [("phi accesses listed", f.phi_decisions), ("approval answers (all)", f.wait_n),
         ("mean wait (s)", round(mean, 1) if mean is not None else None), ("longest wait (s)", round(f.wait_max, 1))],
        [], [_wait_chart(f)])
    review["accesses"] = "phi_accesses"  # the list itself is the report's phi_accesses (streamed)
    return [audit, review]


def build(f: Facts, frameworks: tuple[str, ...]) -> list[dict[str, Any]]:
    out = [overview(f)]
    if "soc2" in frameworks:
        out += [soc2_access(f), soc2_monitoring(f), soc2_change(f)]
    if "gdpr" in frameworks:
        out.append(gdpr(f))
    if "hipaa" in frameworks:
        out += hipaa(f)
    return out
