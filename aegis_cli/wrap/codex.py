"""Codex CLI under ``aegis wrap``: it reads no ``OPENAI_BASE_URL``, so its base URL is set on its command line.

Codex takes its model endpoint from its configuration (``openai_base_url`` for the built-in
``openai`` provider, ``model_providers.<id>.base_url`` for a custom one), and ``-c key=value``
overrides any configuration file. ``aegis wrap -- codex ...`` therefore works out where Codex would
have sent its requests (that becomes the proxy's upstream) and runs
``codex -c <key>="<proxy>" ...``. A provider that cannot be redirected is refused before Codex runs.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROGRAMS = frozenset({"codex", "codex.js", "codex.exe", "codex.cmd"})
PACKAGE = "@openai/codex"
_RUNNERS = {"npx": 1, "bunx": 1, "pnpx": 1, "pnpm": 2, "yarn": 2}  # where the package name may start
_RUNNER_VALUE_OPTIONS = frozenset({"-p", "--package", "-c", "--call", "--cache", "--registry", "--userconfig"})
API_BASE = "https://api.openai.com/v1"
CHATGPT_BASE = "https://chatgpt.com/backend-api/codex"


class CodexRefused(ValueError):
    """Codex is configured in a way the proxy cannot govern; the message says what to run instead."""


@dataclass(frozen=True, slots=True)
class CodexPlan:
    """Where Codex would send its requests, and how to send them to the proxy instead."""

    index: int  # where the codex program (or package) is in the command
    command: list[str]  # the command with the user's own overrides of ``key`` taken out
    provider: str
    key: str  # the configuration key aegis sets
    upstream: str  # the base URL Codex would have used

    def pointed_at(self, proxy_base: str) -> list[str]:
        """The command with ``-c key="proxy_base"`` right after the codex program."""
        i = self.index + 1
        return [*self.command[:i], "-c", f"{self.key}={json.dumps(proxy_base)}", *self.command[i:]]


def codex_index(command: Sequence[str]) -> int | None:
    """Where Codex is in the command: ``codex ...``, ``node .../codex.js ...``, ``npx @openai/codex ...``."""
    if not command:
        return None
    name = _base(command[0])
    if name in PROGRAMS:
        return 0
    if name in ("node", "node.exe") and len(command) > 1 and _base(command[1]) in PROGRAMS:
        return 1
    start = _RUNNERS.get(name)
    if start is None or (start == 2 and command[1:2] != ["dlx"]):
        return None
    i = start
    while i < len(command):
        arg = command[i]
        if arg == "--":
            i += 1
            continue
        if arg.startswith("-"):
            i += 2 if arg in _RUNNER_VALUE_OPTIONS else 1
            continue
        pkg = arg.split("@", 2)
        bare = arg if not arg.startswith("@") else "@" + pkg[1]
        return i if bare in ("codex", PACKAGE) or _base(arg) in PROGRAMS else None
    return None


def _base(path: str) -> str:
    return os.path.basename(path).lower()


def _overrides(args: Sequence[str]) -> list[tuple[int, int, str, Any]]:
    """The ``-c key=value`` overrides in Codex's arguments: (first index, count of args, key, value)."""
    out = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        text, width = None, 1
        if arg in ("-c", "--config") and i + 1 < len(args):
            text, width = args[i + 1], 2
        elif arg.startswith("--config="):
            text = arg[len("--config="):]
        elif arg.startswith("-c") and len(arg) > 2 and "=" in arg:
            text = arg[2:]
        if text is not None and "=" in text:
            key, _, raw = text.partition("=")
            try:  # as Codex reads it: TOML, else the raw string
                value = tomllib.loads(f"v = {raw}")["v"]
            except tomllib.TOMLDecodeError:
                value = raw
            out.append((i, width, key.strip(), value))
        i += width
    return out


def _flag(args: Sequence[str], *names: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--":
            break
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return None


def _toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CodexRefused(f"cannot read Codex's configuration {path}: {exc}") from exc


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    parts = [p.strip().strip('"') for p in re.findall(r'"[^"]*"|[^.]+', dotted)]
    node = config
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _key(provider: str) -> str:
    bare = re.fullmatch(r"[A-Za-z0-9_-]+", provider)
    return f"model_providers.{provider if bare else json.dumps(provider)}.base_url"


def plan(command: Sequence[str], environ: Mapping[str, str]) -> CodexPlan | None:
    """How to run this command's Codex through the proxy; None if the command is not Codex.

    Raises ``CodexRefused`` for a provider whose requests the proxy cannot take (a local ``--oss``
    model server, Amazon Bedrock's signed requests, a provider with no base URL).
    """
    index = codex_index(command)
    if index is None:
        return None
    args = list(command[index + 1:])
    home = Path(environ.get("CODEX_HOME") or Path(environ.get("HOME", "~")).expanduser() / ".codex")
    config = _toml(home / "config.toml")
    profile = _flag(args, "-p", "--profile") or config.get("profile")
    if isinstance(profile, str) and profile:
        legacy = config.get("profiles", {}).get(profile) if isinstance(config.get("profiles"), dict) else None
        if isinstance(legacy, dict):
            _merge(config, legacy)
        _merge(config, _toml(home / f"{profile}.config.toml"))
    overrides = _overrides(args)
    for _, _, key, value in overrides:
        _set(config, key, value)
    if "--oss" in args[:args.index("--") if "--" in args else len(args)]:
        raise CodexRefused("codex --oss talks to a local model server that aegis wrap cannot stand in front of; "
                           "define it as a custom provider with a base_url in $CODEX_HOME/config.toml "
                           "(model_providers.<id>.base_url) and run `aegis wrap -p POLICY -- codex -c "
                           "model_provider=<id> ...`, or govern Codex with `aegis hook codex`")
    provider = str(config.get("model_provider") or "openai")
    providers = config.get("model_providers") if isinstance(config.get("model_providers"), dict) else {}
    entry = providers.get(provider) if isinstance(providers.get(provider), dict) else None
    if provider == "openai" and entry is None:
        key = "openai_base_url"
        upstream = config.get("openai_base_url") or (CHATGPT_BASE if _chatgpt_login(home, environ) else API_BASE)
    elif entry is not None and isinstance(entry.get("base_url"), str) and entry["base_url"]:
        if entry.get("aws") is not None:
            raise _unsignable(provider)
        key, upstream = _key(provider), entry["base_url"]
    elif provider == "amazon-bedrock":
        raise _unsignable(provider)
    else:
        raise CodexRefused(f"Codex's model provider {provider!r} has no base_url aegis can stand in front of; "
                           f"give it one in $CODEX_HOME/config.toml ([model_providers.{provider}] base_url = ...) "
                           "and run the same command again, or govern Codex with `aegis hook codex`")
    dropped = {i for start, width, k, _ in overrides if _same_key(k, key) for i in range(start, start + width)}
    kept = [a for i, a in enumerate(args) if i not in dropped]
    return CodexPlan(index, [*command[:index + 1], *kept], provider, key, str(upstream))


def _same_key(a: str, b: str) -> bool:
    return [p.strip().strip('"') for p in re.findall(r'"[^"]*"|[^.]+', a)] == \
        [p.strip().strip('"') for p in re.findall(r'"[^"]*"|[^.]+', b)]


def _unsignable(provider: str) -> CodexRefused:
    return CodexRefused(f"Codex's provider {provider!r} signs each request for its own host (AWS SigV4), so no "
                        "proxy can stand in front of it; govern Codex with `aegis hook codex` instead")


def _chatgpt_login(home: Path, environ: Mapping[str, str]) -> bool:
    """Whether Codex signs in with ChatGPT (then its default endpoint is chatgpt.com, not api.openai.com)."""
    if environ.get("CODEX_API_KEY"):
        return False
    try:
        auth = json.loads((home / "auth.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(auth, dict):
        return False
    mode = str(auth.get("auth_mode") or "").lower()
    if mode:
        return mode.startswith("chatgpt")
    return bool(auth.get("tokens")) and not auth.get("OPENAI_API_KEY")
