"""``aegis serve --workers N``: N server processes on one host, accepting on one socket.

Only on PostgreSQL, where the database serialises every process's appends (one chain) and holds
the approval queue and the fleet's policy that all of them share; an SQLite trail has one writer
process, so N > 1 is refused there.

The supervisor checks what a worker would refuse (tokens, address), binds the listening socket
once and forks the workers before it starts any thread; each worker builds its own server (audit
writer, pool, policy listener) and accepts on the inherited socket, the kernel handing each
connection to one of them. A worker that dies is started again after a pause; SIGTERM or Ctrl-C is
passed on to every worker, which drains as a lone server does, and the supervisor exits once
all have. Only the first worker watches the policy files (each change is published once).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Any

RESTART_PAUSE = 1.0


def supervise(options: Any, policy: Any) -> None:
    from aegis_cli.audit.trail import is_postgres
    from aegis_cli.serve.server import GRACEFUL_SECONDS, ServeError, load_tokens

    if not is_postgres(options.audit_db):
        raise ServeError(f"--workers {options.workers} needs a PostgreSQL audit store (--audit-db "
                         "postgresql://...): an SQLite trail is written by one server process")
    load_tokens(options)  # refuse once, here, rather than in every worker
    sock = _bind(options.host, options.port)
    share_dir = tempfile.mkdtemp(prefix="aegis-serve-metrics-")
    ctx = multiprocessing.get_context("fork")
    procs: dict[int, Any] = {}
    stopping = False

    def start(index: int) -> None:
        worker = dataclasses.replace(options, worker=index, watch=options.watch and index == 0,
                                     metrics_dir=share_dir)
        proc = ctx.Process(target=_worker, args=(worker, policy, sock, os.getpid()), name=f"aegis-serve-{index + 1}")
        proc.start()
        procs[index] = proc

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    try:
        for i in range(options.workers):
            start(i)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        while not stopping:
            time.sleep(0.2)
            for i, proc in list(procs.items()):
                if not proc.is_alive() and not stopping:
                    code = proc.exitcode
                    if code == 2 and not any(p.is_alive() for p in procs.values()):
                        raise ServeError("every worker refused to start (see above)")
                    sys.stderr.write(f"aegis: worker {i + 1} (pid {proc.pid}) exited with {code}; "
                                     "starting it again\n")
                    time.sleep(RESTART_PAUSE)
                    start(i)
    finally:
        for proc in procs.values():
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACEFUL_SECONDS + 20
        for proc in procs.values():
            proc.join(max(deadline - time.monotonic(), 0.1))
            if proc.is_alive():
                proc.kill()
        sock.close()
        shutil.rmtree(share_dir, ignore_errors=True)


def _bind(host: str, port: int) -> socket.socket:
    from aegis_cli.serve.server import ServeError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        raise ServeError(f"could not listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock


def _worker(options: Any, policy: Any, sock: socket.socket, supervisor: int) -> None:
    from aegis_cli.serve.server import ServeError, serve_one

    _die_with(supervisor)
    # The supervisor's handlers are not ours: uvicorn installs its own when it starts.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        serve_one(options, policy, sockets=[sock])
    except ServeError as exc:
        sys.stderr.write(f"aegis: worker {options.worker + 1}: {exc}\n")
        sys.stderr.flush()
        os._exit(2)


def _die_with(supervisor: int) -> None:
    """Stop this worker when the supervisor dies, even by SIGKILL: nothing would restart, drain or stop
    it, and it would keep the port. Linux's parent-death signal does it; elsewhere workers outlive it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor:  # it died before the signal was armed
        os._exit(0)
