"""CrewAI adapter against the real crewai package, in CrewAI's own agent loop (Agent, Task, Crew.kickoff).

The crew's LLM is CrewAI's native OpenAI client pointed at a stand-in Chat Completions server on
127.0.0.1 that asks for one tool call, then answers with text once it sees the tool's result.

crewai pins openai<3, mcp<2 and pydantic<2.13, which the rest of the test extra cannot share, so it
lives in its own virtualenv (``.ci/venvs/crewai``, made by ``.ci/setup`` with the system packages
visible). Where crewai is not importable, the last test runs this file with that venv's Python.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.adapter_kit import Approver, decisions, outcome, runtime, verify
from tests.model_standins import StandIn

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".ci" / "venvs" / "crewai" / "bin" / "python"
QUIET = {"CREWAI_DISABLE_TELEMETRY": "true", "OTEL_SDK_DISABLED": "true", "CREWAI_TRACING_ENABLED": "false",
         "CREWAI_DISABLE_TRACKING": "true"}

try:
    os.environ.update(QUIET)  # before crewai is imported: it reads them at import time
    import crewai  # noqa: F401

    HAVE_CREWAI = True
except ImportError:
    HAVE_CREWAI = False

needs_crewai = pytest.mark.skipif(not HAVE_CREWAI, reason="crewai is not installed in this environment")
pytestmark = pytest.mark.timeout(90)
CALLS: list[tuple[str, Any]] = []
NEXT_CALL: list[tuple[str, dict[str, Any]]] = []

if HAVE_CREWAI:
    from crewai import LLM, Agent, Crew, Task
    from crewai.tools import BaseTool, tool
    from crewai.tools.base_tool import Tool
    from crewai.tools.tool_failure import ToolFailure

    from aegis_cli.adapters.crewai import govern

    @tool("read_file")
    def read_file(path: str) -> str:
        """Read a text file."""
        CALLS.append(("read_file", path))
        return f"contents of {path}"

    @tool("delete_file")
    def delete_file(path: str) -> str:
        """Delete a file."""
        CALLS.append(("delete_file", path))
        return f"deleted {path}"

    @tool("send_email")
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        CALLS.append(("send_email", to))
        return f"sent to {to}"

    @tool("fetch_page")
    async def fetch_page(url: str) -> str:
        """Fetch a web page."""
        CALLS.append(("fetch_page", url))
        return f"<html>{url}</html>"

    class Shout(BaseTool):
        name: str = "shout"
        description: str = "Upper-case a text."

        def _run(self, text: str) -> str:
            CALLS.append(("shout", text))
            return text.upper()

    TOOLS = [read_file, delete_file, send_email, fetch_page, Shout()]


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


@pytest.fixture(scope="module")
def api() -> Any:
    with StandIn(lambda api, body: NEXT_CALL[0]) as server:
        yield server


def kickoff(api: StandIn, tools: list[Any], call: tuple[str, dict[str, Any]]) -> tuple[str, list[Any], str]:
    """One task through CrewAI's agent loop: (final answer, the task's tool failures, what the tool said)."""
    NEXT_CALL[:] = [call]
    before = len(api.posts())
    llm = LLM(model="openai/gpt-standin", base_url=api.url + "/v1", api_key="sk-test")
    agent = Agent(role="clerk", goal="handle files", backstory="a careful clerk", tools=tools, llm=llm)
    task = Task(description="do what is asked", expected_output="done", agent=agent)
    result = Crew(agents=[agent], tasks=[task]).kickoff()
    posts = api.posts()[before:]
    assert len(posts) == 2  # the tool call, then the answer after the tool result
    (tool_message,) = [m for m in posts[1].body["messages"] if m.get("role") == "tool"]
    return str(result), result.tasks_output[0].tool_failures, tool_message["content"]


@needs_crewai
def test_governed_tools_look_the_same_to_the_agent(tmp_path: Path) -> None:
    rt, _ = runtime(tmp_path)
    governed = govern(TOOLS, rt)
    for original, copy in zip(TOOLS, governed, strict=True):
        assert isinstance(copy, type(original)) and copy is not original
        assert (copy.name, copy.description) == (original.name, original.description)
        assert copy.args_schema.model_json_schema() == original.args_schema.model_json_schema()
    assert isinstance(governed[0], Tool)
    with pytest.raises(ValueError, match="already governed"):
        govern(governed, rt)
    with pytest.raises(TypeError, match="CrewAI tools"):
        govern([len], rt)


@needs_crewai
def test_crew_runs_allowed_and_refuses_blocked(api: StandIn, tmp_path: Path) -> None:
    rt, db = runtime(tmp_path)
    tools = govern(TOOLS, rt)
    answer, failures, said = kickoff(api, tools, ("read_file", {"path": "notes.txt"}))
    assert answer == "Finished." and not failures and said == "contents of notes.txt"
    _, failures, said = kickoff(api, tools, ("shout", {"text": "hi"}))
    assert said == "HI" and not failures

    _, failures, said = kickoff(api, tools, ("delete_file", {"path": "/etc/passwd"}))
    assert "no-deletes" in said and "deleting files is never automated" in said
    (failure,) = failures
    assert failure.failure.code == "aegis_blocked" and failure.failure.details["rule"] == "no-deletes"
    assert CALLS == [("read_file", "notes.txt"), ("shout", "hi")]  # the delete never reached the tool

    made = decisions(db)
    assert [(d["action"]["type"], outcome(db, d)) for d in made] == [
        ("read_file", "ok"), ("shout", "ok"), ("delete_file", "blocked")]
    assert made[0]["action"]["params"] == {"path": "notes.txt"}
    assert [d["origin"] for d in made] == [{"via": "crewai", "tool": n} for n in ("read_file", "shout", "delete_file")]
    verify(db)


@needs_crewai
def test_direct_calls_sync_and_async(tmp_path: Path) -> None:
    rt, db = runtime(tmp_path)
    read, delete, _send, fetch, shout = govern(TOOLS, rt)
    assert read.run(path="a") == "contents of a"
    assert shout.run(text="b") == "B"
    assert asyncio.run(fetch.arun(url="http://127.0.0.1/")) == "<html>http://127.0.0.1/</html>"
    assert fetch.run(url="c") == "<html>c</html>"  # CrewAI runs an async tool's coroutine for run()
    refused = delete.run(path="d")
    assert isinstance(refused, ToolFailure) and "rule 'no-deletes'" in refused.message
    assert CALLS == [("read_file", "a"), ("shout", "b"), ("fetch_page", "http://127.0.0.1/"), ("fetch_page", "c")]
    assert [outcome(db, d) for d in decisions(db)] == ["ok", "ok", "ok", "ok", "blocked"]
    verify(db)


@needs_crewai
def test_tool_errors_stay_the_tools_own(tmp_path: Path) -> None:
    @tool("broken")
    def broken(path: str) -> str:
        """Always fails."""
        raise OSError(f"cannot open {path}")

    rt, db = runtime(tmp_path)
    (governed,) = govern([broken], rt)
    with pytest.raises(OSError, match="cannot open x"):
        governed.run(path="x")
    assert [outcome(db, d) for d in decisions(db)] == ["error"]
    verify(db)


@needs_crewai
def test_approval_waits_for_the_person_and_timeout_denies(api: StandIn, tmp_path: Path) -> None:
    rt, db = runtime(tmp_path)
    with Approver(db, approve=True, delay=0.3) as person:
        _, failures, said = kickoff(api, govern(TOOLS, rt), ("send_email", {"to": "bob@example.com", "body": "hi"}))
    assert person.answered and said == "sent to bob@example.com" and not failures
    assert CALLS == [("send_email", "bob@example.com")]
    (d,) = decisions(db)
    assert (d["action"]["type"], d["action"]["target"], outcome(db, d)) == ("send", "email", "ok")
    verify(db)

    (tmp_path / "late").mkdir()
    rt, db = runtime(tmp_path / "late", timeout=0.3)  # nobody answers
    _, failures, said = kickoff(api, govern(TOOLS, rt), ("send_email", {"to": "eve@example.com", "body": "x"}))
    assert "email-needs-a-human" in said and "no answer" in said
    assert failures[0].failure.code == "aegis_denied"
    assert CALLS == [("send_email", "bob@example.com")]
    assert [outcome(db, d) for d in decisions(db)] == ["timed_out"]
    verify(db)


@pytest.mark.skipif(HAVE_CREWAI or not VENV_PYTHON.exists(),
                    reason="crewai is importable here, or there is no .ci/venvs/crewai (made by .ci/setup)")
@pytest.mark.timeout(600)
def test_crewai_suite_in_its_own_environment() -> None:
    env = {**os.environ, **QUIET}
    out = subprocess.run([str(VENV_PYTHON), "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                          "-p", "no:warnings", str(Path(__file__).relative_to(ROOT))],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    tail = (out.stdout + out.stderr)[-4000:]
    assert out.returncode == 0, tail
    # everything ran there except this very test (crewai is importable there)
    assert re.search(r"^(\d+) passed, 1 skipped in ", out.stdout.splitlines()[-1]), tail
    assert int(out.stdout.splitlines()[-1].split()[0]) >= 6, tail


def test_missing_framework_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from aegis_cli.adapters import crewai as adapter

    monkeypatch.setitem(sys.modules, "crewai.tools", None)
    rt, _ = runtime(tmp_path)
    with pytest.raises(ImportError, match=r"aegis-cli\[crewai\]"):
        adapter.govern([], rt)
