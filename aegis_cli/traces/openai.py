"""OpenAI-shaped chat messages and the benchmark files built on them; the Responses API items.

Chat Completions: an assistant message holds ``tool_calls[j] = {"id", "function": {"name",
"arguments"}}`` with arguments a JSON string (or an object, as Invariant writes them). The same
message list appears bare, as ``{"messages": [...]}`` (request bodies, Invariant JSONL), inside a
completion (``choices[k].message``), inside tau-bench result arrays (``[{"traj": [...]}]``) and
inside AgentDojo runs, whose calls are ``{"function": NAME, "args": {...}}``. tau2 writes
``{"id", "name", "arguments"}``. The legacy ``function_call`` field is read too.

Responses API: ``{"type": "function_call", "name", "arguments", "call_id"}`` items, bare, in a
list, or under a response's ``output`` / a request's ``input``; ``mcp_call`` items carry the
MCP server as ``server_label``, which becomes the call's namespace.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from aegis_cli.traces.base import (
    Item,
    Location,
    MalformedRecord,
    Problem,
    ToolCall,
    as_str,
    call_id,
    timestamp_or_none,
)


def _is_message(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("role"), str)


def _is_message_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(map(_is_message, value))


def messages_of(record: Any) -> tuple[list[Any], tuple[Any, ...]] | None:
    """The chat message list a record holds and its pointer, or None if it holds none."""
    if _is_message_list(record):
        return record, ()
    if _is_message(record) and "type" not in record:  # typed items are Responses API or Anthropic
        return [record], ()
    if isinstance(record, dict):
        if isinstance(record.get("messages"), list):
            return record["messages"], ("messages",)
        choices = record.get("choices")
        if isinstance(choices, list) and choices and all(isinstance(c, dict) and _is_message(c.get("message"))
                                                         for c in choices):
            return [c["message"] for c in choices], ("choices",)
    return None


def chat_calls(messages: list[Any], where: Location, *, agent: str = "", session: str = "",
               namespace: str | None = None) -> Iterator[Item]:
    """The tool calls of an OpenAI-shaped message list; a bad call is a problem, not a lost call."""
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            yield Problem(where.at(i), "a chat message must be a JSON object")
            continue
        ts = timestamp_or_none(message.get("timestamp"))
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            for j, call in enumerate(calls):
                at = where.at(i, "tool_calls", j)
                try:
                    name, arguments, ident = _chat_call(call)
                except MalformedRecord as exc:
                    yield Problem(at, str(exc))
                    continue
                yield ToolCall(name, arguments, at, namespace=namespace, timestamp=ts, call_id=ident,
                               agent=agent, session=session)
        elif calls is not None:
            yield Problem(where.at(i, "tool_calls"), "'tool_calls' must be a list")
        legacy = message.get("function_call")
        if isinstance(legacy, dict):
            name = legacy.get("name")
            if isinstance(name, str) and name:
                yield ToolCall(name, legacy.get("arguments"), where.at(i, "function_call"), namespace=namespace,
                               timestamp=ts, agent=agent, session=session)
            else:
                yield Problem(where.at(i, "function_call"), "function_call has no 'name'")


def _chat_call(call: Any) -> tuple[str, Any, str | None]:
    if not isinstance(call, dict):
        raise MalformedRecord("a tool call must be a JSON object")
    fn = call.get("function")
    if isinstance(fn, dict):  # Chat Completions
        name, arguments = fn.get("name"), fn.get("arguments")
    elif isinstance(fn, str):  # AgentDojo
        name, arguments = fn, call.get("args", call.get("arguments"))
    else:  # tau2
        name, arguments = call.get("name"), call.get("arguments")
    if not isinstance(name, str) or not name:
        raise MalformedRecord("tool call has no function name")
    return name, arguments, call_id(call.get("id"))


class ChatReader:
    name: ClassVar[str] = "openai"
    description: ClassVar[str] = ("OpenAI Chat Completions messages (tool_calls), bare, {messages}, completions; "
                                  "Invariant traces")

    @staticmethod
    def detect(record: Any) -> bool:
        found = messages_of(record)
        return found is not None and all(_is_message(m) for m in found[0][:50])

    def read(self, record: Any, where: Location) -> Iterator[Item]:
        found = messages_of(record)
        if found is None:
            if isinstance(record, dict) and set(record) <= {"metadata", "index", "id"}:
                return  # an Invariant dataset header line
            raise MalformedRecord("not a chat message or message list")
        messages, pointer = found
        meta = record.get("metadata") if isinstance(record, dict) else None
        session = as_str(record.get("id")) if isinstance(record, dict) else ""
        if not session and isinstance(meta, dict):
            session = as_str(meta.get("session_id"))
        yield from chat_calls(messages, where.at(*pointer), session=session)


class TauBenchReader:
    name: ClassVar[str] = "tau-bench"
    description: ClassVar[str] = "tau-bench results: a JSON array of {task_id, traj: [OpenAI messages], ...}"

    @staticmethod
    def detect(record: Any) -> bool:
        return (isinstance(record, list) and bool(record)
                and all(isinstance(r, dict) and isinstance(r.get("traj"), list) for r in record[:20]))

    def read(self, record: Any, where: Location) -> Iterator[Item]:
        runs = record if isinstance(record, list) else [record]
        for k, run in enumerate(runs):
            at = where.at(k) if isinstance(record, list) else where
            if not isinstance(run, dict) or not isinstance(run.get("traj"), list):
                yield Problem(at, "tau-bench entry without a 'traj' list")
                continue
            session = f"task {run.get('task_id')}" + (f" trial {run['trial']}" if "trial" in run else "")
            yield from chat_calls(run["traj"], at.at("traj"), session=session)


class AgentDojoReader:
    name: ClassVar[str] = "agentdojo"
    description: ClassVar[str] = "AgentDojo run JSON: {suite_name, pipeline_name, messages, ...}"

    @staticmethod
    def detect(record: Any) -> bool:
        return isinstance(record, dict) and "suite_name" in record and isinstance(record.get("messages"), list)

    def read(self, record: Any, where: Location) -> Iterator[Item]:
        if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
            raise MalformedRecord("AgentDojo run without a 'messages' list")
        session = "/".join(str(record.get(k)) for k in ("suite_name", "user_task_id", "injection_task_id"))
        yield from chat_calls(record["messages"], where.at("messages"), agent=as_str(record.get("pipeline_name")),
                              session=session)


_RESPONSE_CALLS = ("function_call", "mcp_call", "custom_tool_call")


def _response_items(record: Any) -> tuple[list[Any], tuple[Any, ...]] | None:
    if isinstance(record, list):
        return record, ()
    if isinstance(record, dict):
        for key in ("output", "input"):
            if isinstance(record.get(key), list):
                return record[key], (key,)
        if isinstance(record.get("type"), str):  # one item per JSONL line: calls, messages, outputs
            return [record], ()
    return None


class ResponsesReader:
    name: ClassVar[str] = "openai-responses"
    description: ClassVar[str] = "OpenAI Responses API items ({type: function_call|mcp_call, name, arguments})"

    @staticmethod
    def detect(record: Any) -> bool:
        found = _response_items(record)
        return found is not None and any(isinstance(i, dict) and i.get("type") in _RESPONSE_CALLS
                                         for i in found[0][:200])

    def read(self, record: Any, where: Location) -> Iterator[Item]:
        found = _response_items(record)
        if found is None:
            raise MalformedRecord("not a Responses API item or item list")
        items, pointer = found
        base = where.at(*pointer)
        for i, item in enumerate(items):
            if not isinstance(item, dict) or item.get("type") not in _RESPONSE_CALLS:
                continue  # messages, reasoning, call outputs: not calls
            at = base.at(i) if len(items) > 1 or pointer or isinstance(record, list) else base
            name = item.get("name")
            if not isinstance(name, str) or not name:
                yield Problem(at, f"{item['type']} item has no 'name'")
                continue
            namespace = as_str(item.get("server_label")) or None
            arguments = item.get("arguments", item.get("input"))
            yield ToolCall(name, arguments, at, namespace=namespace,
                           call_id=call_id(item.get("call_id", item.get("id"))))
