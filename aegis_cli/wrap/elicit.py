"""Asking the person in their own MCP app: elicitation, in both protocol eras.

Handshake era (to 2025-11-25): aegis sends the host its own ``elicitation/create`` request, with an
id no server would use, and waits for the answer; ``HostElicitation`` is an ordinary approval
handler, so ``ask()`` applies the timeout and a cancelled call withdraws the question.

Per-request era (2026-07-28): servers no longer send requests to the client; they answer
``input_required`` and the client retries the call with the answers and an opaque
``requestState``. aegis does the same. ``ApprovalTokens`` makes that state: it names the decision,
binds it to this exact tool call (name and arguments), is signed with a key that lives only in
this process and can be used once, so an answer cannot be replayed onto another call.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aegis_cli.approvals.base import ApprovalAnswer
from aegis_cli.engine.models import Action, Decision
from aegis_cli.wrap.messages import dumps, elicitation_approved

ID_PREFIX = "aegis-elicit-"


class HostElicitation:
    """Approval handler that asks the MCP host through ``elicitation/create`` (one per held call)."""

    _ids = itertools.count(1)
    _session = os.urandom(4).hex()

    def __init__(self, send: Callable[[bytes], None], pending: dict[str, asyncio.Future[Any]],
                 params: dict[str, Any], timeout: float, host: str) -> None:
        self.timeout = timeout
        self._send = send
        self._pending = pending
        self._params = params
        self._host = host

    async def request(self, action: Action, decision: Decision, *, decision_id: int | None) -> ApprovalAnswer:
        # The id is a string with a per-process random part: servers number their requests, so
        # the host's answer to this one can be told apart from answers meant for the server.
        req_id = f"{ID_PREFIX}{self._session}-{next(self._ids)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        try:
            self._send(dumps({"jsonrpc": "2.0", "id": req_id, "method": "elicitation/create",
                              "params": self._params}))
            reply = await future
        except asyncio.CancelledError:
            # Timed out or the call was cancelled: tell the host to close the question.
            self._send(dumps({"jsonrpc": "2.0", "method": "notifications/cancelled",
                              "params": {"requestId": req_id, "reason": "aegis: approval no longer needed"}}))
            raise
        finally:
            self._pending.pop(req_id, None)
        return answer_from_reply(reply, self._host)


def answer_from_reply(reply: Any, host: str) -> ApprovalAnswer:
    """An ``ApprovalAnswer`` from the host's JSON-RPC response (result or error)."""
    if isinstance(reply, dict) and "error" in reply:
        err = reply.get("error")
        text = err.get("message") if isinstance(err, dict) else None
        return ApprovalAnswer.deny(host, f"the host could not ask: {text or err!r}", status="error")
    approved, what = elicitation_approved(reply.get("result") if isinstance(reply, dict) else None)
    return ApprovalAnswer.approve(host, what) if approved else ApprovalAnswer.deny(host, what)


def call_digest(name: str, arguments: Any) -> str:
    canon = json.dumps([name, arguments], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenState:
    decision_id: int | None
    digest: str
    issued: float
    nonce: str
    approved: bool  # True: re-wraps a server's own input_required state for an already-approved call
    inner: str | None  # the server's requestState, restored when the call is forwarded


class ApprovalTokens:
    """Signed, single-use ``requestState`` values for per-request-era approvals."""

    PREFIX = "aegis1."

    def __init__(self) -> None:
        self._key = os.urandom(32)
        self._live: set[str] = set()
        self._expired: set[str] = set()

    def issue(self, decision_id: int | None, digest: str, *, approved: bool = False,
              inner: str | None = None) -> tuple[str, str]:
        """A new token and its nonce."""
        nonce = os.urandom(12).hex()
        payload = json.dumps({"d": decision_id, "h": digest, "t": time.time(), "n": nonce, "a": approved,
                              "s": inner}, separators=(",", ":")).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        self._live.add(nonce)
        return f"{self.PREFIX}{body}.{self._sign(body)}", nonce

    def _sign(self, body: str) -> str:
        mac = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    @classmethod
    def is_ours(cls, state: Any) -> bool:
        return isinstance(state, str) and state.startswith(cls.PREFIX)

    def redeem(self, token: str, digest: str) -> TokenState | str:
        """The token's state if it is genuine, unused and for this call (consuming it); else what is wrong."""
        body, _, mac = token[len(self.PREFIX):].partition(".")
        # compared as bytes: compare_digest raises on non-ASCII str, and a forged state must be refused
        if not hmac.compare_digest(mac.encode("utf-8", "surrogatepass"), self._sign(body).encode()):
            return "its approval state is not one aegis issued"
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            state = TokenState(data["d"], data["h"], float(data["t"]), data["n"], bool(data["a"]), data["s"])
        except (ValueError, KeyError, TypeError):
            return "its approval state is malformed"
        if not isinstance(state.digest, str) or not hmac.compare_digest(
                state.digest.encode("utf-8", "surrogatepass"), digest.encode("utf-8", "surrogatepass")):
            return "its approval state is for another call"
        if state.nonce in self._expired:
            return "it was not approved in time"
        if state.nonce not in self._live:
            return "its approval state was already used"
        self._live.discard(state.nonce)
        return state

    def forget(self, nonce: str) -> bool:
        """Retire an unredeemed token (its approval timed out); False when it was already used."""
        if nonce in self._live:
            self._live.discard(nonce)
            if len(self._expired) > 10_000:  # bounded: past that, an expired token reads as used
                self._expired.clear()
            self._expired.add(nonce)
            return True
        return False
