"""The shape of the project: what ships, what starts fast, what stays in sync."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

HEAVY = ("typer", "rich", "httpx", "anthropic", "openai", "sqlite_utils", "starlette", "uvicorn", "mcp",
         "watchdog")


def _imported_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    return {m.split(".")[0] for m in out.stdout.split()}


def test_engine_core_imports_nothing_heavy() -> None:
    mods = _imported_after(
        "import aegis_cli, aegis_cli.engine.policy, aegis_cli.engine.loader, aegis_cli.engine.conditions,"
        " aegis_cli.engine.matching, aegis_cli.engine.toolcalls\n"
        "from aegis_cli import Policy, Action\n"
        "Policy.from_yaml('examples/policy.yaml').evaluate(Action('read', 'crm'))"
    )
    assert not (mods & set(HEAVY)), mods & set(HEAVY)


def _aegis_imports(at_run_time: bool = False) -> dict[str, set[str]]:
    """Every aegis_cli module and the aegis_cli modules it imports, at the top or inside a function
    (``at_run_time``: leaving out those under ``if TYPE_CHECKING:``, which only a type checker reads)."""
    import ast

    graph: dict[str, set[str]] = {}
    for path in (ROOT / "aegis_cli").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = ".".join(parts[:-1])
        found: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                       for n in ast.walk(block)} if at_run_time else set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base]).strip(".")
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
        graph[module] = {m for m in found if m.startswith("aegis_cli")}
    for deps in graph.values():  # keep only names that are modules ("from x import y" may name a class)
        deps.intersection_update(graph)
        deps.discard("aegis_cli")  # the package's __init__ re-exports; importing it is not a layer edge
    return graph


def test_engine_imports_nothing_outside_the_engine() -> None:
    graph = _aegis_imports()
    engine = {m for m in graph if m.startswith("aegis_cli.engine")}
    assert len(engine) >= 9
    outside = {m: sorted(d - engine) for m in engine if (d := graph[m] - engine)}
    assert outside == {}


def test_no_import_circles() -> None:
    """No module reaches itself through imports (lazy ones included): layers point one way. (A module may
    name its caller's types for the type checker: those imports never run.)"""
    graph = _aegis_imports(at_run_time=True)
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if d == m or (m.startswith(d + ".")):  # a module importing its own package's __init__
                continue
            if state.get(d) == 1:
                cycles.append(" -> ".join([*stack[stack.index(d):], d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == []


def test_cli_help_does_not_import_servers_or_sdks() -> None:
    mods = _imported_after("import sys; sys.argv=['aegis','--help']\n"
                           "from aegis_cli.cli import app\n"
                           "try:\n    app(prog_name='aegis')\nexcept SystemExit:\n    pass")
    heavy = {"httpx", "anthropic", "openai", "starlette", "uvicorn", "mcp", "watchdog", "sqlite_utils", "jsonschema"}
    assert not (mods & heavy), mods & heavy


def test_nothing_imports_the_cli() -> None:
    offenders = []
    for path in (ROOT / "aegis_cli").rglob("*.py"):
        if path.relative_to(ROOT / "aegis_cli").parts[0] in ("cli", "__main__.py"):
            continue
        text = path.read_text()
        if "aegis_cli.cli" in text or "from aegis_cli import cli" in text:
            offenders.append(str(path))
    assert offenders == []


def test_completions_are_in_sync_with_the_app() -> None:
    from aegis_cli.cli.completion import scripts

    for name, text in scripts().items():
        checked_in = (ROOT / "completions" / name).read_text()
        assert checked_in == text, (
            f"completions/{name} is out of date: run python -m aegis_cli.cli.completion --write completions"
        )


def test_bash_completion_completes_commands_and_choices(tmp_path: Path) -> None:
    script = ROOT / "completions" / "aegis.bash"
    probe = (
        f"source {script}\n"
        "COMP_WORDS=(aegis val); COMP_CWORD=1; _aegis; echo \"${COMPREPLY[@]}\"\n"
        "COMP_WORDS=(aegis evaluate --fail-on ''); COMP_CWORD=3; _aegis; echo \"${COMPREPLY[@]}\"\n"
    )
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["validate", "block approve never"]


def test_readme_test_command_is_what_ci_runs() -> None:
    run = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in run.splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert commands[0] == ".ci/setup && python -m pytest -q"
    assert commands[0] in (ROOT / "README.md").read_text()
    assert any("mkdocs build --strict" in c for c in commands[1:])


@pytest.mark.timeout(300)
def test_wheel_ships_schemas_and_templates(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("aegis_cli-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for schema in (ROOT / "schemas").glob("*.json"):
        assert f"aegis_cli/schemas/{schema.name}" in names
    assert "aegis_cli/templates/starter.yaml" in names
    packaged = json.loads(zipfile.ZipFile(wheel).read("aegis_cli/schemas/policy.schema.json"))
    assert packaged == json.loads((ROOT / "schemas" / "policy.schema.json").read_text())
