"""Code Assist API replies (``POST {CODE_ASSIST_ENDPOINT}/v1internal:generateContent`` and
``:streamGenerateContent?alt=sse``): what Gemini CLI talks to when signed in with Google.

Gemini CLI 0.61 (``packages/core/src/code_assist/server.ts``) sends the Gemini request wrapped as
``{"model", "project", "user_prompt_id", "request": {contents, tools, ...}}`` and reads the reply's
``response`` (``{"response": {"candidates": [...], "modelVersion"}, "traceId"}``), one such object
per ``data:`` line when streamed. The ``functionCall`` parts inside ``response.candidates`` are
decided by ``gemini_generate``'s own code, so a call means the same here as on the Gemini API; a
top-level ``candidates`` (which the CLI ignores) is decided too, rather than trusted.

Code Assist streams with ``alt=sse`` only; a ``streamGenerateContent`` reply that is not an event
stream is read whole and withheld unless it is one JSON object (fail closed).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

from aegis_cli.wrap import gemini_generate as gemini
from aegis_cli.wrap.sse import await_with_keepalive, read_batches
from aegis_cli.wrap.tool_gate import Decide, ToolCall

log = logging.getLogger("aegis.wrap")

API = "codeAssist.generateContent"  # recorded as the call's api, beside provider "gemini"
KEEPALIVE = gemini.KEEPALIVE
error_json, error_body = gemini.error_json, gemini.error_body


def streams_json(path: str) -> bool:
    return False  # no JSON-array streams: such a reply is not one object, so it is withheld


def has_calls(body: Any) -> bool:
    """Whether a reply (or chunk) holds a ``functionCall`` part, inside ``response`` or not."""
    return gemini.has_calls(body) or (isinstance(body, dict) and gemini.has_calls(body.get("response")))


def _tagged(decide: Decide) -> Decide:
    """``decide``, with each call recorded as coming from the Code Assist API."""
    async def decide_here(call: ToolCall) -> Any:
        return await decide(dataclasses.replace(call, api=API))

    batch = getattr(decide, "batch", None)
    if batch is not None:  # the proxy's one-transaction form, when it offers one
        async def batch_here(calls: list[ToolCall]) -> list[Any]:
            return await batch([dataclasses.replace(call, api=API) for call in calls])

        decide_here.batch = batch_here  # type: ignore[attr-defined]
    return decide_here


async def _decide(body: dict[str, Any], decide: Decide, carry: dict[Any, Any]) -> dict[str, Any]:
    """The reply with every ``functionCall`` decided, in ``response`` and at the top; ``body`` when none was blocked."""
    if not has_calls(body):
        return body
    decide = _tagged(decide)
    out = await gemini._decide(body, decide, carry)
    inner = out.get("response")
    if isinstance(inner, dict):
        decided = await gemini._decide(inner, decide, carry)
        if decided is not inner:
            out = {**out, "response": decided}
    return out


async def rewrite_json(body: dict[str, Any], decide: Decide) -> dict[str, Any]:
    """Decide the calls in a ``generateContent`` reply; returns the reply the agent gets."""
    return await _decide(body, decide, {})


async def rewrite_stream(chunks: AsyncIterator[bytes], decide: Decide) -> AsyncIterator[bytes]:
    """Pass a ``streamGenerateContent?alt=sse`` stream through, deciding the calls in each chunk."""
    carry: dict[Any, Any] = {}
    async for batch in read_batches(chunks):  # the events one read completed
        for ev in batch:
            if not ev.data.strip():
                yield ev.raw
                continue
            data = ev.json()
            if not isinstance(data, dict):
                log.error("aegis: unreadable Code Assist stream chunk; stream ended (fail closed)")
                yield gemini._sse(error_json(502, "aegis: the upstream sent a stream chunk that is not a JSON object; "
                                                  "the rest of the reply is withheld (fail closed)"), ev)
                return
            if not has_calls(data):
                yield ev.raw
                continue
            async for out in await_with_keepalive(_decide(data, decide, carry), KEEPALIVE):
                if isinstance(out, bytes):
                    yield out
                else:
                    yield ev.raw if out.value is data else gemini._sse(out.value, ev)
