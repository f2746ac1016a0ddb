"""The JSON Schemas shipped with aegis, and validation against them with located messages."""

from __future__ import annotations

import difflib
import functools
import json
from pathlib import Path
from typing import Any

from aegis_cli.engine.errors import Issue
from aegis_cli.engine.yamlload import KEY, Locations

SCHEMA_NAMES = ("policy", "action", "decision", "audit-record", "approval", "test-file", "report", "openapi")


def schema_dir() -> Path:
    """Where the schemas live: inside the installed package, or ``schemas/`` in a checkout."""
    package = Path(__file__).parent.parent  # aegis_cli/
    packaged = package / "schemas"  # the wheel force-includes schemas/ here
    if packaged.is_dir():
        return packaged
    return package.parent / "schemas"


def schema_path(name: str) -> Path:
    filename = name if name.endswith(".json") else f"{name}.schema.json"
    if name == "openapi":
        filename = "openapi.json"
    return schema_dir() / filename


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    return json.loads(schema_path(name).read_text(encoding="utf-8"))


@functools.cache
def validator(name: str) -> Any:
    import jsonschema
    from referencing import Registry, Resource

    resources = []
    for path in schema_dir().glob("*.schema.json"):
        doc = json.loads(path.read_text(encoding="utf-8"))
        resource = Resource.from_contents(doc)
        resources.append((doc.get("$id", path.name), resource))
        resources.append((path.name, resource))
    registry = Registry().with_resources(resources)
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=registry)


def validate(name: str, document: Any, source: str, locations: Locations | None = None) -> list[Issue]:
    """Every schema error in ``document``, in file order, each located and said in words."""
    issues = []
    seen: set[tuple[Any, ...]] = set()
    for error in validator(name).iter_errors(document):
        for leaf in _leaves(error):
            path, message = _describe(leaf)
            key = (path, message)
            if key in seen:
                continue
            seen.add(key)
            line, col = _locate(locations or {}, path)
            shown = "/".join(str(p) for p in path if p != KEY)
            issues.append(Issue(source, line, col, message, path=shown))
    issues.sort(key=lambda i: (i.line or 0, i.column or 0))
    return issues


def _leaves(error: Any) -> list[Any]:
    """For oneOf/anyOf, report the branch that got furthest rather than 'is not valid under any'."""
    if error.validator in ("oneOf", "anyOf") and error.context:
        deepest = max(len(e.absolute_path) for e in error.context)
        if deepest > len(error.absolute_path):
            return [e for e in error.context if len(e.absolute_path) == deepest][:1]
    return [error]


def _locate(locations: Locations, path: tuple[Any, ...]) -> tuple[int | None, int | None]:
    while True:
        if path in locations:
            return locations[path]
        if not path:
            return None, None
        path = path[:-1]


def _where(path: tuple[Any, ...]) -> str:
    if not path:
        return "the policy"
    return "'" + ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[") + "'"


def _describe(error: Any) -> tuple[tuple[Any, ...], str]:
    path = tuple(error.absolute_path)
    kind = error.validator
    where = _where(path)
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extras = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        if extras:
            key = extras[0]
            what = "condition operator" if (path and "conditions" in map(str, path)) or _is_conditions(error) else "key"
            hint = difflib.get_close_matches(key, allowed, n=1)
            msg = f"unknown {what} '{key}' in {where}"
            if hint:
                msg += f"; did you mean '{hint[0]}'?"
            elif allowed:
                msg += f"; expected one of: {', '.join(allowed)}"
            return (*path, key, KEY), msg
    if kind == "enum":
        choices = ", ".join(json.dumps(c) for c in error.validator_value)
        return path, f"{where} is {json.dumps(error.instance)}; expected one of {choices}"
    if kind == "type":
        expected = error.validator_value
        wanted = " or ".join(_article(e) for e in (expected if isinstance(expected, list) else [expected]))
        actual = f"{_json_type(error.instance)} ({_short(error.instance)})"
        return path, f"{where} must be {wanted}, not {actual}"
    if kind == "required":
        return path, f"{where} is missing required key {error.message.split(' ')[0]}"
    if kind in ("pattern", "maxLength") and len(path) >= 2 and path[-2] == "tags":
        return path, (f"{where} is {json.dumps(error.instance)}; a tag is a lowercase word of letters, digits, "
                      "'_', '.' or '-' (at most 64), like pii, phi or payments")
    if kind == "uniqueItems" and path and path[-1] == "tags":
        return path, f"{where} names a tag twice"
    if kind == "pattern" and path and path[-1] in ("time_after", "time_before"):
        return path, f"{where} is {json.dumps(error.instance)}; expected a UTC time as \"HH:MM\" (00:00 to 23:59)"
    if kind in ("minimum", "maximum") and "weekdays" in map(str, path):
        return path, f"{where} is {error.instance}; weekdays are ISO numbers 1 (Monday) to 7 (Sunday)"
    if kind == "minProperties":
        return path, f"{where} must not be empty"
    if kind == "minItems":
        return path, f"{where} must have at least {error.validator_value} item(s)"
    if kind == "maxLength" and path and path[-1] in ("time_after", "time_before"):
        return path, f"{where} is {json.dumps(error.instance)}; expected a UTC time as \"HH:MM\" (00:00 to 23:59)"
    if kind == "minLength":
        if "propertyNames" in error.schema_path:
            return path, f"{where} has an empty parameter name"
        return path, f"{where} must not be empty"
    if kind in ("oneOf", "anyOf") and all("type" in b for b in error.validator_value):
        wanted = " or ".join(_article(b["type"]) for b in error.validator_value)
        return path, f"{where} must be {wanted}, not {_json_type(error.instance)} ({_short(error.instance)})"
    if kind == "const" or (kind == "oneOf" and path == ("version",)):
        return path, f"{where} is {json.dumps(error.instance)}; the only policy version is \"1\""
    if kind == "uniqueItems":
        return path, f"{where} has repeated items"
    return path, f"{where}: {error.message}"


def _is_conditions(error: Any) -> bool:
    return "param_eq" in error.schema.get("properties", {})


def _article(word: str) -> str:
    word = {"object": "a mapping", "array": "a list", "integer": "an integer", "number": "a number",
            "string": "a string", "boolean": "true or false", "null": "empty"}.get(word, word)
    return word


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
