"""wrap: put the policy in the path of tool calls made by agents and MCP servers you did not write."""

from __future__ import annotations

from enum import Enum
from typing import Any

import typer

from aegis_cli.cli._common import (
    audit_db_option,
    fail,
    load_policy,
    policy_option,
    split_policy_paths,
)


class Approvals(str, Enum):
    queue = "queue"
    tty = "tty"
    deny = "deny"


def wrap(
    command: list[str] | None = typer.Argument(None, metavar="-- COMMAND [ARGS]...",
                                               help="The MCP server (with --mcp) or agent to run."),
    policy: list[str] = policy_option(),
    mcp: bool = typer.Option(False, "--mcp", help="COMMAND is a stdio MCP server: relay JSON-RPC and "
                             "decide every tools/call (use in an MCP host's config in place of the server)."),
    target: str | None = typer.Option(None, "--target", help="Action target for the server's tools "
                                      "(default: the server's serverInfo.name)."),
    audit_db: str = audit_db_option(),
    approval_timeout: float = typer.Option(120.0, "--approval-timeout", min=0.001,
                                           help="Seconds to wait for an approval; no answer = denied."),
    approvals: Approvals = typer.Option(Approvals.queue, "--approvals", help="How calls that need approval "
                                        "are asked when the MCP host cannot be asked itself: queue (answer with "
                                        "'aegis approvals' or the serve page), tty (/dev/tty), deny."),
    elicitation: bool = typer.Option(True, "--elicitation/--no-elicitation", help="Ask through the MCP host "
                                     "(elicitation) when it declares that capability."),
    hide_blocked: bool = typer.Option(False, "--hide-blocked", help="Drop tools the policy blocks whatever "
                                      "their arguments from tools/list."),
    record_trace: str | None = typer.Option(None, "--record-trace", metavar="FILE",
                                            help="Append the JSON-RPC exchange as JSONL (simulate reads it)."),
    url: str | None = typer.Option(None, "--url", help="With --mcp: a remote MCP server (Streamable HTTP, or "
                                   "HTTP+SSE) to relay to instead of COMMAND."),
    header: list[str] = typer.Option([], "--header", metavar="'NAME: VALUE'", help="With --url: a header for "
                                     "every request to the server; ${VAR} is read from the environment."),
    listen: str | None = typer.Option(None, "--listen", metavar="HOST:PORT", help="With --mcp: serve "
                                      "Streamable HTTP at http://HOST:PORT/mcp for hosts that connect by URL."),
    host_oauth: bool = typer.Option(False, "--host-oauth", help="With --listen --url: hosts authorize with the "
                                    "server themselves (its 401s and OAuth discovery passed through); by "
                                    "default aegis does, for hosts that send no Authorization."),
) -> None:
    """Run COMMAND with every tool call decided by the policy, audited, and held for a human when it says so.

    aegis exits with COMMAND's exit status.
    """
    command = list(command or [])
    if url is not None and command:
        fail("give either --url or a COMMAND, not both")
    if not command and not (mcp and url is not None):
        fail("no command given: aegis wrap -p POLICY [--mcp] -- COMMAND [ARGS]... (or --mcp --url URL)")
    if header and url is None:
        fail("--header only applies with --url")
    if host_oauth and (url is None or listen is None):
        fail("--host-oauth only applies with --listen and --url")
    if not mcp:
        mcp_only = [flag for flag, used in (("--target", target is not None), ("--hide-blocked", hide_blocked),
                                            ("--record-trace", record_trace is not None),
                                            ("--no-elicitation", not elicitation), ("--url", url is not None),
                                            ("--listen", listen is not None)) if used]
        if mcp_only:  # silently ignoring them would promise protection that is not there
            fail(f"{', '.join(mcp_only)} only apply with --mcp")
        _wrap_agent(command, policy, audit_db, approval_timeout, approvals)
    if listen is not None:  # mcp_listen shares serve's guard and tokens (which import starlette)
        _need(("starlette",), "--listen")
    loaded = load_policy(policy)
    from aegis_cli.wrap.mcp import McpWrapOptions, McpWrapper, RefuseApprovals, loop_factory

    make_server = _server_link(url, header, host_oauth) if url is not None else None

    def open_audit() -> object:
        from aegis_cli.audit.trail import open_audit as open_trail

        return open_trail(audit_db, redact=loaded.redact)

    opts = McpWrapOptions(loaded, list(command), open_audit=open_audit, approval_timeout=approval_timeout,
                          target=target, elicitation=elicitation, hide_blocked=hide_blocked,
                          record_trace=record_trace)
    import asyncio

    async def main() -> int:
        wrapper = McpWrapper(opts, make_server() if make_server is not None else None)
        try:
            await wrapper.open_audit()
        except Exception as exc:
            fail(f"cannot open the audit trail {audit_db}: {exc}")
        # The queue lives in the audit database, so it is opened once the database is known good.
        handler, opts.handler_records_answers = _handler(approvals, audit_db, approval_timeout,
                                                         command or [url or "mcp"], loaded.redact)
        opts.approval_handler = handler if handler is not None else RefuseApprovals()
        if listen is not None:
            from aegis_cli.wrap.mcp_listen import serve_mcp

            try:
                return await serve_mcp(wrapper, listen, make_server, host_oauth)
            except ValueError as exc:  # a bad address, a non-loopback one with no token
                fail(str(exc))
        return await wrapper.run()

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            code = runner.run(main())
    except (FileNotFoundError, PermissionError) as exc:
        fail(f"cannot start {command[0]}: {exc.strerror or exc}", 127 if isinstance(exc, FileNotFoundError) else 126)
    raise typer.Exit(code)


def _server_link(url: str, headers: list[str], host_oauth: bool) -> Any:
    """A factory of links to the remote server at ``url`` (one per session with --listen, all sharing
    one OAuth token)."""
    from aegis_cli.wrap.mcp_http import HeaderError, HttpServer, parse_header

    if not url.startswith(("http://", "https://")):
        fail(f"--url must be an http:// or https:// URL, not {url!r}")
    try:
        parsed = dict(parse_header(h) for h in headers)
    except HeaderError as exc:
        fail(str(exc))
    try:
        import httpx  # noqa: F401
    except ImportError:
        fail("--url needs httpx: pip install 'aegis-cli[wrap]'")
    from aegis_cli.wrap.http_proxy import proxy_for

    try:
        proxy = proxy_for(url)  # the same choice each session makes when it starts: a proxy it cannot use fails now
    except ValueError as exc:
        fail(f"--url: {exc}")
    if proxy is not None and proxy.socks:
        try:  # what httpx (the GET stream, OAuth) needs to reach the server through SOCKS too
            import socksio  # noqa: F401
        except ImportError:
            fail(f"--url through {proxy.named} needs socksio: pip install 'aegis-cli[wrap]'")
    oauth = None
    if not host_oauth and not any(name.lower() == "authorization" for name in parsed):
        # aegis authorizes itself when the server asks (401); with --host-oauth the host does.
        from aegis_cli.wrap.mcp_oauth import OAuthBearer

        oauth = OAuthBearer(url)
    return lambda **kw: HttpServer(url, parsed, oauth=oauth, **kw)


def _handler(kind: Approvals, audit_db: str, timeout: float, command: list[str],
             redact: tuple[str, ...] = ()) -> tuple[object | None, bool]:
    """The approval handler for --approvals, and whether it audits its own answers.

    The queue stores the request's action in the audit database, so it redacts as the audit trail does.
    """
    if kind is Approvals.deny:
        return None, False
    if kind is Approvals.tty:
        from aegis_cli.approvals import CLIApprovalHandler

        return CLIApprovalHandler(timeout), False
    try:
        from aegis_cli.approvals import QueueApprovalHandler

        return QueueApprovalHandler(audit_db, timeout=timeout, requested_by="aegis wrap " + command[0],
                                    redact=redact), True
    except ImportError as exc:
        fail(f"the approval queue is not available ({exc}); use --approvals tty or deny")


def _need(modules: tuple[str, ...], what: str) -> None:
    """Exit 2 naming the extra when ``what`` needs packages the core install lacks (not a traceback)."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        fail(f"{what} needs {', '.join(missing)}: pip install 'aegis-cli[wrap]'")


def _wrap_agent(command: list[str], policy: list[str] | None, audit_db: str, timeout: float,
                approvals: Approvals) -> None:
    # Without httpx the proxy would start, then answer every compressed reply with a 502.
    _need(("httpx",), "aegis wrap without --mcp")
    paths = split_policy_paths(policy)
    loaded = load_policy(paths)  # exits 2 with located errors
    try:
        from aegis_cli.wrap.model_proxy import run_wrapped_agent
    except ImportError as exc:
        fail(f"aegis wrap without --mcp is not available in this build ({exc})")
    from aegis_cli.engine.errors import AegisError
    from aegis_cli.wrap.codex import CodexRefused

    try:
        code = run_wrapped_agent(policy_paths=paths, command=list(command), audit_db=audit_db,
                                 approval_timeout=timeout, approvals=approvals.value, policy=loaded)
    except (AegisError, CodexRefused) as exc:  # an unusable audit database, an ungovernable Codex: refuse
        fail(str(exc))
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("wrap", context_settings={"allow_interspersed_args": False})(wrap)
