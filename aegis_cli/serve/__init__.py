"""``aegis serve``: the REST API and the approvals page over the engine, audit trail and queue.

    from aegis_cli.serve import ServeOptions, serve
    serve(ServeOptions(["policy.yaml"], port=8787), Policy.from_yaml("policy.yaml"))

``create_app(state)`` gives the ASGI app itself (see ``server.build_state``).
"""

from __future__ import annotations

from aegis_cli.serve.app import create_app
from aegis_cli.serve.server import ServeError, ServeOptions, build_state, serve

__all__ = ["ServeError", "ServeOptions", "build_state", "create_app", "serve"]
