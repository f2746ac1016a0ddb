"""Approval handlers against real things: a pseudo-terminal, an HTTP server on a free port, ask()'s rules."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from aegis_cli import Action, Policy
from aegis_cli.approvals import (
    ApprovalAnswer,
    CLIApprovalHandler,
    DenyAllApprovalHandler,
    WebhookApprovalHandler,
    ask,
)
from aegis_cli.approvals.base import DEFAULT_TIMEOUT, handler_timeout

REPO = Path(__file__).resolve().parents[1]
ACTION = Action("write", "salesforce", {"amount": 5000, "account": "ACME"}, agent="sales-bot")
POLICY = Policy.from_string("""
version: "1"
rules:
  - name: crm-writes
    match: {type: write, target: salesforce}
    risk_level: high
    approval: approve
    reason: CRM writes need a human
""")
DECISION = POLICY.evaluate(ACTION)


# -- ask(): the rules every handler gets for free ----------------------------------------------------


class Slow:
    def __init__(self, timeout: Any) -> None:
        self.timeout = timeout
        self.cancel_args: tuple[Any, ...] | None = None

    async def request(self, action: Action, decision: Any, *, decision_id: int | None) -> ApprovalAnswer:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError as exc:
            self.cancel_args = exc.args
            raise
        return ApprovalAnswer.approve("x")


def test_ask_times_out_and_tells_the_handler_why() -> None:
    handler = Slow(0.1)
    answer = asyncio.run(ask(handler, ACTION, DECISION, decision_id=1))
    assert not answer.approved and answer.status == "timed_out" and "0.1s" in answer.note
    from aegis_cli.approvals.base import TIMEOUT_CANCEL_MSG

    assert handler.cancel_args == (TIMEOUT_CANCEL_MSG,)


def test_ask_turns_bad_handlers_into_denials() -> None:
    class Raises:
        timeout = 1.0

        async def request(self, *a: Any, **k: Any) -> ApprovalAnswer:
            raise KeyError("nope")

    class ReturnsTrue:
        timeout = 1.0

        async def request(self, *a: Any, **k: Any) -> Any:
            return True  # "approved", supposedly: not an ApprovalAnswer, so no

    class NotAsync:
        timeout = 1.0

        def request(self, *a: Any, **k: Any) -> ApprovalAnswer:
            return ApprovalAnswer.approve("x")

    for handler, status in ((Raises(), "error"), (ReturnsTrue(), "error"), (NotAsync(), "error"),
                            (None, "denied"), (DenyAllApprovalHandler(), "denied")):
        answer = asyncio.run(ask(handler, ACTION, DECISION))  # type: ignore[arg-type]
        assert not answer.approved and answer.status == status, (handler, answer)


def test_answers_cannot_contradict_themselves() -> None:
    with pytest.raises(ValueError, match="contradicts"):
        ApprovalAnswer(True, "denied")
    with pytest.raises(ValueError, match="status"):
        ApprovalAnswer(False, "maybe")


def test_a_handler_without_a_usable_timeout_gets_the_default() -> None:
    assert handler_timeout(Slow(None)) == DEFAULT_TIMEOUT
    assert handler_timeout(Slow(float("inf"))) == DEFAULT_TIMEOUT
    assert handler_timeout(Slow(-1)) == DEFAULT_TIMEOUT
    assert handler_timeout(Slow(2)) == 2.0


# -- the terminal ------------------------------------------------------------------------------------


class Terminal:
    """The person at a pseudo-terminal: reads what is shown, types when the prompt appears."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        self.screen = b""
        self._stop = threading.Event()

    def answer_when_prompted(self, text: str, prompt: bytes = b"Approve?") -> threading.Thread:
        def run() -> None:
            while not self._stop.is_set() and prompt not in self.screen:
                self.screen += _read_some(self.master)
            if not self._stop.is_set():
                os.write(self.master, text.encode())
            seen = len(self.screen)
            deadline = time.monotonic() + 2  # collect what is shown in reply to the answer
            while time.monotonic() < deadline and not self._stop.is_set():
                self.screen += _read_some(self.master)
                if any(r in self.screen[seen:] for r in (b"approved\r\n", b"denied\r\n", b"Please answer")):
                    break

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._stop.set()
        os.close(self.master)
        os.close(self.slave)


def _read_some(fd: int) -> bytes:
    import select

    ready, _, _ = select.select([fd], [], [], 0.05)
    if not ready:
        return b""
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""


@pytest.fixture
def terminal() -> Any:
    t = Terminal()
    yield t
    t.close()


def test_cli_handler_approves_on_y(terminal: Terminal) -> None:
    handler = CLIApprovalHandler(timeout=10, tty=terminal.path, approver="alice")
    typist = terminal.answer_when_prompted("y looks fine\n")
    answer = asyncio.run(ask(handler, ACTION, DECISION, decision_id=42))
    typist.join(5)
    assert answer.approved and answer.status == "approved" and answer.by == "alice" and answer.note == "looks fine"
    screen = terminal.screen.decode()
    for shown in ("write on salesforce", "sales-bot", "HIGH", "crm-writes", "CRM writes need a human",
                  "decision #42", '"amount": 5000'):
        assert shown in screen, shown


def test_cli_handler_denies_on_n_and_on_enter(terminal: Terminal) -> None:
    handler = CLIApprovalHandler(timeout=10, tty=terminal.path, approver="bob")
    typist = terminal.answer_when_prompted("n\n")
    answer = asyncio.run(ask(handler, ACTION, DECISION))
    typist.join(5)
    assert not answer.approved and answer.status == "denied" and answer.by == "bob"
    terminal.screen = b""
    typist = terminal.answer_when_prompted("\n")
    answer = asyncio.run(ask(handler, ACTION, DECISION))
    typist.join(5)
    assert answer.status == "denied"


def test_cli_handler_asks_again_on_nonsense_and_ignores_typeahead(terminal: Terminal) -> None:
    os.write(terminal.master, b"y\n")  # typed before any question was asked: must not approve
    handler = CLIApprovalHandler(timeout=10, tty=terminal.path)
    typist = terminal.answer_when_prompted("maybe\n")
    result: list[ApprovalAnswer] = []
    runner = threading.Thread(target=lambda: result.append(asyncio.run(ask(handler, ACTION, DECISION))))
    runner.start()
    typist.join(5)
    terminal.answer_when_prompted("no\n", prompt=b"Please answer y or n").join(5)
    runner.join(10)
    assert result and result[0].status == "denied"


def test_cli_handler_times_out(terminal: Terminal) -> None:
    handler = CLIApprovalHandler(timeout=0.3, tty=terminal.path)
    answer = asyncio.run(ask(handler, ACTION, DECISION))
    assert answer.status == "timed_out"
    time.sleep(0.05)
    terminal.screen += _read_some(terminal.master) + _read_some(terminal.master)
    assert b"no answer in time: denied" in terminal.screen


def test_cli_handler_without_a_terminal_denies() -> None:
    answer = asyncio.run(ask(CLIApprovalHandler(timeout=1, tty="/nonexistent/tty"), ACTION, DECISION))
    assert answer.status == "error" and "cannot open the terminal /nonexistent/tty" in answer.note


AGENT = textwrap.dedent("""
    import json, sys
    from aegis_cli import Action, Policy, Runtime
    from aegis_cli.approvals import CLIApprovalHandler
    policy = Policy.from_string('''
    version: "1"
    defaults: {risk_level: high, approval: approve, reason: needs a human}
    ''')
    data = json.load(sys.stdin)  # stdin is a pipe
    runtime = Runtime(lambda a: "sent to " + a.target, policy, approval_handler=CLIApprovalHandler(timeout=20))
    result = runtime.run_one_sync(Action.from_dict(data))
    json.dump({"status": result.status.value, "value": result.value, "by": result.approval.by}, sys.stdout)
""")


def test_cli_handler_uses_the_controlling_terminal_when_stdio_are_pipes(terminal: Terminal) -> None:
    def make_controlling_terminal() -> None:  # in the child: new session, the pty becomes its /dev/tty
        os.close(os.open(terminal.path, os.O_RDWR))

    proc = subprocess.Popen([sys.executable, "-c", AGENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO, start_new_session=True,
                            preexec_fn=make_controlling_terminal)
    typist = terminal.answer_when_prompted("y\n")
    out, err = proc.communicate(json.dumps({"type": "send", "target": "email"}).encode(), timeout=30)
    typist.join(5)
    assert proc.returncode == 0, err.decode()
    reply = json.loads(out)
    assert reply["status"] == "ok" and reply["value"] == "sent to email"
    assert reply["by"]  # the login name (or "tty")
    assert b"send on email" in terminal.screen and b"Approve?" not in out


# -- webhooks ----------------------------------------------------------------------------------------


class Hook:
    """A real HTTP endpoint on a free port: the team's chat bot, more or less."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.posts: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.polls = 0
        self.callback_result: list[Any] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["content-length"])))
                hook.posts.append(payload)
                hook.headers.append({k.lower(): v for k, v in self.headers.items()})
                if hook.mode == "immediate":
                    self._send(200, {"approved": True, "by": "bot", "note": "auto-approved by the bot"})
                elif hook.mode == "broken":
                    self._send(500, {"error": "oops"})
                elif hook.mode == "callback":
                    self._send(200, b"ok")  # what Slack answers
                    threading.Thread(target=hook._answer_later, args=(payload["callback_url"],)).start()
                else:
                    self._send(200, {"status": "pending"})

            def do_GET(self) -> None:
                hook.polls += 1
                if hook.polls < 3:
                    self._send(200, {"status": "pending"})
                else:
                    self._send(200, {"status": "approved", "by": "dave", "note": f"poll {hook.polls}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _answer_later(self, callback_url: str) -> None:
        time.sleep(0.2)
        token_wrong = callback_url.rsplit("/", 1)[0] + "/not-the-token"
        self.callback_result.append(httpx.post(token_wrong, json={"approved": True}).status_code)
        self.callback_result.append(httpx.post(callback_url, json={"approved": False, "by": "carol",
                                                                  "note": "not on a Friday"}).status_code)
        try:
            self.callback_result.append(httpx.post(callback_url, json={"approved": True}).status_code)
        except httpx.ConnectError:
            self.callback_result.append("closed")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook(request: pytest.FixtureRequest) -> Any:
    h = Hook(request.param)
    yield h
    h.close()


@pytest.mark.parametrize("hook", ["poll"], indirect=True)
def test_webhook_polls_the_status_url(hook: Hook) -> None:
    handler = WebhookApprovalHandler(hook.url + "/hook", status_url=hook.url + "/status/{id}",
                                     poll_interval=0.05, timeout=10, secret="s3cret")
    answer = asyncio.run(ask(handler, ACTION, DECISION, decision_id=7))
    assert answer.approved and answer.by == "dave" and answer.note == "poll 3"
    (payload,) = hook.posts
    assert payload["action"]["target"] == "salesforce" and payload["decision"]["rule"] == "crm-writes"
    assert payload["decision_id"] == 7 and payload["status_url"].endswith("/status/" + payload["id"])
    assert "*aegis: approval needed*" in payload["text"] and "`write` on `salesforce`" in payload["text"]
    import hashlib
    import hmac

    body = json.dumps(payload, ensure_ascii=False).encode()
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hook.headers[0]["x-aegis-signature"] == expected


@pytest.mark.parametrize("hook", ["callback"], indirect=True)
def test_webhook_takes_the_answer_on_a_callback(hook: Hook) -> None:
    handler = WebhookApprovalHandler(hook.url + "/hook", callback=True, timeout=10)
    answer = asyncio.run(ask(handler, ACTION, DECISION))
    assert not answer.approved and answer.status == "denied"
    assert answer.by == "carol" and answer.note == "not on a Friday"
    deadline = time.monotonic() + 10  # the hook's third try (answering again) may still be on its way
    while len(hook.callback_result) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    # wrong token: 404; the answer: 200; answering again: 404, or refused once the listener has closed
    assert hook.callback_result[:2] == [404, 200] and hook.callback_result[2] in (404, "closed")
    assert handler._server is None  # the listener is closed once nothing waits


@pytest.mark.parametrize("hook", ["immediate"], indirect=True)
def test_webhook_accepts_an_answer_in_the_post_response(hook: Hook) -> None:
    answer = asyncio.run(ask(WebhookApprovalHandler(hook.url + "/hook"), ACTION, DECISION))
    assert answer.approved and answer.by == "bot"


@pytest.mark.parametrize("hook", ["broken"], indirect=True)
def test_webhook_errors_and_silence_deny(hook: Hook) -> None:
    answer = asyncio.run(ask(WebhookApprovalHandler(hook.url + "/hook", timeout=5), ACTION, DECISION))
    assert answer.status == "error" and "HTTP 500" in answer.note
    hook.mode = "poll"
    answer = asyncio.run(ask(WebhookApprovalHandler(hook.url + "/hook", timeout=5), ACTION, DECISION))
    assert answer.status == "error" and "neither a callback nor a status URL" in answer.note
    hook.mode = "callback-never"  # accepted, then nobody answers
    handler = WebhookApprovalHandler(hook.url + "/hook", callback=True, timeout=0.3)
    answer = asyncio.run(ask(handler, ACTION, DECISION))
    assert answer.status == "timed_out" and handler._server is None


def test_webhook_without_httpx_names_the_extra_in_one_line() -> None:
    """The core install has no httpx: importing the handler says which extra brings it."""
    probe = ("import sys; sys.modules['httpx'] = None\n"
             "try:\n    from aegis_cli.approvals import WebhookApprovalHandler\n"
             "except ImportError as exc:\n    print(exc)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (
        0, "WebhookApprovalHandler needs httpx: pip install 'aegis-cli[runtime]'\n", "")
