"""MCP: ``govern(session, runtime)`` decides every ``call_tool`` of an ``mcp.ClientSession``.

    from aegis_cli.adapters.mcp import govern
    async with ClientSession(read, write) as session:
        govern(session, runtime)
        await session.initialize()
        result = await session.call_tool("write_file", {...})   # decided first

Each call is decided exactly as ``aegis wrap --mcp`` decides it (the same functions in
``aegis_cli.wrap.messages``): type = the tool name, target = the server's name (``serverInfo.name``
from its ``initialize`` answer, or ``target=`` given here), params = the arguments, a policy's
``tools:`` section applied. A call made before the server has said its name is refused, as in
``wrap``: rules on that name could not be applied. A refused call never reaches the server; the
caller gets ``CallToolResult(isError=True)`` whose text names the rule and the reason, the result
an MCP host hands the model when a tool fails. A tool's own error result is passed on as it came,
and audited as an error.

``govern`` patches ``call_tool`` (and ``initialize``, to learn the name) on this session object
and returns it, so no ungoverned handle remains. Works with the SDK's 1.x and 2.x sessions; a 2.x
``mcp.client.Client`` that is connected can be given too (its ``session`` is governed). A 1.x
session does not keep the server's name, so govern it before ``initialize()`` (or pass ``target=``);
a 2.x session can be governed at any time. Every ``call_tool`` argument of either SDK passes through
unchanged for an allowed call, ``progress_callback`` included: the server's progress reaches the
caller while the tool runs. A refused call sends nothing, so no progress comes.

``MCPExecutor`` goes the other way, for ``Runtime(executor=...)``: an allowed action becomes a
``call_tool`` (tool = type, arguments = params). It lives here so the runtime never imports mcp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aegis_cli.adapters import require, source
from aegis_cli.engine.errors import AegisError
from aegis_cli.engine.models import Action
from aegis_cli.wrap import messages as m

if TYPE_CHECKING:  # pragma: no cover
    from aegis_cli.runtime.core import Result, Runtime

VIA = "mcp"
_NAME_IT = "Govern the session before initialize(), or pass govern(session, runtime, target=...) to name it."


@dataclass
class _Server:
    """What the governed session knows of its server."""

    target: str | None  # given to govern(): wins over what the server says
    said: str | None = None  # serverInfo.name from an initialize answer seen by the patched initialize()


def govern(session: Any, runtime: Runtime, *, target: str | None = None) -> Any:
    """Decide every ``session.call_tool`` through ``runtime``; returns ``session`` itself."""
    mcp = require("mcp", "mcp")
    inner = _session_of(session, mcp)
    if inner.__dict__.get("_aegis_runtime") is runtime:
        return session  # governed already: one decision per call, not two
    known: _Server | None = inner.__dict__.get("_aegis_server")  # an MCPExecutor's, made earlier
    server = _Server(target, known.said if known is not None else None)
    call_tool = inner.call_tool
    _note_name(inner, server)

    async def governed_call_tool(name: str, arguments: dict[str, Any] | None = None, *args: Any,
                                 **kwargs: Any) -> Any:
        return await _call(runtime, server, inner, call_tool, name, arguments, args, kwargs)

    inner.__dict__.update(call_tool=governed_call_tool, _aegis_runtime=runtime, _aegis_call_tool=call_tool)
    return session


def _note_name(session: Any, server: _Server) -> None:
    """Patch ``session.initialize`` to note the server's name from its answer: a 1.x session keeps
    only the capabilities, so the answer is the one chance to learn it."""
    initialize = session.initialize

    async def initialize_and_note(*args: Any, **kwargs: Any) -> Any:
        result = await initialize(*args, **kwargs)
        server.said = _name_in(result)
        return result

    session.__dict__.update(initialize=initialize_and_note, _aegis_server=server)


def server_name(session: Any) -> str | None:
    """The name a (governed) session's server goes by: ``target=``, else what the server said."""
    known: _Server | None = session.__dict__.get("_aegis_server")
    if known is not None and known.target:
        return known.target
    # 2.x keeps the server's identity (from initialize or server/discover); 1.x does not, so there
    # only the name noted by the patched initialize() is known
    name = getattr(getattr(session, "server_info", None), "name", None)
    if isinstance(name, str) and name:
        return name
    return known.said if known is not None else None


async def _call(runtime: Runtime, server: _Server, session: Any, call_tool: Any, name: str,
                arguments: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not isinstance(name, str):
        raise TypeError(f"call_tool() needs a tool name (str), not {type(name).__name__}")
    target = server.target or server_name(session)
    if target is None:
        return _unnamed(runtime, name, arguments)
    action = m.tool_call_action(runtime.policy, name, arguments, target)
    result = await runtime.call(action, _run, call_tool, name, arguments, args, kwargs,
                                source=source(VIA, name, server=target))
    if result.ok:
        return result.value
    if isinstance(result.exception, _ToolFailed):
        return result.exception.result  # the tool's own error result, as the server sent it
    if result.ran and isinstance(result.exception, Exception):
        raise result.exception  # the SDK's own error (connection closed, timeout): as without aegis
    return error_result(refusal_for(result, name))


async def _run(call_tool: Any, name: str, arguments: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = await call_tool(name, arguments, *args, **kwargs)
    if _is_error(result):
        raise _ToolFailed(result)  # so the audit trail says the tool failed
    return result


class _ToolFailed(Exception):
    def __init__(self, result: Any) -> None:
        self.result = result
        super().__init__(f"the tool returned an error: {text_of(result)[:300]}")


def refusal_for(result: Result, tool: str) -> str:
    """What the model reads for a refused call: the same texts ``aegis wrap --mcp`` answers with."""
    status = result.status.value
    if status == "blocked":
        return m.refusal_text(result.action, result.decision, tool)
    if status == "denied":
        return m.denial_text(tool, result.decision, result.approval.describe() if result.approval else "no answer")
    if status == "error" and result.exception is not None and result.decision_id is None:
        return m.unaudited_text(tool, result.exception)
    return f"aegis refused tool '{tool}': {result.why}. The call was not run."


def error_result(text: str) -> Any:
    """``CallToolResult(isError=True)`` with one text block, in the installed SDK's own type."""
    import mcp.types as mt

    return mt.CallToolResult.model_validate({"content": [{"type": "text", "text": text}], "isError": True})


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in getattr(result, "content", None) or [])


def _unnamed(runtime: Runtime, tool: str, arguments: Any) -> Any:
    """Refuse a call made before the server said its name, and audit that, as ``wrap`` does."""
    action = m.tool_call_action(runtime.policy, tool, arguments, "?")
    decision = m.unnamed_server_decision(runtime.policy, _NAME_IT)
    if runtime.audit is not None:
        try:
            runtime.audit.record_decision(action, decision, source=source(VIA, tool))
        except Exception as exc:
            return error_result(m.unaudited_text(tool, exc))
    return error_result(m.refusal_text(action, decision, tool))


def _is_error(result: Any) -> bool:
    # 2.x names it is_error, 1.x isError; asking a pydantic model for a name it lacks costs an exception
    flag = getattr(result, "is_error", _ABSENT)
    return bool(getattr(result, "isError", None) if flag is _ABSENT else flag)


_ABSENT = object()


def _name_in(initialize_result: Any) -> str | None:
    info = getattr(initialize_result, "server_info", None) or getattr(initialize_result, "serverInfo", None)
    name = getattr(info, "name", None)
    return name if isinstance(name, str) and name else None


def _session_of(obj: Any, mcp: Any) -> Any:
    if isinstance(obj, mcp.ClientSession):
        return obj
    client_type = getattr(getattr(mcp, "client", None), "Client", None)
    if client_type is not None and isinstance(obj, client_type):
        try:
            return obj.session  # raises until the client is connected
        except Exception as exc:
            raise TypeError(f"govern() needs a connected Client (inside `async with`): {exc}") from None
    raise TypeError(f"govern() takes an mcp.ClientSession, not {type(obj).__name__}")


class MCPToolError(AegisError):
    """A tool called by ``MCPExecutor`` answered with an error result (``.result``)."""

    def __init__(self, result: Any) -> None:
        self.result = result
        super().__init__(f"the tool returned an error: {text_of(result)[:300]}")


class MCPExecutor:
    """An executor that runs each allowed action as ``session.call_tool(action.type, action.params)``.

    Only for actions on this server: a target other than the server's name (or ``target=``) fails
    rather than run a tool on a server the policy did not decide for. A 1.x session does not keep the
    name: make the executor before ``initialize()`` (it notes the name from the answer), or pass
    ``target=``. An error result raises ``MCPToolError`` (the action failed) unless
    ``raise_on_error=False``; the value is the ``CallToolResult``. A governed session's original
    ``call_tool`` is used: the runtime has decided.
    """

    def __init__(self, session: Any, *, target: str | None = None, raise_on_error: bool = True) -> None:
        self.session = _session_of(session, require("mcp", "mcp"))
        self.target = target
        self.raise_on_error = raise_on_error
        if "_aegis_server" not in self.session.__dict__:
            _note_name(self.session, _Server(None))

    async def execute(self, action: Action) -> Any:
        server = self.target or server_name(self.session)
        if server is None:
            raise LookupError("the MCP server's name is not known: call initialize() after making the executor "
                              "(an mcp 1.x session does not keep it), or pass target=")
        if action.target.casefold() != server.casefold():
            raise ValueError(f"action target {action.target!r} is not this MCP server ({server!r}); not run")
        call_tool = self.session.__dict__.get("_aegis_call_tool", self.session.call_tool)
        result = await call_tool(action.type, dict(action.params))
        if self.raise_on_error and _is_error(result):
            raise MCPToolError(result)
        return result


__all__ = ["MCPExecutor", "MCPToolError", "error_result", "govern", "refusal_for", "server_name"]
