"""The documentation: every runnable code block runs, the README tour runs in a fresh venv, the
generated pages are in sync, the old README's subjects are all still findable, the site builds.

Convention (CONTRIBUTING.md, "Code blocks are tested"): blocks fenced sh/bash/console/python run,
in order, one fresh directory per page; `<!-- not-run: REASON -->`, `<!-- file: PATH -->` and
`<!-- exit: N -->` on the line before a block change that.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNABLE = {"sh", "bash", "console", "python"}
MARKER = re.compile(r"^<!--\s*(not-run|file|exit):\s*(.*?)\s*-->$")


@dataclass
class Block:
    page: str
    line: int
    lang: str
    text: str
    marker: tuple[str, str] | None


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\w*)", lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2), i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        mk = MARKER.match(lines[j].strip()) if j >= 0 else None
        out.append(Block(str(path.relative_to(ROOT)), start + 1, lang, "\n".join(body) + "\n",
                         (mk.group(1), mk.group(2)) if mk else None))
        i += 1
    return out


def doc_pages() -> list[Path]:
    return [ROOT / "CONTRIBUTING.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").rglob("*.md"))]


def console_commands(text: str) -> str:
    cmds, current = [], ""
    for line in text.splitlines():
        if current:
            current += "\n" + line
        elif line.startswith("$ "):
            current = line[2:]
        if current and not current.endswith("\\"):
            cmds.append(current)
            current = ""
    return "\n".join(cmds) + "\n"


def prepare(workdir: Path) -> None:
    shutil.copytree(ROOT / "examples", workdir / "examples")
    shutil.copy(ROOT / "examples" / "policy.yaml", workdir / "policy.yaml")
    shutil.copy(ROOT / "examples" / "actions.jsonl", workdir / "actions.jsonl")


def run_block(block: Block, workdir: Path, env: dict[str, str], timeout: float = 120) -> None:
    kind, value = block.marker or (None, "")
    if kind == "file":
        target = workdir / value
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text, encoding="utf-8")
        return
    if kind == "not-run" or block.lang not in RUNNABLE:
        return
    expected = int(value) if kind == "exit" else 0
    if block.lang == "python":
        argv = [sys.executable, "-c", block.text]
    else:
        script = console_commands(block.text) if block.lang == "console" else block.text
        argv = ["bash", "-e", "-o", "pipefail", "-c", script]
    proc = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, start_new_session=True)
    assert proc.returncode == expected, (
        f"{block.page}:{block.line}: {block.lang} block exited {proc.returncode}, expected {expected}\n"
        f"--- block\n{block.text}--- stdout\n{proc.stdout[-3000:]}--- stderr\n{proc.stderr[-3000:]}")


def base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["HOME"] = str(tmp / "home")
    env["NO_COLOR"] = "1"
    (tmp / "home").mkdir(exist_ok=True)
    return env


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_runnable_blocks_in_docs_run(page: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    prepare(workdir)
    env = base_env(tmp_path)
    for block in blocks(page):
        run_block(block, workdir, env)


def test_every_not_run_marker_gives_a_reason() -> None:
    for page in [ROOT / "README.md", *doc_pages()]:
        for block in blocks(page):
            if block.marker and block.marker[0] == "not-run":
                assert len(block.marker[1]) >= 10, f"{block.page}:{block.line}: not-run needs a reason"
            if block.marker and block.marker[0] == "exit":
                assert block.marker[1].isdigit(), f"{block.page}:{block.line}: exit takes a number"


def test_the_convention_is_not_vacuous() -> None:
    """Most shell and Python blocks in the docs really run; a page of not-run markers would pass silently."""
    all_blocks = [b for p in doc_pages() for b in blocks(p) if b.lang in RUNNABLE]
    run = [b for b in all_blocks if not b.marker]
    assert len(run) >= 12, [f"{b.page}:{b.line}" for b in all_blocks]


@pytest.mark.timeout(600)
def test_readme_tour_in_a_fresh_venv(tmp_path: Path) -> None:
    """Every runnable README block, in order, as written, in a copy of the checkout with a new venv first on PATH.

    The venv sees the system site-packages, so `pip install .` builds and installs aegis itself into
    the venv (the `aegis` on PATH is the venv's) while its dependencies are found already installed
    and nothing is downloaded: PIP_NO_INDEX, and PIP_NO_BUILD_ISOLATION=0 (which pip reads as
    --no-build-isolation: the build backend, hatchling, is the one the test extra installed).
    """
    checkout = tmp_path / "aegis"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "aegis_audit.db*", "node_modules", ".git", "site")
    checkout.mkdir()
    for name in ("aegis_cli", "schemas", "examples", "completions"):
        shutil.copytree(ROOT / name, checkout / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, checkout / name)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    env = base_env(tmp_path)
    env["PATH"] = os.pathsep.join([str(env_dir / "bin"), env["PATH"]])
    env["VIRTUAL_ENV"] = str(env_dir)
    env.update(PIP_NO_BUILD_ISOLATION="0", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    # the venv has no pip of its own (with_pip would take a while); `pip` runs the system pip inside it
    (env_dir / "bin" / "pip").write_text(f"#!/bin/sh\nexec {env_dir / 'bin' / 'python'} -m pip \"$@\"\n")
    (env_dir / "bin" / "pip").chmod(0o755)
    readme = blocks(ROOT / "README.md")
    ran = 0
    for block in readme:
        if block.lang == "python" and not block.marker:
            block = Block(block.page, block.line, "sh", f"python - <<'PY'\n{block.text}PY\n", None)
        run_block(block, checkout, env, timeout=300)
        ran += block.lang in RUNNABLE and not block.marker
    assert ran >= 8
    installed = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import aegis_cli; print(aegis_cli.__file__)"],
                               capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout
    assert str(env_dir) in installed, f"aegis was not installed into the fresh venv: {installed}"
    assert (checkout / "policy.yaml").exists() and (checkout / "aegis_audit.db").exists()


def test_cli_reference_is_in_sync_with_the_app() -> None:
    from aegis_cli.cli.docgen import render

    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == render(), (
        "docs/cli.md is out of date: run python -m aegis_cli.cli.docgen --write docs/cli.md")


def test_python_api_page_documents_every_public_name() -> None:
    import importlib

    import aegis_cli

    text = (ROOT / "docs" / "python-api.md").read_text(encoding="utf-8")
    targets = re.findall(r"^::: ([\w.]+)$", text, re.M)
    documented = set()
    for target in targets:
        module, _, name = target.rpartition(".")
        documented.add(id(getattr(importlib.import_module(module), name)))
    missing = [n for n in aegis_cli.__all__ if n != "__version__" and id(getattr(aegis_cli, n)) not in documented]
    assert missing == [], f"docs/python-api.md lacks ::: entries for {missing}"


# The old README's section headings (at the commit before it became the front door), and the page
# where each subject is now found. A heading's words must appear there as a heading.
OLD_README_HEADINGS = {
    "Quick start": "docs/index.md",
    "The policy language": "docs/policy.md",
    "Tool calls become actions": "docs/tool-calls.md",
    "Python API": "docs/python-api.md",
    "CLI reference": "docs/cli.md",
    "Simulate a policy against recorded agent traces": "docs/simulate.md",
    "Trace formats": "docs/simulate.md",
    "The `aegis wrap --record-trace` format (MCP)": "docs/simulate.md",
    "Policy tests for CI: `aegis test`": "docs/policy-tests.md",
    "pytest": "docs/policy-tests.md",
    "GitHub Action, pre-commit, SARIF": "docs/policy-tests.md",
    "The audit trail": "docs/audit.md",
    "What is recorded": "docs/audit.md",
    "Tamper evidence": "docs/audit.md",
    "Durability and concurrency": "docs/audit.md",
    "Export": "docs/audit.md",
    "Approvals from any shell": "docs/runtime.md",
    "From Python": "docs/audit.md",
    "The runtime: governed execution in your agent": "docs/runtime.md",
    "A complete example": "docs/runtime.md",
    "Results": "docs/runtime.md",
    "Plans: decide everything first, then run, fail-fast": "docs/runtime.md",
    "Without an event loop": "docs/runtime.md",
    "Executors": "docs/runtime.md",
    "Approval handlers": "docs/runtime.md",
    "Hot reload": "docs/runtime.md",
    "Auditing": "docs/runtime.md",
    "`aegis serve`: the REST API and the approvals page": "docs/serve.md",
    "Tokens": "docs/serve.md",
    "curl": "docs/serve.md",
    "API reference": "docs/serve.md",
    "The approvals page": "docs/serve.md",
    "Govern agents you did not write: `aegis wrap` and `aegis hook`": "docs/wrap.md",
    "MCP servers: `aegis wrap --mcp`": "docs/wrap.md",
    "Claude Code: `aegis hook claude-code`": "docs/wrap.md",
    "Any other agent: `aegis wrap -- COMMAND`": "docs/wrap.md",
    "Performance": "docs/performance.md",
    "Project layout": "ARCHITECTURE.md",
}


def test_every_old_readme_section_maps_to_a_page_that_has_it() -> None:
    for heading, page in OLD_README_HEADINGS.items():
        text = (ROOT / page).read_text(encoding="utf-8")
        if heading == "Project layout":  # the code map replaced the layout listing
            assert "## Code map" in text and "aegis_cli/engine/" in text
            continue
        if heading == "CLI reference":
            assert text.startswith("# CLI reference")
            continue
        if heading == "Quick start":
            assert "## Quick start" in text
            continue
        pattern = rf"^#+ {re.escape(heading)}\s*$"
        assert re.search(pattern, text, re.M), f"old README section {heading!r} not found as a heading in {page}"


def test_readme_is_a_front_door() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 200 <= len(text.splitlines()) <= 300
    for page in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / page).exists(), page


def test_deploy_example_keeps_the_agent_off_the_network() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "examples" / "deploy" / "docker-compose.yml").read_text())
    nets, services = compose["networks"], compose["services"]
    assert nets["agents"]["internal"] is True and not nets["egress"].get("internal")
    agent, gate = services["agent"], services["aegis"]
    assert list(agent["networks"]) == ["agents"] and "ports" not in agent
    assert set(gate["networks"]) == {"agents", "egress"}
    assert agent["command"][:2] == ["aegis", "wrap"]
    for svc in (agent, gate):
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in svc["security_opt"]
        assert not any("docker.sock" in str(v) for v in svc.get("volumes", []))
    assert gate["user"] != "0:0" and "--reuid=10002" in agent["command"]
