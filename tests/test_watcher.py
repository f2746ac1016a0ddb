"""PolicyWatcher against a real filesystem: in-place edits, editor-style renames, broken edits."""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aegis_cli import Action, Policy, PolicyError
from aegis_cli.runtime.core import Runtime, Status
from aegis_cli.runtime.watcher import PolicyWatcher

V1 = """version: "1"
rules:
  - name: reads
    match: {type: read}
    risk_level: low
    approval: auto
"""
V2 = V1.replace("approval: auto", "approval: block")
BROKEN = V1.replace("approval: auto", "approval: sometimes")

WAIT = 10  # seconds; a watcher that works answers in well under one


class Events:
    def __init__(self) -> None:
        self.q: queue.Queue[tuple[str, Any]] = queue.Queue()

    def changed(self, policy: Policy) -> None:
        self.q.put(("change", policy))

    def failed(self, error: PolicyError) -> None:
        self.q.put(("error", error))

    def next(self) -> tuple[str, Any]:
        return self.q.get(timeout=WAIT)

    def none_within(self, seconds: float) -> bool:
        try:
            self.q.get(timeout=seconds)
        except queue.Empty:
            return True
        return False


@pytest.fixture
def setup(tmp_path: Path) -> Any:
    path = tmp_path / "policy.yaml"
    path.write_text(V1)
    events = Events()
    watcher = PolicyWatcher([path], events.changed, events.failed, debounce=0.05).start()
    yield path, events, watcher
    watcher.stop()


def test_an_edit_in_place_is_picked_up(setup: Any) -> None:
    path, events, watcher = setup
    path.write_text(V2)
    kind, policy = events.next()
    assert kind == "change" and policy.rules[0].approval.value == "block"
    assert watcher.policy is policy and watcher.reloads == 1


def test_an_editor_style_rename_is_picked_up(setup: Any) -> None:
    path, events, _ = setup
    tmp = path.with_name(".policy.yaml.swp")
    tmp.write_text(V2)
    os.replace(tmp, path)  # vim, VS Code, sed -i and ConfigMap updates save like this
    kind, policy = events.next()
    assert kind == "change" and policy.rules[0].approval.value == "block"
    path.write_text(V1)  # and the watch survives the inode change
    kind, policy = events.next()
    assert kind == "change" and policy.rules[0].approval.value == "auto"


def test_a_broken_edit_is_refused_and_reported_with_its_location(setup: Any) -> None:
    path, events, watcher = setup
    before = watcher.policy
    path.write_text(BROKEN)
    kind, error = events.next()
    assert kind == "error" and isinstance(error, PolicyError)
    assert error.file == str(path) and error.line == 6
    assert watcher.policy is before and watcher.errors == 1
    path.write_text(V2)  # fixing it is picked up as usual
    kind, policy = events.next()
    assert kind == "change" and policy.hash != before.hash


def test_same_content_and_other_files_are_not_changes(setup: Any) -> None:
    path, events, watcher = setup
    path.write_text(V1)  # touched, same policy
    (path.parent / "notes.txt").write_text("unrelated")
    assert events.none_within(0.6)
    assert watcher.reloads == 0


def test_a_deleted_file_keeps_the_policy_until_it_returns(setup: Any) -> None:
    path, events, watcher = setup
    before = watcher.policy
    path.unlink()
    kind, error = events.next()
    assert kind == "error" and "no such file" in str(error)
    assert watcher.policy is before
    path.write_text(V2)
    assert events.next()[0] == "change"


def test_runtime_watch_swaps_the_policy_and_audits_the_change(tmp_path: Path) -> None:
    from aegis_cli.audit import SQLiteAuditLogger

    path = tmp_path / "policy.yaml"
    path.write_text(V1)
    db = tmp_path / "audit.db"
    rt = Runtime(lambda a: "ok", Policy.from_yaml(path), audit=SQLiteAuditLogger(db))
    old = rt.policy.hash
    errors: list[PolicyError] = []
    watcher = rt.watch(path, debounce=0.05, on_error=errors.append)
    try:
        assert rt.run_one_sync(Action("read", "x")).status is Status.OK
        path.write_text(BROKEN)
        _wait_for(lambda: errors)
        assert rt.policy.hash == old and rt.run_one_sync(Action("read", "x")).status is Status.OK
        path.write_text(V2)
        _wait_for(lambda: rt.policy.hash != old)
        blocked = rt.run_one_sync(Action("read", "x"))
        assert blocked.status is Status.BLOCKED and blocked.decision.policy_hash == rt.policy.hash
    finally:
        watcher.stop()
    with sqlite3.connect(db) as conn:
        bodies = [json.loads(b) for (b,) in conn.execute("SELECT body FROM audit ORDER BY id")]
    decisions = [b["policy_hash"] for b in bodies if b["kind"] == "decision"]
    assert decisions == [old, old, rt.policy.hash]  # the audit says which policy decided each action
    (change,) = [b["data"] for b in bodies if b["kind"] == "policy_change"]
    assert change["old_hash"] == old and change["new_hash"] == rt.policy.hash and change["by"] == "watcher"


def test_start_refuses_an_invalid_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BROKEN)
    with pytest.raises(PolicyError):
        PolicyWatcher([path], print, print).start()


def _wait_for(condition: Any) -> None:
    import time

    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_without_watchdog_hot_reload_names_the_extra_in_one_line() -> None:
    """The core install has no watchdog: runtime.watch() and the import say which extra brings it."""
    probe = ("import sys; sys.modules['watchdog'] = None\n"
             "from aegis_cli import Policy, Runtime\n"
             "runtime = Runtime(policy=Policy.from_string('version: \"1\"\\nrules: []\\n'))\n"
             "try:\n    runtime.watch('policy.yaml')\n"
             "except ImportError as exc:\n    print(exc)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (
        0, "policy hot reload needs watchdog: pip install 'aegis-cli[runtime]'\n", "")
