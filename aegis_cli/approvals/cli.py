"""Ask the person at the terminal.

The prompt goes to the controlling terminal (``/dev/tty``), not stdin/stdout, so it works when the
agent's own stdin and stdout are pipes, and an answer can never come from piped data. Input typed
before the prompt appeared is discarded, so a stray ``y`` cannot approve an action nobody has seen.
"""

from __future__ import annotations

import asyncio
import getpass
import io
import json
import os
import termios

from aegis_cli.approvals.base import ApprovalAnswer, ApprovalRequestInfo, is_timeout
from aegis_cli.engine.models import Action, Decision, RiskLevel

_RISK_STYLE = {RiskLevel.LOW: "green", RiskLevel.MEDIUM: "yellow", RiskLevel.HIGH: "bold red",
               RiskLevel.CRITICAL: "bold white on red"}
_YES = frozenset({"y", "yes"})
_NO = frozenset({"n", "no"})
_MAX_PARAMS = 600  # characters of parameters shown; the audit trail has them all


class CLIApprovalHandler:
    """Prompt on the terminal: shows the action, its risk, the rule and reason; ``y`` approves.

    ``tty`` is the terminal device to use (default ``/dev/tty``, the controlling terminal).
    ``approver`` names who answered in the audit trail (default: the login name). Prompts are shown
    one at a time; the timeout counts from when the request was made, waiting included.
    """

    def __init__(self, timeout: float = 60.0, *, tty: str = "/dev/tty", approver: str | None = None) -> None:
        self.timeout = timeout
        self.tty = tty
        self.approver = approver or _login_name()
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def _prompt_lock(self) -> asyncio.Lock:
        # asyncio.Lock binds to one loop; run_one_sync() makes a new loop per call.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def request(self, action: Action, decision: Decision, *, decision_id: int | None) -> ApprovalAnswer:
        info = ApprovalRequestInfo.build(action, decision, decision_id, self.timeout)
        async with self._prompt_lock():
            try:
                fd = os.open(self.tty, os.O_RDWR | os.O_NOCTTY)
            except OSError as exc:
                raise RuntimeError(f"cannot open the terminal {self.tty}: {exc.strerror or exc}") from None
            try:
                return await self._converse(fd, info)
            except asyncio.CancelledError as exc:
                _write(fd, "\n(no answer in time: denied)\n" if is_timeout(exc) else "\n(cancelled)\n")
                raise
            finally:
                os.close(fd)

    async def _converse(self, fd: int, info: ApprovalRequestInfo) -> ApprovalAnswer:
        if os.isatty(fd):
            termios.tcflush(fd, termios.TCIFLUSH)  # drop anything typed before the question was shown
        _write(fd, render(info, _width(fd)))
        _write(fd, f"Approve? [y/N] (denied automatically in {info.timeout:g}s): ")
        while True:
            line = await _read_line(fd)
            word, _, note = line.strip().partition(" ")
            word = word.lower()
            if word in _YES:
                _write(fd, "approved\n")
                return ApprovalAnswer.approve(self.approver, note.strip())
            if word in _NO or not word:
                _write(fd, "denied\n")
                return ApprovalAnswer.deny(self.approver, note.strip())
            _write(fd, "Please answer y or n (a note may follow, e.g. 'n not on a Friday'): ")


def render(info: ApprovalRequestInfo, width: int = 80) -> str:
    """The request as terminal text (ANSI colour unless NO_COLOR is set)."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    action, decision = info.action, info.decision
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("action", f"{action.type} on {action.target}")
    if action.agent:
        grid.add_row("agent", action.agent)
    if action.params:
        params = json.dumps(action.params, default=str, ensure_ascii=False)
        grid.add_row("params", params if len(params) <= _MAX_PARAMS else params[:_MAX_PARAMS] + " …")
    grid.add_row("risk", f"[{_RISK_STYLE[decision.risk_level]}]{decision.risk_level.value.upper()}[/]")
    grid.add_row("rule", decision.rule or "(policy defaults)")
    if decision.reason:
        grid.add_row("reason", decision.reason)
    title = "aegis: approval needed" + (f" (decision #{info.decision_id})" if info.decision_id is not None else "")
    buf = io.StringIO()
    console = Console(file=buf, width=max(40, min(width, 120)), force_terminal=True,
                      no_color="NO_COLOR" in os.environ, highlight=False)
    console.print(Panel(grid, title=title, title_align="left", expand=False))
    return buf.getvalue()


async def _read_line(fd: int) -> str:
    """One line from ``fd`` without blocking the event loop (and so cancellable)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    chunks: list[bytes] = []
    was_blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 1024)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the terminal hung up
            if not done.done():
                done.set_exception(RuntimeError(f"terminal read failed: {exc.strerror or exc}"))
            return
        if not data:
            if not done.done():
                done.set_exception(RuntimeError("the terminal was closed before an answer was given"))
            return
        chunks.append(data)
        if (b"\n" in data or b"\r" in data) and not done.done():
            text = b"".join(chunks).decode("utf-8", "replace")
            done.set_result(text.replace("\r", "\n").split("\n", 1)[0])

    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)
        os.set_blocking(fd, was_blocking)


def _write(fd: int, text: str) -> None:
    data = text.encode("utf-8", "replace")
    while data:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            continue
        except OSError:
            return  # the terminal went away; the read side reports it
        data = data[n:]


def _width(fd: int) -> int:
    try:
        return os.get_terminal_size(fd).columns or 80
    except OSError:
        return 80


def _login_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "tty"

