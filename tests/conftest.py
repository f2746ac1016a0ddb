from __future__ import annotations

import os
from pathlib import Path

import pytest

# PostgreSQL: the session's throwaway cluster, a fresh database per test, SQLite-and-PostgreSQL targets
from pg import audit_target, new_trail, pg_cluster, pg_url, store  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SHARED = ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests must not pick up a developer's policy or audit database from the environment.
    for name in ("AEGIS_POLICY", "AEGIS_AUDIT_DB", "AEGIS_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture
def example_policy() -> Path:
    return EXAMPLES / "policy.yaml"


def pytest_report_header(config: pytest.Config) -> str:
    return f"aegis tests; shared traces: {'present' if (SHARED / 'traces').is_dir() else 'absent'}; cwd {os.getcwd()}"
