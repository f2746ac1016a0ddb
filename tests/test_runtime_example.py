"""The README's runnable example, run the way a user runs it, approved from a second shell."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "runtime_example.py"


def aegis(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aegis_cli", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=30)


@pytest.mark.skipif(not (REPO / "examples" / "policy.yaml").exists(), reason="examples/policy.yaml missing")
def test_runtime_example_with_queued_approval(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), "--queue", "--audit-db", str(db), "--timeout", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        pending: list[dict[str, object]] = []
        while not pending and time.monotonic() < deadline:
            time.sleep(0.1)
            if db.exists():
                listed = aegis("approvals", "list", "--audit-db", str(db), "--format", "json")
                pending = json.loads(listed.stdout) if listed.returncode == 0 and listed.stdout.strip() else []
        assert pending, "the example never queued its approval"
        (request,) = pending
        assert request["rule"] == "large_transfers"
        answered = aegis("approvals", "approve", str(request["id"]), "--note", "ok by finance", "--audit-db", str(db))
        assert answered.returncode == 0, answered.stderr
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err  # the blocked delete makes the run unsuccessful, as it should
    assert "approved by" in out and "ok by finance" in out
    assert "blocked   delete on production" in out and "skipped   send on email" in out
    verify = aegis("audit", "verify", "--audit-db", str(db))
    assert verify.returncode == 0, verify.stdout + verify.stderr
