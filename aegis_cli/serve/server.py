"""Running the server: checks before binding, uvicorn, the policy watcher, a clean drain on exit.

Start-up refuses (``ServeError``, exit 2) rather than run unsafely: a non-loopback address with no
token, an unreadable token file, an audit database that cannot be opened. On SIGTERM or Ctrl-C
uvicorn stops accepting, long polls and event streams are told to finish, in-flight requests are
answered, and only then is the audit writer closed, after committing everything queued.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import ipaddress
import os
import sys
from dataclasses import dataclass
from typing import Any

from aegis_cli.engine.errors import AegisError
from aegis_cli.engine.policy import Policy
from aegis_cli.serve.auth import TOKEN_ENV, TokenConfigError, TokenStore
from aegis_cli.serve.state import PolicyInForce, ServerState
from aegis_cli.serve.writer import AuditWriter

GRACEFUL_SECONDS = 15


class ServeError(AegisError):
    """The server cannot start as asked; the message says why."""


@dataclass
class ServeOptions:
    policy_paths: list[str]
    host: str = "127.0.0.1"
    port: int = 8787
    audit_db: str = "aegis_audit.db"
    tokens_file: str | None = None
    approval_timeout: float = 3600.0
    watch: bool = True
    audit_sync: str = "normal"
    workers: int = 1  # server processes on this host (PostgreSQL only; serve.workers)
    worker: int = 0  # which one this process is, with workers > 1
    metrics_dir: str | None = None  # where workers share their metrics, with workers > 1


def is_loopback_bind(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere


def load_tokens(options: ServeOptions) -> TokenStore:
    """The tokens, checked against the address to listen on; ``ServeError`` if unusable."""
    try:
        tokens = TokenStore.load(os.environ.get(TOKEN_ENV) or None, options.tokens_file)
    except TokenConfigError as exc:
        raise ServeError(str(exc)) from None
    if not tokens.enabled and not is_loopback_bind(options.host):
        raise ServeError(f"refusing to listen on {options.host} without authentication: set ${TOKEN_ENV} or "
                         "pass --tokens FILE (with no token, aegis serve binds loopback only)")
    return tokens


def build_state(options: ServeOptions, policy: Policy) -> ServerState:
    """Everything a server needs, checked; raises ``ServeError`` when it must not start."""
    tokens = load_tokens(options)
    from aegis_cli.audit.trail import open_audit, shown

    writer = AuditWriter(lambda: open_audit(options.audit_db, redact=policy.redact, synchronous=options.audit_sync))
    try:
        writer.start()
    except Exception as exc:
        raise ServeError(f"cannot open audit database {shown(options.audit_db)}: {exc}") from None
    # (WAL checkpoints run off the answers' path: the SQLite logger moves them to a thread of its own.)
    from aegis_cli.audit.approvals import ApprovalQueue
    from aegis_cli.audit.trail import is_postgres

    try:
        approvals = ApprovalQueue(options.audit_db, redact=policy.redact)
    except Exception as exc:
        writer.close()
        raise ServeError(f"cannot open the approval queue in {shown(options.audit_db)}: {exc}") from None
    source = ", ".join(options.policy_paths)
    fleet = None
    if is_postgres(options.audit_db):
        policy, fleet, source = _fleet_policy(options, policy, writer, approvals)
    state = ServerState(PolicyInForce(policy, _dt.datetime.now(_dt.UTC), "startup", source), writer, tokens,
                        options.audit_db, approvals, options.approval_timeout, fleet=fleet)
    state.metrics.share_dir = options.metrics_dir
    return state


def _fleet_policy(options: ServeOptions, policy: Policy, writer: AuditWriter, approvals: Any) -> tuple[Any, ...]:
    """On PostgreSQL: the file's policy or the fleet's, whichever is newer (serve.fleet)."""
    from aegis_cli.audit import Redactor
    from aegis_cli.serve import fleet

    try:
        chosen, state, line = fleet.at_startup(writer, policy, options.policy_paths, options.audit_db)
        if chosen is not policy:
            redactor = Redactor(chosen.redact)

            def redact(log: Any) -> None:
                log.redactor = redactor

            writer.call_sync(redact)
            approvals.redactor = redactor
    except Exception as exc:
        writer.close()
        approvals.close()
        raise ServeError(f"cannot agree on the fleet's policy: {exc}") from None
    sys.stderr.write(f"aegis: {line}\n")
    source = ", ".join(options.policy_paths) if state.origin == "file" else f"fleet policy version {state.version}"
    return chosen, state, source


def serve(options: ServeOptions, policy: Policy) -> None:
    """Run until SIGTERM/SIGINT; raises ``ServeError`` if it cannot start. (``--workers``: serve.workers.)"""
    serve_one(options, policy)


def serve_one(options: ServeOptions, policy: Policy, sockets: list[Any] | None = None) -> None:
    """One server process (``sockets``: already listening, shared with the other workers)."""
    state = build_state(options, policy)
    try:
        _runner()(_serve(options, state, sockets))
    finally:
        state.writer.close()  # commits anything still queued before the process exits


def _runner() -> Any:
    try:
        import uvloop  # faster, when installed (uvicorn[standard])

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None

    def run(coro: Any) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(coro)

    return run


async def _serve(options: ServeOptions, state: ServerState, sockets: list[Any] | None = None) -> None:
    import uvicorn

    from aegis_cli.serve.app import create_app

    loop = asyncio.get_running_loop()

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            loop.call_soon_threadsafe(state.shutdown.set)  # long polls and streams finish now
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal once drained, which would kill the process before the
            # audit writer is closed; we exit normally (status 0) after closing it instead.
            self._captured_signals.clear()

    app = create_app(state)
    config = uvicorn.Config(app, http=_protocol(app), host=options.host, port=options.port, log_level="warning",
                            access_log=False, lifespan="off", proxy_headers=False, server_header=False,
                            date_header=False, timeout_graceful_shutdown=GRACEFUL_SECONDS)
    server = Server(config)
    watcher = _start_watcher(options, state, loop) if options.watch else None
    if state.fleet is not None:
        state.fleet.listen(state, loop)
    announce = asyncio.create_task(_announce(server, state, options))
    share = asyncio.create_task(_share_metrics(state)) if state.metrics.share_dir else None
    try:
        await server.serve(sockets=sockets)
    finally:
        announce.cancel()
        if share is not None:
            share.cancel()
        state.shutdown.set()
        if watcher is not None:
            watcher.stop()
        if state.fleet is not None:
            state.fleet.stop()
    if not server.started:
        raise ServeError(f"could not listen on {options.host}:{options.port} (in use, or not allowed)")


def _protocol(app: Any) -> Any:
    """uvicorn's httptools protocol with the decision route answered in place (serve.protocol), or
    uvicorn's choice when httptools is not installed."""
    try:
        from aegis_cli.serve.protocol import protocol_for
    except ImportError:  # no httptools: h11, and every request through ASGI
        return "auto"
    return protocol_for(app) or "auto"


async def _share_metrics(state: ServerState) -> None:
    from aegis_cli.serve.metrics import SHARE_INTERVAL

    while True:
        await asyncio.sleep(SHARE_INTERVAL)
        try:
            state.metrics.share(force=True)
        except OSError as exc:
            sys.stderr.write(f"aegis: cannot share metrics with the other workers: {exc}\n")


async def _announce(server: Any, state: ServerState, options: ServeOptions) -> None:
    while not server.started:
        await asyncio.sleep(0.02)
    for srv in server.servers:
        for sock in srv.sockets:
            host, port = sock.getsockname()[:2]
            from aegis_cli.audit.trail import shown as trail_shown

            shown = f"[{host}]" if ":" in host else host
            auth = f"{len(state.tokens.names())} token(s)" if state.tokens.enabled else "no tokens: loopback only"
            worker = f", worker {options.worker + 1}/{options.workers}" if options.workers > 1 else ""
            sys.stderr.write(f"aegis: serving on http://{shown}:{port} (policy {state.policy.hash[:19]}, "
                             f"audit {trail_shown(state.audit_db)}, {auth}{worker})\n")
    sys.stderr.flush()


def _start_watcher(options: ServeOptions, state: ServerState, loop: asyncio.AbstractEventLoop) -> Any:
    from aegis_cli.engine.errors import PolicyError
    from aegis_cli.runtime.watcher import PolicyWatcher

    source = ", ".join(options.policy_paths)

    def on_change(policy: Policy) -> None:
        state.replace_policy_threadsafe(policy, loop, by="watcher", source=source)

    def on_error(error: PolicyError) -> None:
        lines = "\n".join(f"  {issue}" for issue in error.issues) or f"  {error}"
        sys.stderr.write(f"aegis: policy change refused; keeping {state.policy.hash[:19]}:\n{lines}\n")

    watcher = PolicyWatcher(options.policy_paths, on_change, on_error, initial=state.policy)
    watcher.start()
    return watcher
