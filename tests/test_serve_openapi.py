"""The running server against its OpenAPI document (schemathesis), and the document against the files."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from test_serve_helpers import TOKENS, ServeProcess, tokens_file, trail_for

from aegis_cli.engine.schemas import load_schema, schema_dir

# In the test extras (pip install -e '.[test]'); skipped, saying so, on an install without it.
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install schemathesis)")


# The server keeps its trail and queue in SQLite, then in PostgreSQL (tests/pg.py).
@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("serve-openapi")
    with ServeProcess(tmp, args=["--tokens", str(tokens_file(tmp)), "--no-watch"],
                      audit_db=trail_for(request, tmp)) as srv:
        yield srv


def _check(case: Any) -> None:
    if case.query and "wait" in case.query:
        case.query["wait"] = 0  # a long poll would only make this slow
    excluded = []
    if case.operation.method.upper() == "PUT":
        # A policy can satisfy its JSON Schema and still be refused by the compiler (a bad glob,
        # an RE2-invalid regex, a duplicate rule name): schema-valid is not always acceptable here.
        excluded.append(schemathesis.checks.positive_data_acceptance)
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKENS['admin']}"}, excluded_checks=excluded)


def test_server_conforms_to_its_openapi_document(server: ServeProcess, request: pytest.FixtureRequest) -> None:
    # Driven through hypothesis directly rather than schemathesis's pytest integration, which
    # breaks with some pytest releases.
    from hypothesis import given

    # The event stream never ends by itself; it is tested in test_serve_api.
    api = schemathesis.openapi.from_url(server.url + "/openapi.json").exclude(operation_id="streamAudit")
    checked = []
    for result in api.get_all_operations():
        operation = result.ok()
        strategy = operation.as_strategy(schemathesis.GenerationMode.POSITIVE) | operation.as_strategy(
            schemathesis.GenerationMode.NEGATIVE)

        @given(case=strategy)
        @settings(max_examples=16, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True)  # the same cases every run: a CI result must not depend on luck
        def run(case: Any) -> None:
            _check(case)

        run()
        checked.append(operation.label)
    assert len(checked) >= 10, checked


def test_served_document_is_the_file_with_schemas_bundled(server: ServeProcess) -> None:
    with server.client() as http:
        served = http.get("/openapi.json").json()
    source = load_schema("openapi")
    assert served["openapi"] == "3.1.0" and served["paths"].keys() == source["paths"].keys()
    text = json.dumps(served)
    assert '"$ref": "#/components/schemas/Action"' in text
    assert all(ref.startswith("#/components/") for ref in _refs(served))  # every external ref was bundled
    assert "not installed" not in text
    # Built on the CLI's schemas: the bundled Action is the action schema itself.
    action = dict(load_schema("action"))
    action.pop("$schema"), action.pop("$id")
    assert served["components"]["schemas"]["Action"] == action
    referenced = {ref.split("#")[0] for ref in _refs(source) if not ref.startswith("#")}
    assert referenced <= {p.name for p in schema_dir().glob("*.schema.json")}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []
