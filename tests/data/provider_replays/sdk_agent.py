"""A wrapped agent for the proxy tests: the real anthropic and openai SDKs, configured only by env vars.

Usage: python sdk_agent.py [--out FILE] SCENARIO...   where SCENARIO is
  anthropic-json | anthropic-stream | anthropic-raw-stream | chat-json | chat-stream | chat-raw-stream |
  responses-json | responses-stream | models
Prints one JSON line per scenario: the tool calls the SDK parsed, the stop reason, the text.
"""

from __future__ import annotations

import json
import sys
import warnings

import anthropic
import openai

MESSAGES = [{"role": "user", "content": "What's the weather in Paris? Then delete /srv/app/data.db."}]
A_TOOLS = [
    {"name": "get_weather", "description": "Current weather",
     "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}},
    {"name": "delete_file", "description": "Delete a file",
     "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}},
]
O_TOOLS = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                             "parameters": t["input_schema"]}} for t in A_TOOLS]
R_TOOLS = [{"type": "function", "name": t["name"], "description": t["description"],
            "parameters": t["input_schema"]} for t in A_TOOLS]


def anthropic_message(message: anthropic.types.Message) -> dict[str, object]:
    return {"calls": [[b.name, b.input] for b in message.content if b.type == "tool_use"],
            "stop": message.stop_reason,
            "text": "".join(b.text for b in message.content if b.type == "text"),
            "blocks": [b.type for b in message.content]}


def chat_message(completion: object) -> dict[str, object]:
    choice = completion.choices[0]  # type: ignore[attr-defined]
    calls = choice.message.tool_calls or []
    return {"calls": [[c.function.name, json.loads(c.function.arguments)] for c in calls],
            "stop": choice.finish_reason, "text": choice.message.content or ""}


def response_items(response: object) -> dict[str, object]:
    output = response.output  # type: ignore[attr-defined]
    return {"calls": [[i.name, json.loads(i.arguments)] for i in output if i.type == "function_call"],
            "stop": response.status,  # type: ignore[attr-defined]
            "text": response.output_text,  # type: ignore[attr-defined]
            "items": [i.type for i in output]}


def run(scenario: str) -> dict[str, object]:
    a = anthropic.Anthropic(max_retries=0)
    o = openai.OpenAI(max_retries=0)
    args = {"model": "claude-sonnet-4-5", "max_tokens": 512, "messages": MESSAGES, "tools": A_TOOLS}
    if scenario == "anthropic-json":
        return anthropic_message(a.messages.create(**args))
    if scenario == "anthropic-stream":
        with a.messages.stream(**args) as stream:
            text = "".join(stream.text_stream)
            out = anthropic_message(stream.get_final_message())
            out["streamed_text"] = text
            return out
    if scenario == "anthropic-raw-stream":
        calls, stop, text = [], None, ""
        for event in a.messages.create(**args, stream=True):
            if event.type == "content_block_start" and event.content_block.type == "tool_use":
                calls.append([event.content_block.name, None])
            elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                text += event.delta.text
            elif event.type == "message_delta":
                stop = event.delta.stop_reason
        return {"calls": calls, "stop": stop, "text": text}
    chat = {"model": "gpt-4o", "messages": MESSAGES, "tools": O_TOOLS}
    if scenario == "chat-json":
        return chat_message(o.chat.completions.create(**chat))
    if scenario == "chat-stream":
        with o.chat.completions.stream(**chat) as stream:
            for _ in stream:
                pass
            return chat_message(stream.get_final_completion())
    if scenario == "chat-raw-stream":
        names, stop, text = [], None, ""
        for chunk in o.chat.completions.create(**chat, stream=True, stream_options={"include_usage": True}):
            for choice in chunk.choices:
                text += choice.delta.content or ""
                names += [tc.function.name for tc in choice.delta.tool_calls or [] if tc.function.name]
                stop = choice.finish_reason or stop
        return {"calls": [[n, None] for n in names], "stop": stop, "text": text}
    resp = {"model": "gpt-4.1", "input": MESSAGES, "tools": R_TOOLS}
    if scenario == "responses-json":
        return response_items(o.responses.create(**resp))
    if scenario == "responses-stream":
        with o.responses.stream(**resp) as stream:
            types = [event.type for event in stream]
            out = response_items(stream.get_final_response())
            out["events"] = len(types)
            return out
    if scenario == "models":
        return {"models": [m.id for m in o.models.list()]}
    raise SystemExit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    warnings.simplefilter("ignore", DeprecationWarning)  # model-name deprecations: not what is tested
    args = sys.argv[1:]
    out = sys.stdout
    if args[:1] == ["--out"]:
        out = open(args[1], "w")  # noqa: SIM115 - kept open for the whole run
        args = args[2:]
    for name in args:
        print(json.dumps({"scenario": name, **run(name)}), file=out, flush=True)
