"""The pieces of ``aegis serve`` on their own: tokens, the group-commit writer, the CLI's refusals."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aegis_cli.audit import SQLiteAuditLogger, open_audit
from aegis_cli.cli import app
from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel
from aegis_cli.serve.auth import LOCAL, Role, TokenConfigError, TokenStore
from aegis_cli.serve.guard import is_loopback_host
from aegis_cli.serve.server import is_loopback_bind
from aegis_cli.serve.writer import AuditWriter, WriterClosed

ROOT = Path(__file__).resolve().parent.parent


# -- tokens ----------------------------------------------------------------------------------------

def _write(tmp: Path, text: str) -> Path:
    path = tmp / "tokens.yaml"
    path.write_text(text)
    return path


def test_tokens_file_roles_and_hashed_entries(tmp_path: Path) -> None:
    secret = "hashed-token-0123456789abcdef"
    path = _write(tmp_path, f"""\
tokens:
  - name: bot
    role: evaluate
    token: bot-token-0123456789abcdef
  - name: alice
    role: approve
    sha256: {hashlib.sha256(secret.encode()).hexdigest()}
""")
    store = TokenStore.load(None, path)
    assert store.enabled and store.names() == ["bot", "alice"]
    assert store.authenticate("Bearer bot-token-0123456789abcdef").role is Role.EVALUATE
    assert store.authenticate(f"bearer {secret}").name == "alice"
    assert store.authenticate(f"Bearer {secret}x") is None
    assert store.authenticate(f"Basic {secret}") is None
    assert store.authenticate("Bearer ") is None
    assert store.authenticate(None) is None
    both = TokenStore.load("env-token-0123456789abcdef", path)
    assert both.authenticate("Bearer env-token-0123456789abcdef").role is Role.ADMIN


def test_no_tokens_means_local_admin() -> None:
    store = TokenStore.load(None, None)
    assert not store.enabled
    assert store.authenticate(None) is LOCAL and LOCAL.role is Role.ADMIN


@pytest.mark.parametrize(("text", "message"), [
    ("tokens: []\n", "non-empty list"),
    ("tokens:\n  - {name: a, role: boss, token: 0123456789abcdefgh}\n", ":2:"),
    ("tokens:\n  - {name: a, role: admin, token: short}\n", "at least 16"),
    ("tokens:\n  - {name: a, role: admin}\n", "exactly one of"),
    ("tokens:\n  - {name: a, role: admin, sha256: abc}\n", "64 hex"),
    ("tokens:\n  - {name: a, role: admin, token: 0123456789abcdefgh, extra: 1}\n", "unknown key 'extra'"),
    ("tokens:\n  - {name: a, role: admin, token: 0123456789abcdefgh}\n"
     "  - {name: a, role: evaluate, token: 0123456789abcdefgX}\n", "used twice"),
    ("tokens:\n  - {name: a, role: admin, token: 0123456789abcdefgh}\n"
     "  - {name: b, role: evaluate, token: 0123456789abcdefgh}\n", "same token"),
    ("tokens: !!python/object:os.system {}\n", "not allowed"),
])
def test_bad_token_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TokenConfigError, match=message):
        TokenStore.load(None, _write(tmp_path, text))


def test_loopback_checks() -> None:
    assert is_loopback_bind("127.0.0.1") and is_loopback_bind("::1") and is_loopback_bind("localhost")
    assert not is_loopback_bind("0.0.0.0") and not is_loopback_bind("example.com") and not is_loopback_bind("::")
    for host in ("127.0.0.1:8787", "localhost", "LOCALHOST:1", "[::1]:8787", "app.localhost:3"):
        assert is_loopback_host(host), host
    for host in ("evil.example", "127.0.0.1.evil.example", "", "[::2]:80", "localhost.evil.example"):
        assert not is_loopback_host(host), host


# -- the group-commit writer ----------------------------------------------------------------------

DECISION = Decision(Approval.AUTO, RiskLevel.LOW, "r", "ok", "sha256:x")


def test_concurrent_records_share_transactions(audit_target: str) -> None:
    writer = AuditWriter(lambda: open_audit(audit_target))
    writer.start()

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(writer.record([(Action("read", f"t{i}"), DECISION, None)] * 2)
                                      for i in range(200)))

    try:
        results = asyncio.run(main())
    finally:
        writer.close()
    ids = [i for pair in results for i in pair]
    assert sorted(ids) == list(range(1, 401))
    assert all(b == a + 1 for a, b in results)  # one request's decisions are contiguous
    assert writer.decisions == 400 and writer.batches < 200  # shared commits


class _Flaky:
    """A logger that refuses batches holding a poisoned action, like a disk that fails one write."""

    def __init__(self) -> None:
        self.real: Any = None
        self.calls = 0

    def record_decisions(self, items: list[Any]) -> list[int]:
        self.calls += 1
        if any(a.type == "poison" for a, *_ in items):
            raise RuntimeError("cannot write")
        return list(range(self.calls * 1000, self.calls * 1000 + len(items)))

    def close(self) -> None:
        pass


def test_one_bad_request_does_not_sink_its_batch() -> None:
    writer = AuditWriter(_Flaky)
    writer.start()

    async def one(kind: str) -> Any:
        try:
            return await writer.record([(Action(kind, "x"), DECISION, None)])
        except RuntimeError as exc:
            return exc

    async def main() -> list[Any]:
        return await asyncio.gather(*(one("poison" if i == 5 else "read") for i in range(20)))

    results = asyncio.run(main())
    writer.close()
    assert isinstance(results[5], RuntimeError)
    assert all(isinstance(r, list) and len(r) == 1 for i, r in enumerate(results) if i != 5)


def test_closed_writer_refuses_and_open_failure_is_raised(tmp_path: Path) -> None:
    writer = AuditWriter(lambda: SQLiteAuditLogger(tmp_path / "a.db"))
    writer.start()
    writer.close()
    with pytest.raises(WriterClosed):
        asyncio.run(writer.record([(Action("a", "b"), DECISION, None)]))
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(Exception, match="directory"):
        AuditWriter(lambda: SQLiteAuditLogger(tmp_path / "dir.db")).start()


# -- the command ------------------------------------------------------------------------------------

def test_cli_refuses_unsafe_or_broken_setups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    policy = str(ROOT / "examples" / "policy.yaml")
    r = runner.invoke(app, ["serve", "-p", policy, "--host", "0.0.0.0", "--audit-db", str(tmp_path / "a.db")])
    assert r.exit_code == 2 and "without authentication" in r.output
    monkeypatch.setenv("AEGIS_API_TOKEN", "short")
    r = runner.invoke(app, ["serve", "-p", policy, "--audit-db", str(tmp_path / "a.db")])
    assert r.exit_code == 2 and "at least 16" in r.output
    monkeypatch.delenv("AEGIS_API_TOKEN")
    (tmp_path / "dir.db").mkdir()
    r = runner.invoke(app, ["serve", "-p", policy, "--audit-db", str(tmp_path / "dir.db")])
    assert r.exit_code == 2 and "cannot open audit database" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: 5\n")
    r = runner.invoke(app, ["serve", "-p", str(bad)])
    assert r.exit_code == 2 and "bad.yaml:1" in r.output
    r = runner.invoke(app, ["serve", "--help"])
    assert r.exit_code == 0 and "--tokens" in r.output and "--approval-timeout" in r.output


def test_serve_without_its_extra_names_the_extra_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from aegis_cli.cli import serve_cmd

    real = importlib.util.find_spec
    monkeypatch.setattr(serve_cmd.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("starlette", "uvicorn") else real(name, *a))
    result = CliRunner().invoke(app, ["serve", "-p", str(Path(__file__).parent.parent / "examples" / "policy.yaml")])
    assert result.exit_code == 2
    assert result.stderr == "aegis: aegis serve needs starlette, uvicorn: pip install 'aegis-cli[serve]'\n"
