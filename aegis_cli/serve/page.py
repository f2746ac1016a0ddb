"""The approvals page: three static files from the package, served under a strict CSP.

No build step and no CDN: it works offline, and the CSP allows scripts, styles and requests from
this server only (no inline script at all), so a parameter that slipped through as markup still
could not run. The page needs no token to load; every API call it makes does.
"""

from __future__ import annotations

import functools
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response

from aegis_cli.serve.http import HTTPProblem

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_TYPES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


@functools.cache
def _read(name: str) -> bytes:
    return files("aegis_cli.serve").joinpath("static", name).read_bytes()


def _headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "Cache-Control": "no-cache"}


async def index(request: Request) -> Response:
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers=_headers())


async def favicon(request: Request) -> Response:
    return Response(status_code=204)  # browsers ask; nothing to show, and no 404 in their console


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _TYPES:
        raise HTTPProblem(404, "not_found", "no such file")
    return Response(_read(name), media_type=_TYPES[name], headers=_headers())
