"""The path every agent hook shares: read the event, decide, audit, answer; refuse what it cannot read.

An agent module (``claude_code``, ``codex``, ``gemini``) only knows its agent's event and answer
formats; everything else is here, once:

- the input is read as JSON and handed to the agent's ``parse``, which accepts only that agent's
  own events (``hook_event_name`` and shape) and raises ``Unreadable`` for anything else;
- an event before a call is turned into actions (one mapping, ``tool_call_to_action``), decided,
  every decision audited before the answer, and answered in the agent's own format;
- an event after a call adds an ``execution`` record linked to the decision for the same call, so
  the trail shows whether a call that was asked about went on to run;
- whatever cannot be decided (an event of another agent, bad JSON, a policy that does not load, an
  audit trail that cannot be written, a crash) exits 2 with one line on stderr: the answer Claude
  Code, Codex and Gemini CLI all take as "block", whatever they make of stdout. A refused event
  is audited as an ``execution`` record with status ``refused`` and no decision, never as a decision.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping

from aegis_cli.engine.models import Action, Approval, Decision
from aegis_cli.engine.values import Value, init

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up
if TYPE_CHECKING:
    from typing import Any, Protocol

    class Agent(Protocol):
        name: str  # as in `aegis hook <name>`
        target: str  # the target of the agent's own tools

        def parse(self, data: Any) -> Call: ...

        def actions(self, call: Call, tools: Any) -> list[Action]: ...

        def answer(self, call: Call, approval: Approval, reason: str) -> Answer: ...

        def after(self, call: Call) -> Answer: ...

    class Trail(Protocol):
        """Where a hook's records go: a local SQLite file, PostgreSQL, or a server's audit writer."""

        def write(self, record: Record) -> None: ...

EXIT_BLOCK = 2
_STRICTNESS = {Approval.AUTO: 0, Approval.APPROVE: 1, Approval.BLOCK: 2}
# How far back a follow-up event looks for the decision on its call: hooks answer within seconds,
# so the decision is among the newest records; the bound keeps the lookup cheap on a large trail.
LOOKBACK = 20_000


class Unreadable(ValueError):
    """The hook was handed something that is not its agent's event; the call is refused."""


class Call(Value):
    """One tool call as an agent's hook event reports it."""

    _fields = ("phase", "event", "tool", "tool_input", "session", "call_id", "origin", "failed")
    __slots__ = _fields
    phase: str  # "before" (decide it), "after" (it ran) or "permission" (the agent is about to ask a person)
    event: str  # the agent's hook_event_name
    tool: str
    tool_input: dict[str, Any]
    session: str
    call_id: str  # the agent's id for the call, or a key made from the call itself
    origin: dict[str, Any]  # what the audit record keeps of the event
    failed: bool  # after: the tool reported an error

    def __init__(self, phase: str, event: str, tool: str, tool_input: dict[str, Any], session: str = "",
                 call_id: str = "", origin: dict[str, Any] | None = None, failed: bool = False) -> None:
        init(self, phase, event, tool, tool_input, session, call_id, {} if origin is None else origin, failed)


class Answer(Value):
    """What the hook process prints and exits with."""

    _fields = ("stdout", "stderr", "exit_code")
    __slots__ = _fields
    stdout: str
    stderr: str
    exit_code: int

    def __init__(self, stdout: str = "", stderr: str = "", exit_code: int = 0) -> None:
        init(self, stdout, stderr, exit_code)


def refuse(reason: str) -> Answer:
    """Exit 2 and one line on stderr: every supported agent blocks the call on that."""
    line = " ".join(reason.split())
    return Answer(stderr=f"aegis: {line}; blocked (fail closed)\n", exit_code=EXIT_BLOCK)


def call_key(tool: str, tool_input: Any) -> str:
    """A stable key for a call whose agent gives it no id (its before and after events share it)."""
    import hashlib

    text = json.dumps([tool, tool_input], sort_keys=True, separators=(",", ":"), default=str)
    return "k-" + hashlib.sha256(text.encode()).hexdigest()[:32]


def require_object(data: Any, agent: str, events: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    """The event object and its hook_event_name, when it is one of ``events``; else ``Unreadable``."""
    if not isinstance(data, dict):
        raise Unreadable(f"the {agent} hook input must be a JSON object")
    event = data.get("hook_event_name")
    if event not in events:
        shown = json.dumps(event)[:60] if event is not None else "none"
        raise Unreadable(f"hook_event_name {shown} is not a {agent} event aegis answers "
                         f"({', '.join(events)}); is this hook installed for another agent?")
    return data, str(event)


def tool_fields(data: Mapping[str, Any], event: str) -> tuple[str, dict[str, Any]]:
    name = data.get("tool_name")
    if not isinstance(name, str) or not name:
        raise Unreadable(f"{event} input has no 'tool_name'")
    tool_input = data.get("tool_input")
    if not isinstance(tool_input, dict):
        raise Unreadable(f"{event} input's 'tool_input' must be an object")
    return name, tool_input


def origin_of(agent: str, data: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    origin: dict[str, Any] = {"via": agent}
    for key in keys:
        if isinstance(data.get(key), str):
            origin[key] = data[key]
    return origin


def reason_text(action: Action, decision: Decision, tool: str) -> str:
    rule = f"rule '{decision.rule}'" if decision.rule else "the policy defaults"
    reason = f": {decision.reason}" if decision.reason else ""
    head = {Approval.AUTO: "aegis allowed", Approval.APPROVE: "aegis asks before", Approval.BLOCK: "aegis blocked"}
    return (f"{head[decision.approval]} {tool} ({action.type} on {action.target}, "
            f"{decision.risk_level.value} risk) by {rule}{reason}")


class PolicyUnavailable(Exception):
    """The policy could not be loaded; the text says why (located issues when there are some)."""


def load_policy_files(paths: list[str]) -> Any:
    """The normal loader: parse, validate and compile the files (``Policy.from_yaml_files``)."""
    from aegis_cli.engine.errors import PolicyError
    from aegis_cli.engine.policy import Policy

    if not paths:
        raise PolicyUnavailable("no policy given (-p or $AEGIS_POLICY)")
    try:
        return Policy.from_yaml_files(*paths)
    except (PolicyError, OSError) as exc:
        raise PolicyUnavailable(policy_error_text(exc)) from None


def policy_error_text(exc: BaseException) -> str:
    issues = getattr(exc, "issues", None)
    return "; ".join(str(i) for i in issues[:3]) if issues else str(exc)


# -- what must be audited before an answer is given ----------------------------------------------

class Decided(Value):
    """Decision records: ``(action, decision, origin, extra)`` items, written in one transaction."""

    _fields = ("items", "redact")
    __slots__ = _fields
    items: list[tuple[Action, Decision, dict[str, Any], dict[str, Any]]]
    redact: tuple[str, ...]

    def __init__(self, items: list[tuple[Action, Decision, dict[str, Any], dict[str, Any]]],
                 redact: tuple[str, ...] = ()) -> None:
        init(self, items, redact)


class Ran(Value):
    """An ``execution`` record for a call that ran, linked to the decision this hook made on it."""

    _fields = ("via", "call", "data")
    __slots__ = _fields
    via: str
    call: Call
    data: dict[str, Any]

    def __init__(self, via: str, call: Call, data: dict[str, Any]) -> None:
        init(self, via, call, data)


class Refused(Value):
    """An ``execution`` record with status ``refused`` for an event that was not decided."""

    _fields = ("data",)
    __slots__ = _fields
    data: dict[str, Any]

    def __init__(self, data: dict[str, Any]) -> None:
        init(self, data)


Record = Decided | Ran | Refused


class Step(Value):
    """An answer and what must be audited before it is given (``settle`` does both).

    ``failure`` is the refusal when the record cannot be written; ``None`` means the answer
    stands anyway (a refusal's own record is best effort: the call is refused either way).
    """

    _fields = ("answer", "record", "failure", "held")
    __slots__ = _fields
    answer: Answer
    record: Record | None
    failure: str | None
    held: Held | None  # an approve decision to hold in aegis's approval queue (run(approval_timeout=))

    def __init__(self, answer: Answer, record: Record | None = None, failure: str | None = None,
                 held: Held | None = None) -> None:
        init(self, answer, record, failure, held)


class Held(Value):
    """A call the policy wants a person to approve, with what to ask and what to say."""

    _fields = ("call", "action", "decision", "reason")
    __slots__ = _fields
    call: Call
    action: Action
    decision: Decision
    reason: str

    def __init__(self, call: Call, action: Action, decision: Decision, reason: str) -> None:
        init(self, call, action, decision, reason)


def settle(step: Step, trail: Trail | None) -> Answer:
    """Write the step's record, then give its answer; a record that cannot be written refuses."""
    if step.record is None or trail is None:
        return step.answer
    try:
        trail.write(step.record)
    except Exception as exc:
        if step.failure is None:
            return step.answer
        return refuse(f"{step.failure} ({type(exc).__name__}: {exc})")
    return step.answer


def run(agent: Agent, raw: str, policy_paths: list[str], audit_db: str | None, *,
        load_policy: Callable[[list[str]], Any] = load_policy_files,
        open_trail: Callable[[str], Trail] | None = None, approval_timeout: float | None = None) -> Answer:
    """Answer one hook event. Never raises: every failure is a refusal naming it.

    ``load_policy`` and ``open_trail`` are the normal ones unless given: the command line's fast
    path passes the compiled-policy cache and the standard-library SQLite writer.
    With ``approval_timeout`` (seconds), an ``approve`` decision is held in aegis's approval queue
    beside the trail until a person answers (``aegis approvals approve ID``, the ``aegis serve``
    page) and the call allowed or denied accordingly; no answer in time denies it. Without it the
    agent is told to ask the person itself (Claude Code, Gemini CLI), or denies (Codex).
    """
    try:
        step = plan(agent, raw, lambda: load_policy(policy_paths), hold=approval_timeout is not None)
        if audit_db is None:
            return step.answer
        answer = settle(step, (open_trail or LoggerTrail)(audit_db))
        if step.held is None or answer is not step.answer or approval_timeout is None:
            return answer
        return hold(agent, step.held, audit_db, approval_timeout)
    except Exception as exc:  # the last line of defence: a crashed hook may let the call run
        return refuse(f"the {agent.name} hook failed ({type(exc).__name__}: {exc})")


def hold(agent: Agent, held: Held, audit_db: str, timeout: float) -> Answer:
    """Queue ``held`` for a person, wait up to ``timeout`` seconds, and answer as they did.

    The request links to the decision just recorded; the queue audits the answer (or the time-out)
    as an ``approval`` record. Anything that goes wrong denies the call.
    """
    from aegis_cli.audit.trail import open_audit, open_queue

    call = held.call
    try:
        with open_audit(audit_db) as log:
            decision_id = find_decision(log, agent.name, call)
        queue = open_queue(audit_db)
        try:
            request = queue.submit(held.action, held.decision, decision_id=decision_id,
                                   requested_by=f"{agent.name}-hook", timeout=timeout)
            answered = queue.wait(request.id, timeout)
        finally:
            queue.close()
    except Exception as exc:
        return refuse(f"the approval of {call.tool} could not be held ({type(exc).__name__}: {exc})")
    who = f" by {answered.answered_by}" if answered.answered_by else ""
    note = f" ({answered.note})" if answered.note else ""
    if answered.status == "approved":
        return agent.answer(call, Approval.AUTO, f"{held.reason}; approved{who} (approval request {request.id}){note}")
    if answered.status == "timed_out":
        why = f"no one answered approval request {request.id} within {timeout:g}s"
    else:
        why = f"approval request {request.id} was {answered.status}{who}{note}"
    return agent.answer(call, Approval.BLOCK, f"{held.reason}; {why}, so it is denied")


def plan(agent: Agent, raw: str, policy: Callable[[], Any], client: str | None = None, *,
         hold: bool = False) -> Step:
    """Read one hook event and decide it: the answer, and the record to write before giving it.

    ``policy()`` gives the policy to decide with (or raises ``PolicyUnavailable``); it is called
    only for events that need a decision. ``client`` (the server's caller) goes into the origin.
    With ``hold``, an ``approve`` decision before a call comes back as ``Step.held`` (``run`` holds
    it in the approval queue); the step's answer is then the one to give if it cannot be held.
    """
    try:
        call = agent.parse(json.loads(raw))
    except (ValueError, RecursionError) as exc:  # Unreadable is a ValueError, so is bad JSON
        why = str(exc) if isinstance(exc, Unreadable) else f"the hook input is not JSON ({exc})"
        return Step(refuse(f"unreadable {agent.name} hook input: {why}"), _refusal(agent, why, raw))
    if client is not None:
        call = call.replace(origin={**call.origin, "client": client})
    if call.phase == "after":
        data: dict[str, Any] = {"status": "error" if call.failed else "ok", "via": f"{agent.name}-hook",
                                "tool": call.tool, "event": call.event}
        if call.call_id:
            data["call_id"] = call.call_id
        return Step(agent.after(call), Ran(agent.name, call, data),
                    f"the run of {call.tool} could not be audited")
    return _decide(agent, call, policy, hold)


def _decide(agent: Agent, call: Call, get_policy: Callable[[], Any], hold: bool = False) -> Step:
    try:
        policy = get_policy()
    except PolicyUnavailable as exc:
        text = str(exc)
        return Step(refuse(text if text.startswith("no policy given") else f"the policy could not be loaded ({text})"))
    try:
        actions = agent.actions(call, policy.tools)
    except Unreadable as exc:
        return Step(refuse(f"{call.tool} could not be read ({exc})"), _refusal(agent, str(exc), "", call))
    try:
        decided = [(action, policy.evaluate(action)) for action in actions]
    except Exception as exc:
        return Step(refuse(f"{call.tool} could not be decided ({exc})"))
    # Several actions (a patch touching several files): the strictest answer wins, and it is recorded
    # last so that the call's follow-up events link to the decision that answered.
    order = sorted(range(len(decided)), key=lambda i: _STRICTNESS[decided[i][1].approval])
    action, decision = decided[order[-1]]
    origin = _origin(call, agent)
    extra = {"via": f"{agent.name}-hook"}
    ordered = [decided[i] for i in order]
    items = [(a, d, origin, extra if len(ordered) == 1 else {**extra, "part": n + 1, "parts": len(ordered)})
             for n, (a, d) in enumerate(ordered)]
    reason = reason_text(action, decision, call.tool)
    held = None
    if hold and decision.approval is Approval.APPROVE and call.phase == "before":
        held = Held(call, action, decision, reason)
        answer = agent.answer(call, Approval.BLOCK, f"{reason}; the approval could not be held, so it is denied")
    else:
        answer = agent.answer(call, decision.approval, reason)
    return Step(answer, Decided(items, tuple(policy.redact)), f"the decision on {call.tool} could not be audited",
                held)


def _origin(call: Call, agent: Agent) -> dict[str, Any]:
    origin = {"via": agent.name, "tool": call.tool, **call.origin}
    if call.call_id:
        origin["call_id"] = call.call_id
    return origin


def _refusal(agent: Agent, why: str, raw: str, call: Call | None = None) -> Refused:
    data: dict[str, Any] = {"status": "refused", "via": f"{agent.name}-hook",
                            "reason": f"unreadable {agent.name} hook input: {why}"}
    if call is not None:
        data.update(tool=call.tool, event=call.event)
    else:
        try:
            event = json.loads(raw).get("hook_event_name")
            if isinstance(event, str):
                data["event"] = event[:100]
        except Exception:
            pass
    return Refused(data)


# -- writing the records ---------------------------------------------------------------------------

def apply(log: Any, record: Record) -> None:
    """Write ``record`` with an audit logger (``SQLiteAuditLogger``, ``PostgresAuditLogger``, the
    hook's standard-library writer): the same calls, so the same records, whichever it is."""
    if isinstance(record, Decided):
        if len(record.items) == 1:
            action, decision, origin, extra = record.items[0]
            log.record_decision(action, decision, source=origin, extra=extra)
        else:
            log.record_decisions(record.items)
    elif isinstance(record, Ran):
        data = dict(record.data)
        decision_id = find_decision(log, record.via, record.call)
        if decision_id is None:
            data["note"] = "no decision on this call was found in the audit trail"
        log.record_event("execution", decision_id, data)
    else:
        log.record_event("execution", None, record.data)


class LoggerTrail:
    """The normal trail: opens the audit logger for the target (SQLite file or PostgreSQL URL)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def write(self, record: Record) -> None:
        from aegis_cli.audit.trail import open_audit

        redact = record.redact if isinstance(record, Decided) else ()
        with open_audit(self.target, redact=redact) as log:
            apply(log, record)


_FIND = ("SELECT d.id FROM audit d WHERE d.kind = 'decision' AND d.id > "
         "(SELECT COALESCE(MAX(id), 0) FROM audit) - {n} "
         "AND {via} = {p} AND {call_id} = {p} AND COALESCE({session}, '') = {p} "
         "AND NOT EXISTS (SELECT 1 FROM audit e WHERE e.decision_id = d.id AND e.kind = 'execution') "
         "ORDER BY d.id DESC LIMIT 1")
_FIND_SQLITE = _FIND.format(n="?", p="?", via="json_extract(d.body, '$.origin.via')",
                            call_id="json_extract(d.body, '$.origin.call_id')",
                            session="json_extract(d.body, '$.origin.session_id')")
# PostgreSQL parses only each body's origin object, cut from the canonical text: json and jsonb refuse
# a \u0000 or lone-surrogate escape anywhere in what they parse (a NUL in some earlier call's
# arguments), and one such record would make every later follow-up's lookup fail. The origin sits
# between the last ',"kind":"decision","origin":' (keys are sorted and string values escape their
# quotes, so nothing after it can repeat it) and ',"policy_hash":'; an origin holding a NUL or a surrogate
# escape (rare: ids and paths) is skipped, and that follow-up is recorded without its decision.
_ORIGIN = ("(SELECT o.t::json FROM (SELECT substring(d.body FROM "
           "'^.*,\"kind\":\"decision\",\"origin\":(\\{.*\\}),\"policy_hash\":') AS t) o "
           r"WHERE o.t !~ '\\u(0000|d[89a-f])')")  # a NUL or a surrogate in the origin: skipped, never parsed
_FIND_POSTGRES = _FIND.format(n="%s", p="%s", via=_ORIGIN + " ->> 'via'", call_id=_ORIGIN + " ->> 'call_id'",
                              session=_ORIGIN + " ->> 'session_id'")


def find_decision(log: Any, via: str, call: Call) -> int | None:
    """The newest decision this hook recorded for the same call that has no execution record yet."""
    if not call.call_id:
        return None
    args = (LOOKBACK, via, call.call_id, call.session)
    store = getattr(log, "_store", None)
    if store is not None:  # PostgresAuditLogger: its pool, in a transaction of its own
        with store.transaction("could not read the audit trail in") as cur:
            cur.execute(_FIND_POSTGRES, args)
            row = cur.fetchone()
    else:
        conn = log.conn if hasattr(log, "conn") else log.db.conn
        row = conn.execute(_FIND_SQLITE, args).fetchone()
    return int(row[0]) if row else None


def hook_command(agent: str, policy_paths: list[str], audit_db: str, *, server: str | None = None,
                 token_env: str | None = None, approval_timeout: float | None = None) -> str:
    """The shell command an agent runs: absolute paths, and ``|| exit 2`` so that a hook that cannot
    even start (aegis not found, a broken install) blocks instead of letting the call run.

    With ``server`` (an ``aegis serve`` URL) the command posts the event there with curl instead;
    the token is read from ``$token_env`` when it runs, so the settings file holds no secret.
    """
    import shlex

    if server is not None:
        return server_command(agent, server, token_env)
    import shutil

    exe = shutil.which("aegis")
    base = [exe] if exe else [sys.executable, "-m", "aegis_cli"]
    argv = [*base, "hook", agent]
    for path in policy_paths:
        argv += ["-p", os.path.abspath(path)]
    from aegis_cli.audit.target import is_postgres

    argv += ["--audit-db", audit_db if is_postgres(audit_db) else os.path.abspath(audit_db)]  # a URL stays a URL
    if approval_timeout is not None:
        argv += ["--approvals", "queue", "--approval-timeout", f"{approval_timeout:g}"]
    return shlex.join(argv) + " || exit 2"


def hook_timeout(approval_timeout: float | None, default: int = 30) -> int:
    """Seconds the agent gives the hook: past a held approval's wait, so that aegis answers (denies)
    before the agent gives up on the hook (which some agents take as "run it")."""
    if approval_timeout is None:
        return default
    return max(default, int(approval_timeout) + 1 + 15)


CURL_MAX_TIME = 10  # seconds: well inside every agent's hook timeout, so curl gives up (and blocks) first


def server_command(agent: str, server: str, token_env: str | None = None) -> str:
    """``curl -sf ... --data-binary @- URL || { echo ...; exit 2; }``: a non-2xx answer (an event
    the server cannot decide, a failed audit write, a bad token), a server that is down or slower
    than ``--max-time`` all make curl fail, and the call is blocked with one line on stderr."""
    import re
    import shlex

    base = server.rstrip("/")
    if not re.match(r"https?://[^\s/]+", base):
        raise ValueError(f"--server must be an http:// or https:// URL, not {server!r}")
    url = f"{base}/api/v1/hooks/{agent}"
    parts = ["curl", "-sf", "--max-time", str(CURL_MAX_TIME), "-H", shlex.quote("Content-Type: application/json")]
    if token_env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token_env):
            raise ValueError(f"--token-env must name an environment variable, not {token_env!r}")
        parts += ["-H", f'"Authorization: Bearer ${token_env}"']  # expanded by the shell, when it runs
    parts += ["--data-binary", "@-", shlex.quote(url)]
    message = shlex.quote(f"aegis: no decision from {base} (curl exit ")
    tail = shlex.quote("); blocked (fail closed)")
    return " ".join(parts) + f' || {{ echo {message}"$?"{tail} >&2; exit 2; }}'


def read_stdin(read: Callable[[], bytes]) -> str:
    try:
        return read().decode("utf-8", "replace")
    except Exception as exc:  # unreadable stdin is refused like any other unreadable input
        return f"<stdin unreadable: {exc}>"
