"""The few MCP messages aegis reads or writes itself, in both protocol eras.

Up to 2025-11-25 a session starts with ``initialize`` (client capabilities and ``serverInfo`` are
exchanged once) and the server asks the client things through its own requests
(``elicitation/create``). From 2026-07-28 every request carries its protocol version and client
capabilities in ``params._meta``, the server's identity rides in results' ``_meta``, and a server
that needs input answers ``resultType: "input_required"`` and gets the request retried with the
answers. aegis speaks whichever era the host and server chose.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable
from typing import Any

from aegis_cli.engine.matching import compile_glob, normalize
from aegis_cli.engine.models import Action, Approval, Decision, RiskLevel
from aegis_cli.engine.policy import Policy
from aegis_cli.engine.toolcalls import tool_call_to_action

PROTOCOL_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_KEY = "io.modelcontextprotocol/clientInfo"
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"

#: Key of aegis's own entry in an ``input_required`` result's ``inputRequests``.
INPUT_KEY = "dev.aegis/approval"

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603

_ARGS_SHOWN = 600  # characters of arguments shown to the person asked to approve


def json_loader(object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Callable[[str], Any]:
    """A ``json.loads`` for text that calls json's C scanner directly: ``JSONDecoder.decode`` wraps it
    in two Python calls and two regex matches, which cost more than scanning a small message. Raises
    ``ValueError`` as ``loads`` does (and whatever ``object_pairs_hook`` raises)."""
    scan = json.scanner.make_scanner(json.JSONDecoder(object_pairs_hook=object_pairs_hook))  # type: ignore[attr-defined]

    def loads(text: str) -> Any:
        text = text.strip(" \t\n\r")  # JSON's whitespace, and only it, around the value
        try:
            value, end = scan(text, 0)
        except StopIteration:
            raise ValueError("not JSON: expecting a value") from None
        if end != len(text):
            raise ValueError("not JSON: extra data after the value")
        return value

    return loads


def dumps(msg: Any) -> bytes:
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class ReadLine(bytes):
    """A server's line as the link that read it hands it on, with what it read (``msg``), so the relay
    and ``--listen`` route it without parsing it again."""

    msg: Any


def read_line(line: bytes, msg: Any) -> ReadLine:
    out = ReadLine(line)
    out.msg = msg
    return out


def request_meta(msg: dict[str, Any]) -> dict[str, Any]:
    params = msg.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return meta if isinstance(meta, dict) else {}


def is_modern(msg: dict[str, Any]) -> bool:
    """A 2026-07-28+ request: it carries its protocol version in ``_meta``."""
    return PROTOCOL_VERSION_KEY in request_meta(msg)


def server_name_from_result(result: Any) -> str | None:
    """``serverInfo.name`` from an ``initialize`` result, or from a modern result's ``_meta``."""
    if not isinstance(result, dict):
        return None
    for info in (result.get("serverInfo"), (result.get("_meta") or {}).get(SERVER_INFO_KEY)
                 if isinstance(result.get("_meta"), dict) else None):
        if isinstance(info, dict) and isinstance(info.get("name"), str) and info["name"]:
            return info["name"]
    return None


def supports_form_elicitation(capabilities: Any) -> bool:
    """Whether client capabilities declare form elicitation (``{}`` means form, for older clients)."""
    if not isinstance(capabilities, dict):
        return False
    elicitation = capabilities.get("elicitation")
    if not isinstance(elicitation, dict):
        return False
    return not elicitation or isinstance(elicitation.get("form"), dict)


def tool_result(msg_id: Any, text: str, *, is_error: bool, modern: bool) -> bytes:
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": is_error}
    if modern:
        result["resultType"] = "complete"
    return dumps({"jsonrpc": "2.0", "id": msg_id, "result": result})


def error_response(msg_id: Any, code: int, message: str) -> bytes:
    return dumps({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}})


def tool_call_action(policy: Policy, name: str, arguments: Any, server: str) -> Action:
    """The action for a ``tools/call`` of ``name`` on the server named ``server``: the one mapping
    ``aegis wrap --mcp`` and the MCP adapter (``aegis_cli.adapters.mcp``) share."""
    return tool_call_to_action(name, arguments, namespace=server, tools=policy.tools)


def unnamed_server_decision(policy: Policy, how_to_name: str) -> Decision:
    """A call made before the server said its name: rules on that name cannot be applied, and
    guessing it would let them be bypassed by calling early, so it is refused."""
    return Decision(Approval.BLOCK, RiskLevel.CRITICAL, None,
                    "the server has not said its name yet (no initialize or server/discover answer), so the "
                    f"policy cannot be applied; refused. {how_to_name}", policy.hash)


def unaudited_text(tool: str, exc: BaseException) -> str:
    return (f"aegis refused tool '{tool}': the decision could not be audited ({type(exc).__name__}: {exc}). "
            "The call was not run.")


def refusal_text(action: Action, decision: Decision, tool: str) -> str:
    """What the model reads when a call is blocked: which rule, why, and that nothing ran."""
    rule = f"rule '{decision.rule}'" if decision.rule else "the policy defaults"
    reason = f": {decision.reason}" if decision.reason else ""
    return (f"aegis blocked tool '{tool}' ({action.type} on {action.target}, "
            f"{decision.risk_level.value} risk) by {rule}{reason}. The call was not run.")


def denial_text(tool: str, decision: Decision, outcome: str) -> str:
    rule = f"rule '{decision.rule}'" if decision.rule else "the policy defaults"
    return (f"aegis: tool '{tool}' needs approval ({rule}: {decision.reason}) and was not approved: "
            f"{outcome}. The call was not run.")


def approval_prompt(tool: str, arguments: Any, action: Action, decision: Decision) -> str:
    rule = f"rule '{decision.rule}'" if decision.rule else "the policy defaults"
    args = json.dumps(arguments, ensure_ascii=False, sort_keys=True, default=str)
    if len(args) > _ARGS_SHOWN:
        args = args[:_ARGS_SHOWN] + f"... ({len(args)} characters)"
    return (f"aegis: allow tool '{tool}' ({action.type} on {action.target})?\n"
            f"{decision.risk_level.value} risk, {rule}: {decision.reason}\n"
            f"Arguments: {args}")


def elicitation_params(message: str, *, with_mode: bool) -> dict[str, Any]:
    """A form with one required yes/no field; only an explicit yes approves."""
    params: dict[str, Any] = {
        "message": message,
        "requestedSchema": {
            "type": "object",
            "properties": {
                "approve": {"type": "boolean", "title": "Allow this call",
                            "description": "Tick to let this one tool call run.", "default": False},
            },
            "required": ["approve"],
        },
    }
    if with_mode:
        params = {"mode": "form", **params}
    return params


def elicitation_approved(result: Any) -> tuple[bool, str]:
    """Read an ``ElicitResult``: (approved, what the person did)."""
    if not isinstance(result, dict):
        return False, "the host sent no elicitation result"
    action = result.get("action")
    if action != "accept":
        return False, f"the user chose '{action}'" if isinstance(action, str) else "no answer"
    content = result.get("content")
    if isinstance(content, dict) and content.get("approve") is True:
        return True, "the user accepted"
    return False, "the user submitted the form without ticking 'Allow this call'"


def always_blocked(policy: Policy, action: Action) -> bool:
    """True when the policy blocks ``action``'s type and target whatever the arguments.

    Walks the rules in order as ``evaluate`` would; a rule with conditions that would not block
    means some arguments might get through, so the tool stays listed (hide only what is certain).
    """
    ntype, ntarget, nagent = normalize(action.type), normalize(action.target), normalize(action.agent)
    for rule in policy.rules:
        if not (compile_glob(rule.match_type).test(ntype) and compile_glob(rule.match_target).test(ntarget)
                and compile_glob(rule.match_agent).test(nagent)):
            continue
        if rule.conditions:
            if rule.approval is not Approval.BLOCK:
                return False
            continue
        return rule.approval is Approval.BLOCK
    return policy.default_approval is Approval.BLOCK
