"""CLI start-up and streaming figures.

    python bench/bench_cli.py

Prints the median wall time of `aegis --help` and `aegis validate examples/policy.yaml` (targets:
validate under 0.3 s), and the throughput of `aegis evaluate -` over 200,000 JSON Lines actions read
from a file and from a pipe (target: at least 30,000 actions/s).
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AEGIS = shutil.which("aegis") or ""
POLICY = str(ROOT / "examples" / "policy.yaml")


def wall(cmd: list[str], runs: int = 15, **kw: object) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False, **kw)  # type: ignore[call-overload]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    base = [AEGIS] if AEGIS else [sys.executable, "-m", "aegis_cli"]
    print(f"command: {' '.join(base)}")
    print(f"python -c pass            {wall([sys.executable, '-c', 'pass']):.3f} s (interpreter floor)")
    print(f"aegis --help              {wall([*base, '--help']):.3f} s")
    print(f"aegis validate (example)  {wall([*base, 'validate', POLICY]):.3f} s")

    rng = random.Random(1)
    n = 200_000
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "actions.jsonl"
        with src.open("w") as f:
            for _ in range(n):
                f.write(json.dumps({
                    "type": rng.choice(["read", "delete", "transfer", "send", "Bash"]),
                    "target": rng.choice(["production", "crm", "payments", "email"]),
                    "params": {"count": rng.randint(0, 300), "amount": rng.randint(0, 5000), "currency": "USD",
                               "to": "a@example.com"},
                    "agent": "bot"}) + "\n")
        for label, shell in (("file ", f"{' '.join(base)} evaluate -p {POLICY} --input {src} > /dev/null"),
                             ("pipe ", f"cat {src} | {' '.join(base)} evaluate -p {POLICY} - > /dev/null")):
            seconds = wall(["bash", "-c", shell], runs=3)
            print(f"evaluate stream ({label}) {n:,} actions in {seconds:.2f} s = {n / seconds:,.0f} actions/s")


if __name__ == "__main__":
    main()
