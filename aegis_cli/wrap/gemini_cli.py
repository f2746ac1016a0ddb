"""Gemini CLI's other two ways to its model, pointed at the proxy by ``aegis wrap`` like the Gemini API.

Read from ``@google/gemini-cli`` 0.61's own code:

* Signed in with Google (``oauth-personal``, ``compute-default-credentials`` / Cloud Shell) it talks to
  the Code Assist API at ``process.env.CODE_ASSIST_ENDPOINT ?? "https://cloudcode-pa.googleapis.com"``
  (``CodeAssistServer.getBaseUrl``), version ``CODE_ASSIST_API_VERSION`` or ``v1internal``.
* On Vertex AI (``vertex-ai``) the google-genai SDK is given ``GOOGLE_VERTEX_BASE_URL`` when it is set;
  otherwise the CLI picks ``aiplatform.{us,eu}.rep.googleapis.com`` for ``GOOGLE_CLOUD_LOCATION``
  ``us`` / ``eu``, and the SDK ``{location}-aiplatform.googleapis.com`` for a project and a regional
  location, else the global ``aiplatform.googleapis.com`` (an API key, which the CLI passes
  explicitly, wins over the project and location).

A ``.env`` file Gemini CLI loads never overrides a variable already set, so the child's proxy URLs win.
"""

from __future__ import annotations

from collections.abc import Mapping

CODE_ASSIST = "https://cloudcode-pa.googleapis.com"
VERTEX_GLOBAL = "https://aiplatform.googleapis.com"
_VERTEX_REP = {"us": "https://aiplatform.us.rep.googleapis.com", "eu": "https://aiplatform.eu.rep.googleapis.com"}


def code_assist_upstream(environ: Mapping[str, str]) -> str:
    """Where Gemini CLI would send Code Assist requests without aegis."""
    return environ.get("CODE_ASSIST_ENDPOINT") or CODE_ASSIST


def vertex_upstream(environ: Mapping[str, str]) -> str:
    """Where Gemini CLI (and the google-genai SDK) would send Vertex AI requests without aegis."""
    if environ.get("GOOGLE_VERTEX_BASE_URL"):
        return environ["GOOGLE_VERTEX_BASE_URL"]
    location = environ.get("GOOGLE_CLOUD_LOCATION") or ""
    if location in _VERTEX_REP:
        return _VERTEX_REP[location]
    project = environ.get("GOOGLE_CLOUD_PROJECT") or environ.get("GOOGLE_CLOUD_PROJECT_ID")
    if project and location and location != "global" and not environ.get("GOOGLE_API_KEY"):
        return f"https://{location}-aiplatform.googleapis.com"
    return VERTEX_GLOBAL
