"""`aegis wrap` model-API proxy: every spelling of a tool-calling endpoint is decided; replies with tool calls on
paths it does not decide are refused; the child's base URLs; the warning when nothing went through the proxy."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from model_standins import StandIn, shell_call

from aegis_cli.engine.policy import Policy
from aegis_cli.wrap.model_proxy import ModelProxy, Upstreams, run_wrapped_agent
from aegis_cli.wrap.tool_gate import ToolGate

POLICY = """\
version: "1"
defaults: {approval: auto, risk_level: low}
rules:
  - name: no-rm-rf
    match: {type: bash}
    conditions:
      param_matches: {command: "rm\\\\s+-rf"}
    approval: block
    risk_level: critical
    reason: recursive deletes are not allowed
"""
TOOLS = [{"name": "bash", "description": "run", "input_schema": {"type": "object"}}]
OPENAI_TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]
RESPONSES_TOOLS = [{"type": "function", "name": "bash", "parameters": {"type": "object"}}]
CALL_RESPONSE = {"id": "resp_1", "object": "response", "status": "completed", "model": "m", "output": [
    {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "bash",
     "arguments": json.dumps({"command": "rm -rf build"}), "status": "completed"}]}
TOOL_USE_SSE = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message",'
                b'"role":"assistant","model":"m","content":[]}}\n\n'
                b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":'
                b'{"type":"tool_use","id":"toolu_1","name":"bash","input":{"command":"rm -rf build"}}}\n\n')
FIXED = {"/v1/responses/resp_1": ("application/json", json.dumps(CALL_RESPONSE).encode()),
         "/v1/messages/batches": ("text/event-stream", TOOL_USE_SSE),
         "/v1/models": ("application/json", b'{"object": "list", "data": [{"id": "gpt-x", "object": "model"}]}')}


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with StandIn(shell_call("rm -rf build"), FIXED) as api:
        yield api


@pytest.fixture
def gate() -> Iterator[ToolGate]:
    g = ToolGate(Policy.from_string(POLICY), audit_factory=None, approvals=None)
    yield g
    g.close()


def post_raw(url: str, raw_path: str, body: dict[str, Any]) -> httpx.Response:
    """POST to a path exactly as written (httpx would otherwise tidy some spellings)."""
    with httpx.Client() as client:
        request = client.build_request("POST", url, json=body, headers={"x-api-key": "k", "authorization": "Bearer k"})
        request.url = request.url.copy_with(raw_path=raw_path.encode())
        return client.send(request)


ANTHROPIC_SPELLINGS = [
    ("/v1", "/anthropic/messages", "/v1/messages"),  # opencode / the AI SDK: <base ending in /v1>/messages
    ("/v1", "/anthropic/v1/messages", "/v1/messages"),
    ("", "/anthropic/v1/messages", "/v1/messages"),  # the Anthropic SDK
    ("", "/anthropic/messages", "/v1/messages"),  # an AI SDK client without /v1 in its base still works
    ("", "/anthropic/v1//messages", "/v1/messages"),
    ("", "/anthropic//v1/messages", "/v1/messages"),
    ("", "//anthropic/v1/messages/", "/v1/messages"),
    ("", "/anthropic/v1/./x/../messages", "/v1/messages"),
    ("", "/anthropic/v1/%6Dessages", "/v1/messages"),
    ("", "/anthropic/v1/messages%2F", "/v1/messages"),
    ("/gateway", "/anthropic/v1/MESSAGES", "/gateway/v1/MESSAGES"),  # case-blind servers exist
]


@pytest.mark.parametrize(("base_path", "client_path", "upstream_path"), ANTHROPIC_SPELLINGS)
def test_every_spelling_of_messages_is_decided(standin: StandIn, gate: ToolGate, base_path: str, client_path: str,
                                               upstream_path: str) -> None:
    upstreams = Upstreams(standin.url + base_path, standin.url + "/v1")
    with ModelProxy(gate.decide, upstreams) as proxy:
        r = post_raw(proxy.url, client_path, {"model": "m", "max_tokens": 10, "tools": TOOLS,
                                               "messages": [{"role": "user", "content": "clean"}]})
        assert proxy.stats.model_requests == 1
    if upstream_path.endswith("MESSAGES"):  # the stand-in only answers lower case: the reply is its 404
        assert r.status_code == 404
    else:
        assert r.status_code == 200, r.text
        blocks = r.json()["content"]
        assert [b["type"] for b in blocks] == ["text"], blocks
        assert "[aegis] Tool call `bash` was blocked" in blocks[0]["text"] and "no-rm-rf" in blocks[0]["text"]
        assert r.json()["stop_reason"] == "end_turn"
    assert standin.posts()[-1].path == upstream_path


CHAT = {"model": "m", "tools": OPENAI_TOOLS, "messages": [{"role": "user", "content": "x"}]}
RESPONSES = {"model": "m", "tools": RESPONSES_TOOLS, "input": "x"}


@pytest.mark.parametrize(("client_path", "body"), [
    ("/openai/v1//chat/completions", CHAT), ("//openai/v1/chat/completions/", CHAT),
    ("/openai//v1/responses", RESPONSES), ("/openai/v1/%72esponses", RESPONSES),
])
def test_every_spelling_of_openai_endpoints_is_decided(standin: StandIn, gate: ToolGate, client_path: str,
                                                       body: dict[str, Any]) -> None:
    with ModelProxy(gate.decide, Upstreams(standin.url, standin.url + "/v1")) as proxy:
        r = post_raw(proxy.url, client_path, body)
    assert r.status_code == 200, r.text
    assert "[aegis] Tool call `bash` was blocked" in r.text
    assert "tool_calls" not in r.text and "function_call" not in r.text
    assert standin.posts()[-1].path in ("/v1/chat/completions", "/v1/responses")


def test_tool_calls_on_a_path_not_decided_are_refused(standin: StandIn, gate: ToolGate) -> None:
    with ModelProxy(gate.decide, Upstreams(standin.url, standin.url + "/v1")) as proxy:
        r = httpx.get(proxy.url + "/openai/v1/responses/resp_1")  # a stored response, fetched back
        assert r.status_code == 502
        assert r.json()["error"]["message"].startswith("aegis: the reply to /v1/responses/resp_1")
        assert "function_call" in r.json()["error"]["message"] and "rm -rf" not in r.text
        # a stream is cut at the event that carries the call, with an error event the SDK raises on
        r = httpx.post(proxy.url + "/anthropic/v1/messages/batches", json={})
        assert r.status_code == 200
        assert "message_start" in r.text and "rm -rf" not in r.text
        assert "event: error" in r.text and "tool_use" in r.text
        # replies without calls pass unchanged
        r = httpx.get(proxy.url + "/openai/v1/models")
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "gpt-x"
        assert proxy.stats.model_requests == 0


def test_child_base_urls_follow_the_users_convention(gate: ToolGate) -> None:
    with ModelProxy(gate.decide, Upstreams("https://gw.example/v1", "https://api.openai.com/v1")) as proxy:
        env = proxy.child_env()
        assert env["ANTHROPIC_BASE_URL"] == proxy.url + "/anthropic/v1"
        assert env["OPENAI_BASE_URL"] == proxy.url + "/openai/v1"
    with ModelProxy(gate.decide, Upstreams("https://api.anthropic.com", "https://api.openai.com/v1")) as proxy:
        assert proxy.child_env()["ANTHROPIC_BASE_URL"] == proxy.url + "/anthropic"


NOT_GOVERNED = "made no model request through aegis"


def test_warns_when_the_child_made_no_model_request(tmp_path: Path, standin: StandIn,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    policy = Policy.from_string(POLICY)
    upstreams = Upstreams(standin.url, standin.url + "/v1")
    code = run_wrapped_agent([], [sys.executable, "-c", "pass"], tmp_path / "a.db", 1.0, "deny", policy=policy,
                             upstreams=upstreams)
    err = capfd.readouterr().err
    assert code == 0
    assert NOT_GOVERNED in err and "not governed" in err and len(err.strip().splitlines()) == 1
    child = ("import os, httpx; httpx.post(os.environ['ANTHROPIC_BASE_URL'] + '/v1/messages', "
             "json={'model': 'm', 'max_tokens': 1, 'messages': []})")
    code = run_wrapped_agent([], [sys.executable, "-c", child], tmp_path / "a.db", 1.0, "deny", policy=policy,
                             upstreams=upstreams)
    assert code == 0
    assert NOT_GOVERNED not in capfd.readouterr().err
