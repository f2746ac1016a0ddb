"""Median microseconds per Policy.evaluate at 100, 1,000 and 10,000 rules.

    python bench/bench_engine.py            # prints a table
    python bench/bench_engine.py --quick    # fewer repeats
    python bench/bench_engine.py --compare /tmp/venv-agent-aegis/bin/python
        # also time agent-aegis 1.0 (installed in that interpreter: pip install agent-aegis==1.0.0)
        # on the same generated policies and actions

Policies are generated: 90% of rules match a literal type (``tool_123``), 10% a glob
(``tool_12*``), a third carry a parameter condition, targets are globs or literals. Actions are
drawn from 200 (type, target, agent) keys, as a fleet of agents calling a fixed set of tools
would. "new target" gives every action a target never seen before (paths, record ids), which
defeats the per-key candidate cache; "new type" also makes every type new (a type matching no
literal rule, only globs), which defeats the per-type cache too: the worst case.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aegis_cli import Action, Policy


def make_policy(n: int, seed: int = 1) -> Policy:
    rng = random.Random(seed)
    rules = []
    for i in range(n):
        rule: dict = {"name": f"r{i}", "risk_level": rng.choice(["low", "medium", "high", "critical"]),
                      "approval": rng.choice(["auto", "approve", "block"])}
        type_ = f"tool_{i}" if rng.random() < 0.9 else f"tool_{i % 97}*"
        target = rng.choice(["prod*", "staging", "*", f"svc_{i % 50}"])
        rule["match"] = {"type": type_, "target": target}
        if rng.random() < 0.33:
            rule["conditions"] = {"param_gt": {"count": rng.randint(1, 100)}}
        rules.append(rule)
    return Policy.from_dict({"version": "1", "rules": rules})


def make_actions(n_rules: int, count: int, distinct: bool, seed: int = 2, run: int = 0,
                 new_types: bool = False) -> list[Action]:
    rng = random.Random(seed)
    keys = [(f"tool_{rng.randrange(n_rules)}", rng.choice(["production", "staging", "svc_7", "dev"]),
             rng.choice(["a1", "a2", ""])) for _ in range(200)]
    out = []
    for i in range(count):
        t, tgt, agent = keys[i % len(keys)]
        if distinct:
            tgt = f"{tgt}-{run}-{i}"
        if new_types:
            t = f"{t}-{run}-{i}"
        out.append(Action(t, tgt, {"count": rng.randint(0, 200)}, agent))
    return out


def per_eval_us(policy: Policy, batches: list[list[Action]]) -> float:
    evaluate = policy.evaluate
    samples = []
    for actions in batches:
        start = time.perf_counter()
        for a in actions:
            evaluate(a)
        samples.append((time.perf_counter() - start) / len(actions) * 1e6)
    return statistics.median(samples)


_AGENT_AEGIS = """
import json, statistics, sys, time
from aegis.core.action import Action
from aegis.core.policy import Policy
spec = json.load(sys.stdin)
policy = Policy.from_dict(spec["policy"])
actions = [Action(a["type"], a["target"], params=a["params"], agent_id=a["agent"]) for a in spec["actions"]]
samples = []
for _ in range(spec["repeats"]):
    t = time.perf_counter()
    for a in actions:
        policy.evaluate(a)
    samples.append((time.perf_counter() - t) / len(actions) * 1e6)
print(statistics.median(samples))
"""


def agent_aegis_us(python: str, n: int, repeats: int) -> float:
    """Median us/eval of agent-aegis 1.0 in another interpreter, same policy and actions."""
    import json
    import subprocess

    policy = make_policy(n).to_dict()
    actions = [{"type": a.type, "target": a.target, "params": a.params, "agent": a.agent}
               for a in make_actions(n, 2_000 if n >= 10_000 else 20_000, False)]
    spec = json.dumps({"policy": policy, "actions": actions, "repeats": repeats})
    out = subprocess.run([python, "-c", _AGENT_AEGIS], input=spec, capture_output=True, text=True, check=True)
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--compare", metavar="PYTHON", help="interpreter with agent-aegis 1.0 installed")
    args = parser.parse_args()
    repeats = 5 if args.quick else 15
    print(f"python {sys.version.split()[0]}; median of {repeats} runs (20,000 evaluations warm, 10,000 otherwise)")
    extra = f" {'agent-aegis us':>15} {'ratio':>7}" if args.compare else ""
    print(f"{'rules':>7} {'compile ms':>11} {'warm us/eval':>13} {'new target us':>14} {'new type us':>12}{extra}")
    for n in (100, 1_000, 10_000):
        t0 = time.perf_counter()
        policy = make_policy(n)
        compile_ms = (time.perf_counter() - t0) * 1e3
        warm_actions = make_actions(n, 20_000, False)
        warm = per_eval_us(policy, [warm_actions] * repeats)
        # every action of every run has a key the policy has never seen
        cold = per_eval_us(policy, [make_actions(n, 10_000, True, run=r) for r in range(repeats)])
        colder = per_eval_us(policy, [make_actions(n, 10_000, True, run=100 + r, new_types=True)
                                      for r in range(repeats)])
        line = f"{n:>7,} {compile_ms:>11.1f} {warm:>13.2f} {cold:>14.2f} {colder:>12.2f}"
        if args.compare:
            theirs = agent_aegis_us(args.compare, n, 3)
            line += f" {theirs:>15.2f} {theirs / warm:>6.0f}x"
        print(line)


if __name__ == "__main__":
    main()
