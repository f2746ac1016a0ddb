"""The OpenAPI document, as served: ``schemas/openapi.json`` with the JSON Schemas it names bundled in.

The file refers to ``action.schema.json`` and friends, the same files the CLI validates with, so
there is one definition of every shape. Clients and tools (code generators, schemathesis) want a
self-contained document, so at serve time each external schema becomes a component
(``Action``, ``Decision``, ``Policy`` ...), its ``$defs`` become components of their own, and
every ``$ref`` is rewritten to point at them.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from aegis_cli.engine import schemas


def _component(filename: str) -> str:
    stem = filename.removesuffix(".schema.json")
    return "".join(part.capitalize() for part in stem.replace("_", "-").split("-"))


@functools.cache
def bundled() -> dict[str, Any]:
    doc = copy.deepcopy(schemas.load_schema("openapi"))
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    pending = _external_refs(doc)
    done: set[str] = set()
    while pending:
        filename = pending.pop()
        if filename in done:
            continue
        done.add(filename)
        name = _component(filename)
        path = schemas.schema_dir() / filename
        if not path.exists():
            # Not shipped (yet): say so in the document rather than invent a shape.
            components[name] = {"type": "object", "description": f"{filename} (not installed)"}
            continue
        schema = copy.deepcopy(schemas.load_schema(filename))
        for key in ("$schema", "$id"):
            schema.pop(key, None)
        for def_name, sub in schema.pop("$defs", {}).items():
            components[f"{name}.{def_name}"] = _rewrite(sub, name)
        components[name] = _rewrite(schema, name)
        pending |= _external_refs(components[name]) - done
        pending |= {f for sub_name, sub in components.items() if sub_name.startswith(f"{name}.")
                    for f in _external_refs(sub)} - done
    return _rewrite(doc, None)


def _external_refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            found.add(ref.split("#", 1)[0])
        for value in node.values():
            found |= _external_refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _external_refs(value)
    return found


def _rewrite(node: Any, owner: str | None) -> Any:
    """Point every $ref at a component; ``owner`` is the bundled schema whose local refs these are."""
    if isinstance(node, list):
        return [_rewrite(v, owner) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _rewrite(v, owner) for k, v in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str):
        if not ref.startswith("#"):
            filename, _, fragment = ref.partition("#")
            target = _component(filename)
            out["$ref"] = _local(fragment, target) if fragment else f"#/components/schemas/{target}"
        elif owner is not None:
            out["$ref"] = _local(ref[1:], owner)
    return out


def _local(fragment: str, owner: str) -> str:
    if fragment.startswith("/$defs/"):
        return f"#/components/schemas/{owner}.{fragment[len('/$defs/'):]}"
    if fragment in ("", "/"):
        return f"#/components/schemas/{owner}"
    return f"#/components/schemas/{owner}{fragment}"
