"""Ask over HTTP: POST the request as JSON, then take the answer from the response, a callback, or polling.

The POST body carries the action, the decision, a Slack-compatible ``text`` field (so a Slack or
Mattermost incoming-webhook URL works as-is for notification), and, when configured, where to answer:

- ``callback_url``: the handler listens on ``callback_host:callback_port`` and the approver (or a bot)
  POSTs ``{"approved": true, "by": "alice", "note": "..."}`` there. The URL holds a random
  per-request token, which is what authenticates the answer.
- ``status_url``: the handler polls it with GET until the JSON says approved or denied.

An endpoint may also answer at once in the POST response. An answer is ``{"approved": bool}`` or
``{"status": "approved"|"denied"|"pending"}``, with optional ``by`` and ``note``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Mapping
from typing import Any

try:
    import httpx
except ImportError:  # the core install: say which extra brings it
    raise ImportError("WebhookApprovalHandler needs httpx: pip install 'aegis-cli[runtime]'") from None

from aegis_cli.approvals.base import ApprovalAnswer, ApprovalRequestInfo
from aegis_cli.engine.models import Action, Decision

log = logging.getLogger("aegis.approvals.webhook")

_PATH = "/aegis/approvals/"
_MAX_BODY = 64 * 1024


class WebhookApprovalHandler:
    """POST the request to ``url`` and wait for the answer (see the module docstring for the protocol).

    ``status_url`` may contain ``{id}`` (the request id); the POST response may also name one as
    ``status_url``. ``callback=True`` starts a small listener for answers; ``public_url`` is its
    address as the approver sees it (behind a proxy), default ``http://callback_host:port``.
    ``secret`` signs each POST body: header ``X-Aegis-Signature: sha256=<hex HMAC>``.
    """

    def __init__(self, url: str, *, timeout: float = 300.0, status_url: str | None = None,
                 callback: bool = False, callback_host: str = "127.0.0.1", callback_port: int = 0,
                 public_url: str | None = None, poll_interval: float = 2.0,
                 headers: Mapping[str, str] | None = None, secret: str | None = None,
                 request_timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self.status_url = status_url
        self.callback = callback
        self.callback_host = callback_host
        self.callback_port = callback_port
        self.public_url = public_url
        self.poll_interval = poll_interval
        self.headers = dict(headers or {})
        self.secret = secret
        self.request_timeout = request_timeout
        self._pending: dict[str, asyncio.Future[ApprovalAnswer]] = {}
        self._server: asyncio.AbstractServer | None = None

    # -- asking ----------------------------------------------------------------------------------

    async def request(self, action: Action, decision: Decision, *, decision_id: int | None) -> ApprovalAnswer:
        info = ApprovalRequestInfo.build(action, decision, decision_id, self.timeout)
        request_id = secrets.token_urlsafe(16)
        payload: dict[str, Any] = {"id": request_id, "text": slack_text(info), **info.to_dict()}
        waiters: list[asyncio.Future[ApprovalAnswer]] = []
        if self.callback:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[ApprovalAnswer] = loop.create_future()
            self._pending[request_id] = future
            waiters.append(future)
        try:
            if self.callback:
                payload["callback_url"] = await self._callback_url(request_id)
            status_url = self.status_url.replace("{id}", request_id) if self.status_url else None
            if status_url:
                payload["status_url"] = status_url
            async with httpx.AsyncClient(timeout=self.request_timeout, headers=self.headers) as client:
                reply = await self._post(client, payload)
                answer = parse_answer(reply) if reply else None
                if answer is not None:
                    return answer
                status_url = (reply or {}).get("status_url") or status_url
                if status_url:
                    waiters.append(asyncio.ensure_future(self._poll(client, str(status_url))))
                if not waiters:
                    raise RuntimeError(f"{self.url} gave no answer, and neither a callback nor a status URL "
                                       "is configured to wait for one")
                try:
                    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
                return done.pop().result()
        finally:
            self._pending.pop(request_id, None)
            if not self._pending:
                await self._stop_listener()

    async def _post(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> dict[str, Any] | None:
        body = json.dumps(payload, default=str, ensure_ascii=False).encode()
        headers = {"content-type": "application/json"}
        if self.secret:
            mac = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            headers["x-aegis-signature"] = f"sha256={mac}"
        resp = await client.post(self.url, content=body, headers=headers)
        if resp.status_code >= 300:
            raise RuntimeError(f"{self.url} answered HTTP {resp.status_code}")
        try:
            data = resp.json()
        except ValueError:
            return None  # a plain "ok" (Slack answers that): the answer comes later
        return data if isinstance(data, dict) else None

    async def _poll(self, client: httpx.AsyncClient, url: str) -> ApprovalAnswer:
        while True:
            try:
                resp = await client.get(url)
            except httpx.HTTPError as exc:  # transient: the timeout bounds how long we keep trying
                log.warning("polling %s failed: %s", url, exc)
            else:
                if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                    raise RuntimeError(f"status URL {url} answered HTTP {resp.status_code}")
                if resp.status_code < 300:
                    answer = parse_answer(resp.json())
                    if answer is not None:
                        return answer
            await asyncio.sleep(self.poll_interval)

    # -- the callback listener ---------------------------------------------------------------------

    async def _callback_url(self, request_id: str) -> str:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.callback_host, self.callback_port)
        host, port = self._server.sockets[0].getsockname()[:2]
        base = (self.public_url or f"http://{_url_host(host)}:{port}").rstrip("/")
        return f"{base}{_PATH}{request_id}"

    async def _stop_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            code, body = await asyncio.wait_for(self._handle(reader), 10.0)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            code, body = 400, {"error": "bad request"}
        data = json.dumps(body).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  409: "Conflict", 413: "Payload Too Large"}.get(code, "Error")
        with contextlib.suppress(OSError):
            writer.write(f"HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: "
                         f"{len(data)}\r\nconnection: close\r\n\r\n".encode() + data)
            await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        length = int(headers.get("content-length", "0"))
        if length > _MAX_BODY:
            return 413, {"error": "body too large"}
        body = await reader.readexactly(length) if length else b""
        if method != "POST":
            return 405, {"error": "POST an answer"}
        future = self._pending.get(target[len(_PATH):]) if target.startswith(_PATH) else None
        if future is None:
            return 404, {"error": "no such pending approval (answered, expired or unknown)"}
        if future.done():
            return 409, {"error": "already answered"}
        answer = parse_answer(json.loads(body or b"{}"))
        if answer is None:
            return 400, {"error": 'an answer needs "approved": true|false or "status": "approved"|"denied"'}
        future.set_result(answer)
        return 200, {"ok": True, "status": answer.status}


def parse_answer(data: Any) -> ApprovalAnswer | None:
    """An answer from JSON; None while pending. Raises ``ValueError`` for something that is neither."""
    if not isinstance(data, dict):
        raise ValueError("an approval answer must be a JSON object")
    by = str(data.get("by") or data.get("user") or "webhook")
    note = str(data.get("note") or "")
    approved = data.get("approved")
    status = data.get("status")
    if isinstance(approved, bool):
        return ApprovalAnswer.approve(by, note) if approved else ApprovalAnswer.deny(by, note)
    if status == "approved":
        return ApprovalAnswer.approve(by, note)
    if status in ("denied", "rejected"):
        return ApprovalAnswer.deny(by, note)
    if status in (None, "pending"):
        return None
    raise ValueError(f"unknown approval status {status!r}")


def slack_text(info: ApprovalRequestInfo) -> str:
    """Slack/Mattermost mrkdwn for an incoming webhook's ``text`` field."""
    d, a = info.decision, info.action
    rule = f"rule `{d.rule}`" if d.rule else "the policy defaults"
    agent = f" by agent `{a.agent}`" if a.agent else ""
    ref = f" (decision #{info.decision_id})" if info.decision_id is not None else ""
    lines = [f":warning: *aegis: approval needed*{ref}",
             f"`{a.type}` on `{a.target}`{agent}: *{d.risk_level.value}* risk, {rule}"]
    if d.reason:
        lines.append(f"> {d.reason}")
    lines.append(f"Denied automatically if not answered within {info.timeout:g}s.")
    return "\n".join(lines)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
