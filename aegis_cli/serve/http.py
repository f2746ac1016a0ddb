"""HTTP plumbing shared by the endpoints: bounded bodies, strict JSON, one error shape, auth checks.

Every error the server gives is ``{"error": CODE, "message": TEXT, ...}`` with a fitting status:
400 malformed JSON, 401 no or wrong token, 403 wrong role or cross-site, 404, 405, 413 body over
the limit, 415 wrong content type, 422 wrong shape, 503 could not audit (so: no decision).
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from aegis_cli.serve.auth import Principal, Role, TokenStore

MAX_BODY = 1 << 20  # 1 MiB


class HTTPProblem(Exception):
    """An error answer: raised anywhere in a handler, rendered by the app's exception handler."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra

    def response(self) -> Response:
        return json_response({"error": self.code, "message": self.message, **self.extra}, self.status,
                             headers=self.headers)


# Added to every response (by the guard, or directly on the fast path).
RESPONSE_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
)

_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def dumps(data: Any) -> bytes:
    return _encode(data).encode()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(data), status, headers=headers, media_type="application/json")


async def receive_body(receive: Any, declared: bytes | None, limit: int = MAX_BODY) -> bytes:
    """The body from an ASGI ``receive``: a declared length over ``limit`` is refused (413) before
    anything is read, and chunked uploads, which declare none, are counted as they come."""
    check_declared(declared, limit)
    chunks = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPProblem(400, "bad_request", "client disconnected")
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def check_declared(declared: bytes | None, limit: int = MAX_BODY) -> None:
    """A declared Content-Length over ``limit``: 413 before any of the body is read."""
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HTTPProblem(400, "bad_request", "Content-Length is not a number") from None
        if size > limit:
            raise HTTPProblem(413, "body_too_large", f"request body is {size} bytes; the limit is {limit}")


def too_large(limit: int = MAX_BODY) -> HTTPProblem:
    return HTTPProblem(413, "body_too_large", f"request body exceeds the limit of {limit} bytes")


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, refusing (413) anything over ``limit`` before reading all of it."""
    return await receive_body(request.receive, request.headers.get("content-length"), limit)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # {"type": "read", "type": "delete"}: parsers disagree on which one wins, so a proxy in
        # front of aegis may read another action than aegis decides; refuse it (as wrap --mcp does).
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {dup!r} in a JSON object")
    return obj


_decoder = json.JSONDecoder(parse_constant=_no_constants, parse_float=_finite_float, object_pairs_hook=_unique_keys)
_scan = _decoder.scan_once  # json's C scanner (JSONDecoder.decode is two Python calls around it)
_space = json.decoder.WHITESPACE.match
_BOM = b"\xef\xbb\xbf"


def _decode(text: str) -> Any:
    """``_decoder.decode(text)``: the same result and the same errors, with less around the scanner."""
    try:
        data, end = _scan(text, _space(text, 0).end())
    except StopIteration as err:
        raise json.JSONDecodeError("Expecting value", text, err.value) from None
    end = _space(text, end).end()
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return data


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no lone surrogates, no duplicate keys; 400 otherwise."""
    if not body.strip():
        raise HTTPProblem(400, "malformed_json", "the request body is empty; expected JSON")
    try:
        # A BOM is tolerated (RFC 8259 allows ignoring it), as "utf-8-sig" would, without its Python codec.
        data = _decode((body[3:] if body[:3] == _BOM else body).decode("utf-8"))
        if b"\\u" in body or b"\\U" in body:
            # "\ud800" parses to a lone surrogate that no UTF-8 store can hold: refuse it here,
            # not half-way through an audit transaction shared with other requests.
            json.dumps(data, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise HTTPProblem(400, "malformed_json", "JSON nested too deeply") from None
    except UnicodeError as exc:
        raise HTTPProblem(400, "malformed_json", f"body is not valid UTF-8 JSON: {exc.reason}") from None
    except ValueError as exc:
        raise HTTPProblem(400, "malformed_json", f"malformed JSON: {exc}") from None
    return data


async def read_json(request: Request) -> Any:
    return parse_json(await read_body(request))


def authorize(request: Request, role: Role) -> Principal:
    """The caller, if it may act as ``role``; else 401 (who are you?) or 403 (not allowed)."""
    return authenticate(request.app.state.aegis.tokens, request.headers.get("authorization"), role)


def authenticate(tokens: TokenStore, authorization: str | None, role: Role) -> Principal:
    principal = tokens.authenticate(authorization)
    if principal is None:
        raise HTTPProblem(401, "unauthorized", "missing or invalid bearer token",
                          headers={"WWW-Authenticate": 'Bearer realm="aegis"'})
    if principal.role < role:
        raise HTTPProblem(403, "forbidden", f"token '{principal.name}' has role {principal.role.label}; "
                          f"this needs {role.label}")
    return principal


def only_params(request: Request, *allowed: str) -> None:
    """422 for a query parameter the endpoint does not know: a typo must not be silently ignored."""
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        raise HTTPProblem(422, "invalid_parameter", f"unknown query parameter(s): {', '.join(unknown)[:200]}")


def query_float(request: Request, name: str, default: float | None, lo: float, hi: float) -> float | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise HTTPProblem(422, "invalid_parameter", f"query parameter '{name}' must be a number") from None
    if not lo <= value <= hi or math.isnan(value):
        raise HTTPProblem(422, "invalid_parameter", f"query parameter '{name}' must be between {lo:g} and {hi:g}")
    return value


def query_int(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPProblem(422, "invalid_parameter", f"query parameter '{name}' must be an integer") from None
    if not lo <= value <= hi:
        raise HTTPProblem(422, "invalid_parameter", f"query parameter '{name}' must be between {lo} and {hi}")
    return value
