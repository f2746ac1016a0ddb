"""Codex's tool calls as its model makes them -> the actions ``aegis hook codex`` decides for the same calls.

Codex's hook never sees a tool by the name the model calls it: the model calls ``exec_command``
(``cmd``), and the hook gets ``Bash`` with ``{"command": ...}``; the model sends ``apply_patch``
the patch text, and the hook decides one action per file. The proxy sees what the model sends, so
for a Codex client it maps each call to exactly what the hook would decide. Codex 0.171 offers (and
runs) ``exec_command``, ``apply_patch`` as a custom (freeform) tool, and in code mode ``exec``;
``shell``, ``shell_command`` and ``local_shell`` are the names of other versions and configurations,
whose hook payloads are taken from Codex's source (the argv joined by its ``shlex_join``):

    exec_command {cmd, ...}             Bash {command: cmd, ...the other arguments}
    shell_command {command, ...}        Bash {command, ...}
    shell {command: [argv], ...}        Bash {command: argv joined as Codex joins it, ...}
    local_shell {command: [argv], ...}  the same (a ``local_shell_call`` item)
    apply_patch (custom tool input, or  the hook's own per-file actions (aegis_cli.hooks.codex):
      function ``{"input": patch}``)      path, operation, files, patch; unreadable -> refused
    exec (code mode: JavaScript that    refused: the tools it calls are not in the reply, so
      calls the tools)                    they cannot be decided one by one as the hook does
    anything else                       the plain mapping (type = name, target = codex)

The hook reports only ``command``; the proxy keeps Codex's other arguments (``workdir``,
``sandbox_permissions``, ...) beside it, so rules on ``command`` match the same under both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aegis_cli.engine.models import Action
from aegis_cli.engine.toolcalls import tool_call_to_action

TARGET = "codex"
#: model-facing shell tool -> the argument that holds its command (a string, or an argv list)
SHELL_TOOLS = {"exec_command": "cmd", "shell_command": "command", "shell": "command", "local_shell": "command"}
_ARGV_TOOLS = ("shell", "local_shell")
HOOK_SHELL = "Bash"  # what Codex's hook calls every shell tool
CODE_MODE = "exec"  # Codex's code-mode tool: JavaScript that calls the other tools
CODE_MODE_REFUSAL = ("Codex is in code mode: this call runs JavaScript that calls Codex's tools itself, and aegis wrap "
                     "cannot decide those calls one by one as the policy's rules expect; run Codex with a model that "
                     "calls its tools directly (e.g. -m gpt-5.5) or govern it with `aegis hook codex`")


def actions(name: str, arguments: Any, *, tools: Mapping[str, Mapping[str, str]] | None = None,
            agent: str = "", session: str = "") -> list[Action] | None:
    """The actions the Codex hook decides for this call, or None when it maps like any other tool.

    Raises ``ValueError`` for a call that cannot be mapped (it is then blocked): arguments of the
    wrong shape, a patch whose files cannot be read, a code-mode ``exec``.
    """
    if name in SHELL_TOOLS:
        params = _shell_params(name, arguments)
        return [tool_call_to_action(HOOK_SHELL, params, namespace=TARGET, tools=tools, agent=agent, session=session)]
    if name == "apply_patch":
        return _patch_actions(arguments, tools, agent, session)
    if name == CODE_MODE:
        raise ValueError(CODE_MODE_REFUSAL)
    return None


def _shell_params(name: str, arguments: Any) -> dict[str, Any]:
    if not isinstance(arguments, dict):
        raise ValueError(f"Codex's {name} call has no arguments object")
    key = SHELL_TOOLS[name]
    command = arguments.get(key)
    if name in _ARGV_TOOLS:
        if not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)):
            raise ValueError(f"Codex's {name} call's '{key}' is not a list of strings")
        text = shlex_join(command)
    elif isinstance(command, str):
        text = command
    else:
        raise ValueError(f"Codex's {name} call's '{key}' is not a string")
    # "command" is the hook's name for the command: a stray one beside "cmd" (which Codex would not run) goes
    rest = {k: v for k, v in arguments.items() if k not in (key, "command")}
    return {"command": text, **rest}


def _patch_actions(arguments: Any, tools: Any, agent: str, session: str) -> list[Action]:
    # The hook's own parsing and per-file actions, so the two cannot drift apart.
    from aegis_cli.hooks.codex import AGENT
    from aegis_cli.hooks.common import Call

    tool_input = arguments if isinstance(arguments, dict) else {"input": arguments}
    found = AGENT.actions(Call("before", "PreToolUse", "apply_patch", tool_input, session), tools)
    return [a.replace(agent=agent) for a in found] if agent else found


# -- argv -> one string, as Codex's hook reports it -------------------------------------------------
# Codex joins an argv with codex_shell_command::shlex_join, i.e. the Rust `shlex` crate's
# try_join (1.3): each word unquoted if it can be, else in single quotes, else in double quotes,
# split into chunks where no one style fits the whole word. Rewritten here from its rules.

_UNQUOTED = frozenset(b"+-./:@]_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_NOT_SINGLE = frozenset(b"'^\\")  # ^ only right after an opening quote (a Bash bug); \ for Fish
_NOT_DOUBLE = frozenset(b"`$!^")
_UNQ, _SINGLE, _DOUBLE = 1, 2, 4


def shlex_join(argv: Sequence[str]) -> str:
    """``argv`` as one command line, byte for byte as Codex's hook shows it. A NUL byte raises ``ValueError``
    (Codex would report ``<command included NUL byte>``, which no rule could match: refused instead)."""
    return " ".join(_quote(word) for word in argv)


def _quote(word: str) -> str:
    data = word.encode("utf-8", "surrogateescape")
    if not data:
        return "''"
    if 0 in data:
        raise ValueError("a command argument holds a NUL byte")
    out = bytearray()
    while data:
        size, style = _strategy(data)
        if size == len(data) and style == _UNQ and not out:
            return word
        chunk, data = data[:size], data[size:]
        if style == _UNQ:
            out += chunk
        elif style == _SINGLE:
            out += b"'" + chunk + b"'"
        else:
            out += b'"' + bytes(b for c in chunk for b in ((92, c) if c in b'$`"\\' else (c,))) + b'"'
    return out.decode("utf-8", "surrogateescape")


def _strategy(data: bytes) -> tuple[int, int]:
    """How to quote the longest prefix of ``data`` that one style can hold, and its length."""
    ok = _UNQ | _SINGLE | _DOUBLE
    i = 0
    if data[0] == ord("^"):
        ok, i = _SINGLE, 1
    while i < len(data):
        c = data[i]
        now = ok
        if c not in _UNQUOTED:  # nor any byte >= 0x80
            now &= ~_UNQ
        if c < 0x80 and c in _NOT_SINGLE:
            now &= ~_SINGLE
        if c < 0x80 and c in _NOT_DOUBLE:
            now &= ~_DOUBLE
        if not now:
            break
        ok = now
        i += 1
    style = _UNQ if ok & _UNQ else _SINGLE if ok & _SINGLE else _DOUBLE
    return i, style
