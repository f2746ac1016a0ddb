"""From policy files to checked documents: read the bytes, parse the YAML, check against the schema.

The loader knows nothing of compiled policies: ``policy.py`` builds a ``Policy`` from what it returns,
so the engine's modules import one way (policy -> loader -> schemas, yamlload).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from aegis_cli.engine import schemas
from aegis_cli.engine.errors import Issue, PolicyError
from aegis_cli.engine.yamlload import Locations, load_yaml


def read_source(path: str | Path) -> tuple[bytes, str]:
    """The bytes of a policy file (``-`` is stdin) and the name to report it by."""
    name = str(path)
    if name == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    p = Path(path)
    try:
        if p.is_dir():
            raise PolicyError(Issue(name, None, None, "is a directory, not a policy file"))
        return p.read_bytes(), name
    except FileNotFoundError:
        raise PolicyError(Issue(name, None, None, "no such file")) from None
    except PermissionError:
        raise PolicyError(Issue(name, None, None, "permission denied")) from None
    except OSError as exc:
        raise PolicyError(Issue(name, None, None, f"cannot read: {exc.strerror or exc}")) from None


def load_document(text: bytes | str, source: str) -> tuple[Any, Locations]:
    """Parse one policy file's text and check it against the policy schema; raises ``PolicyError``."""
    document, locations = load_yaml(text, source)
    return check_document(document, source, locations), locations


def check_document(document: Any, source: str, locations: Locations) -> Any:
    """``document`` (``{}`` for an empty file) once it matches the policy schema; raises ``PolicyError``."""
    if document is None:
        document = {}
    issues = schemas.validate("policy", document, source, locations)
    if issues:
        raise PolicyError(issues)
    return document
