"""The hook path an agent runs (`aegis hook <agent>` as a process): no CLI framework, a compiled-policy
cache and the standard-library SQLite writer, giving the same answers and the same audit records as
the normal path; and the same hooks over HTTP from `aegis serve`, installed with `--print-settings
--server`, blocking when the server is down."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pg import bodies, verifies
from test_serve_helpers import TOKENS, ServeProcess, tokens_file
from typer.testing import CliRunner

from aegis_cli.cli import app
from aegis_cli.hooks import command, policy_cache, run_hook

POLICY = """\
version: "1"
defaults: {risk_level: low, approval: auto}
audit: {redact: ["*token*"]}
rules:
  - name: no-rm-rf
    match: {type: Bash}
    conditions: {param_matches: {command: "rm\\\\s+-rf"}}
    risk_level: critical
    approval: block
    reason: recursive deletes are not allowed
  - name: no-rm-rf-gemini
    match: {type: run_shell_command}
    conditions: {param_matches: {command: "rm\\\\s+-rf"}}
    risk_level: critical
    approval: block
  - name: writes-need-review
    match: {type: "Write*"}
    risk_level: medium
    approval: approve
  - name: gemini-writes-need-review
    match: {type: write_file}
    risk_level: medium
    approval: approve
  - name: no-secrets-dir
    match: {type: apply_patch}
    conditions: {param_glob: {path: "secrets/**"}}
    risk_level: high
    approval: block
"""
PATCH = ("*** Begin Patch\n*** Add File: src/new.py\n+x = 1\n*** Update File: secrets/key.txt\n@@\n-1\n+2\n"
         "*** End Patch\n")


def claude(tool: str, tool_input: Any, event: str = "PreToolUse", use_id: str = "toolu_1", **extra: Any) -> str:
    return json.dumps({"session_id": "s-1", "cwd": "/repo", "hook_event_name": event, "tool_name": tool,
                       "tool_input": tool_input, "tool_use_id": use_id, **extra})


def codex(tool: str, tool_input: Any, event: str = "PreToolUse", use_id: str = "call_1") -> str:
    return json.dumps({"session_id": "c-1", "turn_id": "t-1", "cwd": "/repo", "hook_event_name": event,
                       "model": "gpt-5.5", "tool_name": tool, "tool_input": tool_input, "tool_use_id": use_id})


def gemini(tool: str, tool_input: Any, event: str = "BeforeTool", **extra: Any) -> str:
    return json.dumps({"session_id": "g-1", "cwd": "/repo", "hook_event_name": event, "tool_name": tool,
                       "tool_input": tool_input, **extra})


# One agent session each: allow, ask, block, a patch decided file by file, what ran, and events
# the hook must refuse (another agent's, not JSON).
EVENTS: list[tuple[str, str]] = [
    ("claude-code", claude("Bash", {"command": "ls", "api_token": "s3cret"})),
    ("claude-code", claude("Write", {"file_path": "/repo/x.py", "content": "1"}, use_id="toolu_w")),
    ("claude-code", claude("Bash", {"command": "rm -rf build"}, use_id="toolu_rm")),
    ("claude-code", claude("Write", {"file_path": "/repo/x.py", "content": "1"}, "PostToolUse", "toolu_w",
                           tool_response={"type": "create"})),
    ("claude-code", gemini("run_shell_command", {"command": "rm -rf build"})),
    ("codex", codex("apply_patch", {"command": PATCH})),
    ("codex", codex("Bash", {"command": "ls"}, use_id="call_2")),
    ("codex", codex("Bash", {"command": "ls"}, "PostToolUse", "call_2")),
    ("gemini", gemini("write_file", {"file_path": "a.txt", "content": "x"})),
    ("gemini", gemini("write_file", {"file_path": "a.txt", "content": "x"}, "AfterTool",
                      tool_response={"llmContent": "ok"})),
    ("gemini", "not json"),
]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    out["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return out


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def fast(agent: str, raw: str, policy: Path, db: Path | str, env: dict[str, str],
         *extra: str) -> subprocess.CompletedProcess[str]:
    """The hook as an agent runs it: a process, `python -m aegis_cli hook ...`, the event on stdin."""
    return subprocess.run([sys.executable, "-m", "aegis_cli", "hook", agent, "-p", str(policy), "--audit-db", str(db),
                           *extra], input=raw, capture_output=True, text=True, env=env, timeout=60)


def normal(agent: str, raw: str, policy: Path, db: Path | str) -> tuple[int, str, str]:
    """The same command through Typer and the normal loaders (Policy.from_yaml_files, SQLiteAuditLogger)."""
    result = CliRunner().invoke(app, ["hook", agent, "-p", str(policy), "--audit-db", str(db)], input=raw)
    return result.exit_code, result.stdout, result.stderr


def verified(db: Path | str) -> bool:
    """``aegis audit verify`` says the trail is intact (SQLite file or PostgreSQL URL)."""
    return CliRunner().invoke(app, ["audit", "verify", "--audit-db", str(db)]).exit_code == 0 and verifies(db).ok


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("ts", "prev_hash")} for r in rows]


def test_fast_path_answers_and_records_exactly_as_the_normal_path(tmp_path: Path, policy: Path, env: dict[str, str],
                                                                   new_trail: Any) -> None:
    # On PostgreSQL the hook process takes the normal writer (the fast one is SQLite's): same answers, same records.
    fast_db, normal_db, mixed_db = new_trail("fast"), new_trail("normal"), new_trail("mixed")
    for n, (agent, raw) in enumerate(EVENTS):
        code, out, err = normal(agent, raw, policy, normal_db)
        proc = fast(agent, raw, policy, fast_db, env)
        assert (proc.returncode, proc.stdout, proc.stderr) == (code, out, err), (agent, raw)
        # one trail written by both, alternately
        if n % 2:
            assert fast(agent, raw, policy, mixed_db, env).stdout == out
        else:
            assert normal(agent, raw, policy, mixed_db)[1] == out
    assert [code for code, *_ in (normal(a, r, policy, new_trail("x")) for a, r in EVENTS)].count(2) == 2
    assert comparable(bodies(fast_db)) == comparable(bodies(normal_db)) == comparable(bodies(mixed_db))
    rows = bodies(fast_db)
    assert rows[0]["action"]["params"]["api_token"] != "s3cret"  # audit.redact applied on the fast path too
    assert [r["decision"]["approval"] for r in rows if r["kind"] == "decision"] == [
        "auto", "approve", "block", "auto", "block", "auto", "approve"]
    executions = [(r["decision_id"], r["data"]["status"]) for r in rows if r["kind"] == "execution"]
    assert executions == [(2, "ok"), (None, "refused"), (8, "ok"), (10, "ok"), (None, "refused")]
    assert verified(fast_db) and verified(normal_db) and verified(mixed_db)
    assert len(list((tmp_path / "cache" / "aegis").glob("*.policy"))) == 1


# What the hook path must not import: a CLI framework, YAML and the schema checker (the policy cache
# stands in), sqlite-utils (the standard-library writer does), and the standard library's slowest
# modules to start (CONTRIBUTING.md, "Start-up"): each of these was once most of a hook's time.
FRAMEWORKS = {"typer", "click", "rich", "yaml", "jsonschema", "sqlite_utils"}
NOT_ON_THE_HOOK_PATH = FRAMEWORKS | {"dataclasses", "inspect", "typing", "pathlib", "pickle", "urllib", "asyncio",
                                    "logging"}


def test_the_hook_path_loads_no_cli_framework_yaml_schema_or_sqlite_utils(policy: Path, env: dict[str, str],
                                                                          audit_target: str) -> None:
    db = audit_target
    assert fast("claude-code", claude("Bash", {"command": "ls"}), policy, db, env).returncode == 0  # cache, trail
    # Only what the hook imports counts: an interpreter's site hooks may have loaded some before it.
    # (psycopg, for a PostgreSQL trail, brings asyncio, logging and dataclasses with it.)
    not_loaded = NOT_ON_THE_HOOK_PATH if not str(db).startswith("postgres") else FRAMEWORKS
    probe = ("import sys, io\n"
             "before = set(sys.modules)\n"
             f"sys.argv = ['aegis', 'hook', 'claude-code', '-p', {str(policy)!r}, '--audit-db', {str(db)!r}]\n"
             "from aegis_cli.cli import main\n"
             "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
             "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} & "
             f"set({sorted(not_loaded)!r})), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe], input=claude("Bash", {"command": "ls"}), capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "[]" and '"allow"' in proc.stdout
    assert len(bodies(db)) == 2 and verified(db)


def cache_entry(tmp_path: Path) -> Path:
    (entry,) = (tmp_path / "cache" / "aegis").glob("*.policy")
    return entry


def decision(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["hookSpecificOutput"]["permissionDecision"]


def test_cache_is_private_and_a_policy_edit_invalidates_it(tmp_path: Path, policy: Path, env: dict[str, str]) -> None:
    db, rm = tmp_path / "a.db", claude("Bash", {"command": "rm -rf build"})
    assert decision(fast("claude-code", rm, policy, db, env)) == "deny"
    entry = cache_entry(tmp_path)
    assert entry.stat().st_mode & 0o777 == 0o600 and entry.parent.stat().st_mode & 0o777 == 0o700
    assert decision(fast("claude-code", rm, policy, db, env)) == "deny"
    policy.write_text(POLICY.replace("approval: block\n    reason: recursive", "approval: auto\n    reason: recursive"))
    assert decision(fast("claude-code", rm, policy, db, env)) == "allow"  # the edit is seen at once
    assert len(list(entry.parent.glob("*.policy"))) == 2
    # a policy with errors is refused every time, and never cached
    policy.write_text(POLICY.replace("approval: block", "approval: sometimes"))
    for _ in range(2):
        proc = fast("claude-code", rm, policy, db, env)
        assert proc.returncode == 2 and "could not be loaded" in proc.stderr and proc.stderr.count("\n") == 1
    assert len(list(entry.parent.glob("*.policy"))) == 2


def forged_entry(key: str, payload: bytes, checksum: bytes | None = None) -> bytes:
    import hashlib

    digest = checksum or hashlib.sha256(payload).hexdigest().encode()
    return policy_cache.FORMAT + digest + b"\n" + payload


def test_a_tampered_or_unsafe_cache_entry_is_ignored(tmp_path: Path, policy: Path, env: dict[str, str]) -> None:
    db, rm = tmp_path / "a.db", claude("Bash", {"command": "rm -rf build"})
    assert decision(fast("claude-code", rm, policy, db, env)) == "deny"
    entry = cache_entry(tmp_path)
    key = entry.name.removesuffix(".policy")
    original = entry.read_bytes()
    from aegis_cli import Policy

    allow_all = Policy.from_string('version: "1"\ndefaults: {risk_level: low, approval: auto}\n')
    forged = json.dumps({"key": key, "hash": allow_all.hash, "rules": [], "defaults": ["low", "auto", ""],
                         "options": {"redact": [], "sources": [], "default_tags": [], "explicit_defaults": True}
                         }).encode()
    marker = tmp_path / "pwned"
    evil = pickle.dumps(type("Evil", (), {"__reduce__": lambda self: (os.system, (f"touch {marker}",))})())
    cases = {
        "flipped byte": original[:-5] + bytes([original[-5] ^ 1]) + original[-4:],
        "truncated": original[: len(original) // 2],
        "allow-all policy, stale checksum": forged_entry(key, forged, original[len(policy_cache.FORMAT):][:64]),
        "allow-all policy for another key": forged_entry(key, forged.replace(key.encode(), b"0" * 64)),
        "a pickle (the old format) with code in it": forged_entry(key, evil),
        "a rule with a field no rule has": forged_entry(key, forged.replace(b'"rules": []', b'"rules": [{"x": 1}]')),
        "not ours at all": b"garbage",
    }
    for name, blob in cases.items():
        entry.write_bytes(blob)
        entry.chmod(0o600)
        assert decision(fast("claude-code", rm, policy, db, env)) == "deny", name
        assert not marker.exists(), name
        assert entry.read_bytes() == original, name  # rebuilt from the file
    # A consistent entry is only read when nobody else can have written it.
    entry.write_bytes(forged_entry(key, forged))
    for mode in (0o620, 0o602):
        entry.chmod(mode)
        assert decision(fast("claude-code", rm, policy, db, env)) == "deny", oct(mode)
        entry.write_bytes(forged_entry(key, forged))
    entry.chmod(0o600)
    entry.parent.chmod(0o770)
    assert decision(fast("claude-code", rm, policy, db, env)) == "deny"  # group-writable directory: not read
    entry.parent.chmod(0o700)
    entry.unlink()
    entry.symlink_to(tmp_path / "elsewhere.policy")
    (tmp_path / "elsewhere.policy").write_bytes(forged_entry(key, forged))
    assert decision(fast("claude-code", rm, policy, db, env)) == "deny"  # never followed through a symlink
    # (the check that a forged entry would be obeyed if trusted: this is what the guards keep out)
    entry.unlink()
    entry.write_bytes(forged_entry(key, forged))
    entry.chmod(0o600)
    assert decision(fast("claude-code", rm, policy, db, env)) == "allow"
    assert verified(db)


@pytest.mark.parametrize("argv,environ", [
    ([], {"AEGIS_POLICY": "a.yaml b.yaml"}),
    ([], {"AEGIS_POLICY": "", "AEGIS_AUDIT_DB": ""}),
    ([], {"AEGIS_POLICY": f"a.yaml{os.pathsep}b.yaml", "AEGIS_AUDIT_DB": "env.db"}),
    (["-p", "x.yaml", "--policy=y.yaml", "-pz.yaml"], {"AEGIS_POLICY": "ignored.yaml"}),
    (["-p", "-"], {}),
    (["-p", "--audit-db"], {}),
    (["-p", ""], {}),
    (["--audit-db", "d.db", "--audit-db=e.db", "-p", "p.yaml"], {"AEGIS_AUDIT_DB": "env.db"}),
    (["--matcher", "Bash", "-p", "p.yaml"], {}),
    (["-p", "p.yaml", "--matcher=Bash"], {}),
    (["-p", "p.yaml", "--approvals", "queue"], {}),
    (["-p", "p.yaml", "--approvals=queue", "--approval-timeout", "2.5"], {}),
    (["-p", "p.yaml", "--approval-timeout=9", "--approvals", "agent"], {}),
])
@pytest.mark.parametrize("agent", ["claude-code", "codex", "gemini"])
def test_the_fast_parser_reads_options_as_the_typer_command_does(monkeypatch: pytest.MonkeyPatch, agent: str,
                                                                 argv: list[str], environ: dict[str, str]) -> None:
    from aegis_cli.cli import hook_cmds
    from aegis_cli.cli._common import split_policy_paths

    seen: list[tuple[list[str], str, float | None]] = []
    monkeypatch.setattr(hook_cmds, "_hook", lambda a, policy, audit_db, approvals, timeout, *rest, **kw: seen.append(
        (split_policy_paths(policy), audit_db, timeout if approvals == "queue" else None)))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    result = CliRunner().invoke(app, ["hook", agent, *argv], env={**{k: None for k in os.environ
                                                                  if k.startswith("AEGIS_")}, **environ})
    parsed = command.parse(agent, argv, {**clean, **environ})
    if result.exit_code != 0:  # codex has no --matcher: Typer refuses it, and the fast parser hands it over
        assert parsed is None and any(a.startswith("--matcher") for a in argv) and agent == "codex", result.output
        return
    assert seen == [parsed]


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--print-settings", "-p", "p.yaml"], ["--nope"], ["stray"],
                                  ["-p"], ["--server", "http://127.0.0.1:1"], ["--policy"],
                                  ["--approvals", "tty"], ["--approval-timeout", "0"], ["--approval-timeout", "nan"],
                                  ["--approval-timeout", "soon"], ["--approvals"]])
def test_the_fast_parser_hands_everything_else_to_typer(argv: list[str]) -> None:
    assert command.parse("claude-code", argv, {}) is None


def test_fast_path_fails_closed_in_one_line(tmp_path: Path, policy: Path, env: dict[str, str]) -> None:
    (tmp_path / "dir.db").mkdir()
    proc = fast("codex", codex("Bash", {"command": "ls"}), policy, tmp_path / "dir.db", env)
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1 and "audit" in proc.stderr
    proc = fast("codex", codex("Bash", {"command": "ls"}), tmp_path / "missing.yaml", tmp_path / "a.db", env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no such file" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "aegis_cli", "hook", "gemini", "--bogus"], input="{}",
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and "No such option" in proc.stderr  # Typer's usage error, as before


# -- the same hooks from aegis serve ---------------------------------------------------------------------

@pytest.fixture
def server(tmp_path: Path, policy: Path, audit_target: str) -> Any:
    with ServeProcess(tmp_path, policy=policy, args=["--tokens", str(tokens_file(tmp_path)), "--no-watch"],
                      audit_db=audit_target) as srv:
        yield srv


def post(server: ServeProcess, agent: str, raw: str, token: str | None = TOKENS["agent"]) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{server.url}/api/v1/hooks/{agent}", content=raw.encode(), headers=headers, timeout=30)


def test_server_hook_endpoints_answer_like_the_local_hook(policy: Path, server: ServeProcess, new_trail: Any) -> None:
    local_db = new_trail("local")
    for agent, raw in EVENTS:
        answer = run_hook(agent, raw, [str(policy)], str(local_db))
        reply = post(server, agent, raw)
        if answer.exit_code == 0:
            assert reply.status_code == (200 if answer.stdout else 204), reply.text
            assert reply.text == answer.stdout
        else:
            assert reply.status_code == 422 and reply.json()["message"] == answer.stderr.strip()
    assert post(server, "codex", EVENTS[0][1], token=None).status_code == 401
    assert post(server, "codex", EVENTS[0][1], token="wrong-token-0123456789").status_code == 401
    served = bodies(server.audit_db)
    assert all(r["origin"]["client"] == "agent" for r in served if r["kind"] == "decision")
    for r in served:
        if r["origin"] is not None:
            r["origin"].pop("client", None)
    assert comparable(served) == comparable(bodies(local_db))
    assert verified(server.audit_db)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_command(agent: str, *args: str) -> str:
    result = CliRunner().invoke(app, ["hook", agent, "--print-settings", *args])
    assert result.exit_code == 0, result.output
    if agent == "codex":
        import tomllib

        return tomllib.loads(result.stdout)["hooks"]["PreToolUse"][0]["hooks"][0]["command"]
    events = json.loads(result.stdout)["hooks"]
    return next(iter(events.values()))[0]["hooks"][0]["command"]


@pytest.mark.parametrize("agent", ["claude-code", "codex", "gemini"])
def test_server_settings_post_with_curl_and_block_when_the_server_is_down(
        tmp_path: Path, policy: Path, server: ServeProcess, agent: str) -> None:
    raw = {"claude-code": claude("Bash", {"command": "rm -rf build"}), "codex": codex("Bash", {"command": "rm -rf b"}),
           "gemini": gemini("run_shell_command", {"command": "rm -rf build"})}[agent]
    env = {**os.environ, "AEGIS_HOOK_TOKEN": TOKENS["agent"]}
    up = settings_command(agent, "--server", server.url, "--token-env", "AEGIS_HOOK_TOKEN")
    assert up.startswith("curl -sf --max-time 10 ") and TOKENS["agent"] not in up
    proc = subprocess.run(["bash", "-c", up], input=raw, capture_output=True, text=True, env=env, timeout=60)
    local = run_hook(agent, raw, [str(policy)], None)
    assert (proc.returncode, proc.stdout) == (0, local.stdout) and "deny" in proc.stdout
    # unreadable for this agent, a missing token: the server answers non-2xx, the hook blocks
    for stdin, environ in ((claude("Bash", {"command": "ls"}) if agent != "claude-code" else gemini("x", {}), env),
                           (raw, {k: v for k, v in env.items() if k != "AEGIS_HOOK_TOKEN"})):
        proc = subprocess.run(["bash", "-c", up], input=stdin, capture_output=True, text=True, env=environ, timeout=60)
        assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    down = settings_command(agent, "--server", f"http://127.0.0.1:{closed_port()}")
    proc = subprocess.run(["bash", "-c", down], input=raw, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "blocked (fail closed)" in proc.stderr and "curl exit 7" in proc.stderr


def test_server_settings_block_once_the_server_is_stopped(tmp_path: Path, policy: Path, audit_target: str) -> None:
    with ServeProcess(tmp_path, policy=policy, args=["--no-watch"], audit_db=audit_target) as srv:
        cmd = settings_command("claude-code", "--server", srv.url)
        ok = subprocess.run(["sh", "-c", cmd], input=claude("Bash", {"command": "ls"}), capture_output=True, text=True,
                            timeout=60)
        assert ok.returncode == 0 and '"allow"' in ok.stdout
        srv.stop()
    proc = subprocess.run(["sh", "-c", cmd], input=claude("Bash", {"command": "ls"}), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stdout == "" and "blocked (fail closed)" in proc.stderr


def test_server_settings_usage() -> None:
    for args, message in ((["--server", "ftp://x"], "http://"),
                          (["--server", "http://h", "--token-env", "A B"], "environment variable"),
                          (["-p", "p.yaml", "--token-env", "T"], "--server")):
        result = CliRunner().invoke(app, ["hook", "codex", "--print-settings", *args])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.output
    assert CliRunner().invoke(app, ["hook", "codex", "--server", "http://h"], input="{}").exit_code == 2


def test_every_rule_field_survives_the_cache_and_what_json_would_change_is_not_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aegis_cli import Policy
    from aegis_cli.engine.policy import Rule

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    full = tmp_path / "full.yaml"
    full.write_text('version: "1"\nname: every-field\ndefaults: {risk_level: high, approval: block, reason: no, '
                    'tags: [pii]}\naudit: {redact: ["*secret*"]}\ntools: {fs_read: {type: read, target: fs}}\n'
                    'rules:\n  - name: r\n    description: d\n    match: {type: "de*", target: prod, agent: bot}\n'
                    '    conditions: {param_eq: {n: 3}, param_matches: {q: "^é\\\\d"}}\n'
                    '    risk_level: critical\n    approval: block\n    reason: why\n    tags: [phi, pii]\n'
                    '  - match: {type: read}\n    risk_level: low\n    approval: auto\n')
    first = policy_cache.load([str(full)])
    (entry,) = (tmp_path / "cache" / "aegis").glob("*.policy")
    again = policy_cache.load([str(full)])  # from the entry this time
    assert again is not first and again.hash == first.hash == Policy.from_yaml(full).hash
    assert again.rules == first.rules and again.tools == first.tools and again.redact == first.redact
    rule = again.rules[0]
    defaults = Rule("r")
    unset = [f for f in rule._fields if getattr(rule, f) == getattr(defaults, f) and f not in ("name", "named")]
    assert unset == [], f"give the test policy a value for {unset}, so the cache is shown to carry it"
    # A policy built in code with a tuple where JSON gives back a list decides alike but is not equal
    # rule for rule after a round trip: it is never cached, only loaded the normal way.
    entry.unlink()
    built = Policy(rules=[replace_conditions(first.rules[0], {"param_in": {"n": (1, 2)}})])
    policy_cache._write("k" * 64, built)
    assert list((tmp_path / "cache" / "aegis").glob("*.policy")) == []


def replace_conditions(rule: Any, conditions: Any) -> Any:
    return rule.replace(conditions=conditions)
