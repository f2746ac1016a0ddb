"""The ASGI application: routes, decisions and the policy endpoints.

Approvals and the audit trail have their own modules (``approvals_api``, ``audit_api``); this one
wires everything together. ``create_app(state)`` is what tests and ``aegis serve`` run.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aegis_cli.engine.errors import PolicyError
from aegis_cli.serve import approvals_api, audit_api, hooks_api, metrics, page
from aegis_cli.serve.auth import Role
from aegis_cli.serve.evaluate import PATH as EVALUATE
from aegis_cli.serve.evaluate import Evaluate
from aegis_cli.serve.guard import Guard
from aegis_cli.serve.http import HTTPProblem, authorize, json_response, only_params, read_body
from aegis_cli.serve.state import ServerState
from aegis_cli.serve.writer import WriterClosed

log = logging.getLogger("aegis.serve")

_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def create_app(state: ServerState) -> Any:
    """The server's ASGI app over ``state`` (whose writer must already be started)."""
    fast = Evaluate(state)
    hooks = hooks_api.endpoints(state)
    routes = [
        Route("/", page.index, methods=["GET"]),
        Route("/static/{name}", page.asset, methods=["GET"]),
        Route("/favicon.ico", page.favicon, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
        Route(EVALUATE, fast, methods=["POST"]),
        Route("/api/v1/policy", policy_endpoint, methods=["GET", "PUT"]),
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in hooks.items()),
        *approvals_api.routes(),
        *audit_api.routes(),
    ]
    app = Starlette(routes=routes, exception_handlers={
        HTTPProblem: _problem, HTTPException: _http_exception, Exception: _crash,
    })
    app.state.aegis = state
    state.writer.on_commit = state.metrics.committed
    return Guard(app, loopback_only=not state.tokens.enabled, metrics=state.metrics,
                 fast={("POST", EVALUATE): fast, **{("POST", path): hook for path, hook in hooks.items()}})


def state_of(request: Request) -> ServerState:
    return request.app.state.aegis


# -- errors ------------------------------------------------------------------------------------

async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPProblem)
    return exc.response()


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return json_response({"error": codes.get(exc.status_code, "http_error"), "message": exc.detail},
                         exc.status_code, headers=dict(exc.headers or {}))


async def _crash(request: Request, exc: Exception) -> Response:
    # A bug must not leak internals to an agent, nor take the server down; it goes to the log.
    log.exception("internal error on %s %s", request.method, request.url.path)
    return json_response({"error": "internal_error", "message": "internal server error; see the server log"}, 500)


# -- plain endpoints -----------------------------------------------------------------------------

async def healthz(request: Request) -> Response:
    state = state_of(request)
    out = {"status": "ok", "policy_hash": state.policy.hash,
           "audit": {"batches": state.writer.batches, "decisions": state.writer.decisions}}
    if state.fleet is not None:
        out["fleet_policy"] = state.fleet.to_dict()
    return json_response(out)


async def openapi(request: Request) -> Response:
    from aegis_cli.serve.openapi import bundled

    return json_response(bundled())


# -- policy --------------------------------------------------------------------------------------

async def policy_endpoint(request: Request) -> Response:
    # One route per path, so that a 405 names every allowed method.
    return await (put_policy(request) if request.method == "PUT" else get_policy(request))


async def get_policy(request: Request) -> Response:
    authorize(request, Role.EVALUATE)
    only_params(request)
    return json_response(state_of(request).current.to_dict())


async def put_policy(request: Request) -> Response:
    from aegis_cli.engine.check import warnings_for

    principal = authorize(request, Role.ADMIN)
    only_params(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json" and ctype not in _YAML_TYPES:
        raise HTTPProblem(415, "unsupported_media_type",
                          "send the policy as application/yaml or application/json")
    body = await read_body(request)
    policy = _load_policy(body, ctype)
    state = state_of(request)
    try:
        old, event_id = await state.replace_policy(policy, by=principal.name, source="PUT /api/v1/policy")
    except WriterClosed:
        raise HTTPProblem(503, "shutting_down", "the server is shutting down; the policy is unchanged") from None
    except Exception as exc:
        log.error("policy change not audited: %s", exc)
        raise HTTPProblem(503, "audit_unavailable",
                          "the change could not be written to the audit trail; the policy is unchanged") from None
    return json_response({
        "hash": policy.hash, "previous_hash": old.policy.hash, "audit_id": event_id,
        "rules": len(policy.rules), "loaded_at": state.current.loaded_at.isoformat(),
        "warnings": [i.to_dict() for i in warnings_for(policy)],
    })


def _check_redact(policy: Any, source: str, locations: Any) -> None:
    """The loader does not compile audit.redact patterns; the audit logger would fail on a bad one."""
    from aegis_cli.engine.errors import Issue
    from aegis_cli.engine.matching import GlobError, compile_glob

    issues = []
    for i, pattern in enumerate(policy.redact):
        try:
            compile_glob(pattern)
        except GlobError as exc:
            line, col = locations.get(("audit", "redact", i), (None, None))
            issues.append(Issue(source, line, col, str(exc), path=f"audit/redact/{i}"))
    if issues:
        raise PolicyError(issues)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _load_policy(body: bytes, ctype: str) -> Any:
    """Validate exactly as `aegis validate` does (same loader); 422 with every located issue."""
    from aegis_cli.engine.errors import Issue
    from aegis_cli.engine.policy import build_policy
    from aegis_cli.engine.yamlload import load_yaml
    from aegis_cli.serve.http import parse_json

    source = "<PUT /api/v1/policy>"
    parsed = parse_json(body) if ctype == "application/json" else None  # 400 for malformed JSON
    # load_text's two steps (JSON is YAML, so line:column is kept for every issue), with one check
    # between: an empty or non-mapping document is a truncated upload, not a policy.
    try:
        if isinstance(parsed, dict) and _SURROGATE_ESCAPE.search(body):
            # YAML reads a JSON surrogate pair ("\ud83d\ude80", as json.dumps writes an emoji) as two
            # lone surrogates: judge the JSON document itself (no line numbers, but the right text).
            document, locations = parsed, {}
        else:
            try:
                document, locations = load_yaml(body, source)
            except PolicyError:
                if not isinstance(parsed, dict):
                    raise
                document, locations = parsed, {}  # JSON that YAML reads otherwise (tabs, say)
        if not isinstance(document, dict):
            raise PolicyError(Issue(source, 1, 1, "the policy must be a mapping (version, defaults, rules ...)"))
        policy = build_policy(document, source, locations)
        _check_redact(policy, source, locations)
        return policy
    except PolicyError as exc:
        error = exc
    except Exception as exc:  # a loader bug must not become a 500, nor change the policy
        log.exception("policy loader failed on PUT /api/v1/policy")
        error = PolicyError(Issue(source, None, None, f"the policy could not be read ({type(exc).__name__})"))
    raise HTTPProblem(422, "invalid_policy", f"the policy is invalid; the one in force is unchanged: {error}",
                      issues=[i.to_dict() for i in error.issues])
