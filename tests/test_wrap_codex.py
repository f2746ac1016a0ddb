"""How `aegis wrap` finds Codex in a command and points it at the proxy (aegis_cli.wrap.codex)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aegis_cli.wrap.codex import API_BASE, CHATGPT_BASE, CodexRefused, codex_index, plan


@pytest.mark.parametrize(("command", "index"), [
    (["codex", "exec", "hi"], 0), (["/usr/local/bin/codex"], 0), (["node", "/x/bin/codex.js", "exec"], 1),
    (["npx", "-y", "@openai/codex@0.171.0", "exec"], 2), (["npx", "codex"], 1), (["pnpm", "dlx", "@openai/codex"], 2),
    (["npx", "cowsay"], None), (["python", "codex"], None), (["codex-helper"], None), ([], None),
])
def test_codex_found_by_program_name(command: list[str], index: int | None) -> None:
    assert codex_index(command) == index


def home(tmp_path: Path, config: str, auth: dict[str, object] | None = None) -> dict[str, str]:
    (tmp_path / "config.toml").write_text(config)
    if auth is not None:
        (tmp_path / "auth.json").write_text(json.dumps(auth))
    return {"CODEX_HOME": str(tmp_path)}


def test_builtin_provider_upstream_and_override(tmp_path: Path) -> None:
    env = home(tmp_path, 'model = "gpt-5"\n')
    p = plan(["npx", "@openai/codex", "exec", "hi"], env)
    assert p is not None and p.key == "openai_base_url" and p.upstream == API_BASE
    assert p.pointed_at("http://127.0.0.1:1/openai/v1") == [
        "npx", "@openai/codex", "-c", 'openai_base_url="http://127.0.0.1:1/openai/v1"', "exec", "hi"]
    # signed in with ChatGPT, Codex's default endpoint is chatgpt.com
    env = home(tmp_path, 'model = "gpt-5"\n', {"auth_mode": "chatgpt", "tokens": {"id_token": "x"}})
    assert plan(["codex"], env).upstream == CHATGPT_BASE  # type: ignore[union-attr]
    assert plan(["codex"], {**env, "CODEX_API_KEY": "k"}).upstream == API_BASE  # type: ignore[union-attr]


def test_the_users_own_override_becomes_the_upstream_and_is_replaced(tmp_path: Path) -> None:
    env = home(tmp_path, 'openai_base_url = "https://from-config/v1"\n')
    p = plan(["codex", "exec", "-c", 'openai_base_url="https://gw.example/v1"', "hi"], env)
    assert p is not None and p.upstream == "https://gw.example/v1"
    assert p.pointed_at("P") == ["codex", "-c", 'openai_base_url="P"', "exec", "hi"]  # theirs would win: removed
    p = plan(["codex", "--config=openai_base_url=https://raw.example/v1", "exec"], env)
    assert p is not None and p.upstream == "https://raw.example/v1" and p.pointed_at("P")[3:] == ["exec"]


def test_custom_provider_from_config_profile_and_flags(tmp_path: Path) -> None:
    env = home(tmp_path, 'model_provider = "gw"\n[model_providers.gw]\nname = "gw"\nbase_url = "https://gw/v1"\n'
                         '[model_providers."my.corp"]\nbase_url = "https://corp/v1"\n')
    p = plan(["codex", "exec"], env)
    assert p is not None and (p.provider, p.key, p.upstream) == ("gw", "model_providers.gw.base_url", "https://gw/v1")
    p = plan(["codex", "-c", 'model_provider="my.corp"', "exec"], env)
    assert p is not None and p.key == 'model_providers."my.corp".base_url' and p.upstream == "https://corp/v1"
    (tmp_path / "work.config.toml").write_text('model_provider = "openai"\nopenai_base_url = "https://work/v1"\n')
    p = plan(["codex", "--profile", "work", "exec"], env)
    assert p is not None and (p.key, p.upstream) == ("openai_base_url", "https://work/v1")


@pytest.mark.parametrize(("command", "config", "says"), [
    (["codex", "--oss", "exec"], "", "--oss"),
    (["codex", "exec"], 'model_provider = "amazon-bedrock"\n', "SigV4"),
    (["codex", "-c", "model_provider=ollama", "exec"], "", "has no base_url"),
])
def test_providers_no_proxy_can_front_are_refused(tmp_path: Path, command: list[str], config: str, says: str) -> None:
    with pytest.raises(CodexRefused, match=says) as exc:
        plan(command, home(tmp_path, config))
    assert "aegis hook codex" in str(exc.value) and "\n" not in str(exc.value)


def test_unreadable_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CodexRefused, match="cannot read Codex's configuration"):
        plan(["codex"], home(tmp_path, "model_provider = [unterminated\n"))
