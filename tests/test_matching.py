"""The matcher: globs on type/target/agent, normalisation, control characters."""

from __future__ import annotations

import pytest
from reference import glob_match

from aegis_cli import Action, Approval, Policy, RiskLevel
from aegis_cli.engine.errors import PolicyError
from aegis_cli.engine.matching import GlobError, compile_glob, forbidden_char, glob_covers, normalize


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("*", "", True),
        ("*", "anything at all", True),
        ("**", "x", True),
        ("delete", "delete", True),
        ("delete", "deletes", False),
        ("delete*", "delete_user", True),
        ("delete*", "undelete", False),
        ("*delete", "undelete", True),
        ("d?l*", "dal", True),
        ("d?l*", "dl", False),
        ("?", "", False),
        ("??", "ab", True),
        ("[rd]ead", "read", True),
        ("[rd]ead", "dead", True),
        ("[rd]ead", "lead", False),
        ("[!rd]ead", "lead", True),
        ("[!rd]ead", "read", False),
        ("[a-c]x", "bx", True),
        ("[a-c]x", "dx", False),
        ("[!a-c]x", "dx", True),
        ("[]]", "]", True),
        ("[!]]", "a", True),
        ("[!]]", "]", False),
        ("[a-]", "-", True),
        ("[^a]", "^", True),  # ^ is literal in a glob set, unlike a regex
        ("a.b", "axb", False),  # regex metacharacters are literal
        ("a+", "aa", False),
        ("(x|y)", "(x|y)", True),
        ("a]", "a]", True),
        ("x*y*z", "xyz", True),
        ("x*y*z", "x--y--z", True),
        ("x*y*z", "x--z--y", False),
    ],
)
def test_glob_semantics(pattern: str, text: str, expected: bool) -> None:
    assert compile_glob(pattern).test(normalize(text)) is expected
    assert glob_match(normalize(pattern), normalize(text)) is expected  # the reference agrees


def test_glob_star_spans_slashes_and_newlines() -> None:
    # unlike shell globs, * is not stopped by '/', and DOTALL keeps it from stopping at a newline
    assert compile_glob("prod*").test("prod/db/users")
    assert compile_glob("a*b", fold=False).test("a\nb")


def test_literal_glob_is_indexed() -> None:
    assert compile_glob("Delete").literal == "delete"
    assert compile_glob("del*").literal is None
    assert compile_glob("*").is_any


@pytest.mark.parametrize(
    "pattern",
    ["del[ete", "[", "a[b", "[z-a]", "x[9-0]", "[]", "[!]"],
)
def test_bad_globs_are_refused(pattern: str) -> None:
    with pytest.raises(GlobError, match="bad glob"):
        compile_glob(pattern)


def test_reversed_range_hidden_by_case_folding_is_refused() -> None:
    # 'Z' < 'a' in code points, but after folding the set reads [z-a], which matches nothing
    with pytest.raises(GlobError, match="reversed"):
        compile_glob("[Z-a]")


def test_fullwidth_brackets_are_checked_after_normalisation() -> None:
    # NFKC turns U+FF3B/U+FF3D into [ and ]; the check must see what the matcher sees
    with pytest.raises(GlobError):
        compile_glob("［z-a］")


def test_fullwidth_brackets_form_a_set() -> None:
    glob = compile_glob("［rd］ead")
    assert glob.test(normalize("read")) and not glob.test(normalize("lead"))


# -- normalisation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("DELETE", "delete"),
        ("ＤＥＬＥＴＥ", "delete"),  # fullwidth letters
        ("Ｄelete", "DELETE"),
        ("straße", "STRASSE"),  # ß casefolds to ss
        ("STRAẞE", "strasse"),  # capital sharp s too
        ("ﬁle", "file"),  # ligature, NFKC
        ("Ⅳ", "iv"),  # roman numeral, NFKC
        ("Σίσυφος", "ΣΊΣΥΦΟΣ"),  # final sigma
        ("e\u0301", "é"),  # combining accent composes
    ],
)
def test_normalize_equates(a: str, b: str) -> None:
    assert normalize(a) == normalize(b)


def test_normalize_keeps_distinct_things_distinct() -> None:
    assert normalize("delete") != normalize("de1ete")
    assert normalize("prod") != normalize("prod ")
    assert normalize("ε") != normalize("e")


@pytest.mark.parametrize(
    ("pattern", "value"),
    [("delete", "ＤＥＬＥＴＥ"), ("STRASSE", "straße"), ("straße", "STRASSE"), ("del*", "ＤＥＬ_all"), ("file", "ﬁle")],
)
def test_policy_matches_after_normalisation(pattern: str, value: str) -> None:
    policy = Policy.from_dict({"rules": [{"name": "r", "match": {"type": pattern}, "approval": "block"}]})
    assert policy.evaluate(Action(value, "t")).rule == "r"
    assert policy.evaluate(Action("other", "t")).rule is None


def test_sharp_s_in_a_set_is_one_character_but_folds_to_two() -> None:
    # documents a consequence of casefolding: 'ß' becomes 'ss', so it can never fit '?'
    assert not compile_glob("?").test(normalize("ß"))
    assert compile_glob("??").test(normalize("ß"))


def test_target_and_agent_are_matched_too() -> None:
    policy = Policy.from_dict({"rules": [
        {"name": "r", "match": {"type": "*", "target": "Prod*", "agent": "bot-?"}, "approval": "block"},
    ]})
    assert policy.evaluate(Action("x", "PRODUCTION", agent="BOT-1")).rule == "r"
    assert policy.evaluate(Action("x", "production", agent="bot-12")).rule is None
    assert policy.evaluate(Action("x", "staging", agent="bot-1")).rule is None
    assert policy.evaluate(Action("x", "prod")).rule is None  # agent '' does not fit 'bot-?'


def test_missing_match_key_is_star() -> None:
    policy = Policy.from_dict({"rules": [{"name": "r", "approval": "auto"}]})
    assert policy.evaluate(Action("", "")).rule == "r"
    policy = Policy.from_dict({"rules": [{"name": "r", "match": None, "approval": "auto"}]})
    assert policy.evaluate(Action("a", "b", agent="c")).rule == "r"


# -- control and format characters -----------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\u200b", "\u202e", "\u2066", "\ufeff", "\u2028", "\u2029"],
)
def test_forbidden_characters(bad: str) -> None:
    assert forbidden_char(f"del{bad}ete") == bad


@pytest.mark.parametrize("ok", ["delete", "prod db", "ＤＥＬ", "straße", "日本", "a\u00a0b", "e\u0301"])
def test_allowed_characters(ok: str) -> None:
    assert forbidden_char(ok) is None


@pytest.mark.parametrize("field", ["type", "target", "agent"])
@pytest.mark.parametrize("bad", ["\x00", "\n", "\u200b", "\u202e"])
def test_control_characters_block_with_a_reason(field: str, bad: str) -> None:
    policy = Policy.from_dict({"defaults": {"approval": "auto", "risk_level": "low"},
                               "rules": [{"name": "anything", "approval": "auto", "risk_level": "low"}]})
    values = {"type": "read", "target": "docs", "agent": "bot"}
    values[field] = f"re{bad}ad"
    action = Action(values["type"], values["target"], agent=values["agent"])
    for decision in (policy.evaluate(action), policy.evaluate(action), policy.evaluate(action, explain=True)):
        assert decision.approval is Approval.BLOCK
        assert decision.risk_level is RiskLevel.CRITICAL
        assert decision.rule is None
        assert field in decision.reason and "control character" in decision.reason


def test_newline_cannot_smuggle_a_match() -> None:
    # 'delete\nread' would match 'read' by a per-line regex; it must be blocked, never matched loosely
    policy = Policy.from_dict({"rules": [{"name": "reads", "match": {"type": "*read"}, "approval": "auto"}]})
    assert policy.evaluate(Action("delete\nread", "x")).approval is Approval.BLOCK


# -- shadowing analysis -------------------------------------------------------------------------


def test_glob_covers() -> None:
    assert glob_covers(compile_glob("*"), compile_glob("del*"))
    assert glob_covers(compile_glob("del*"), compile_glob("delete"))
    assert glob_covers(compile_glob("DEL*"), compile_glob("del*"))
    assert not glob_covers(compile_glob("del*"), compile_glob("d*"))
    assert not glob_covers(compile_glob("read"), compile_glob("delete"))


def test_shadowed_rules_reported() -> None:
    policy = Policy.from_dict({"rules": [
        {"name": "all_deletes", "match": {"type": "delete*"}, "approval": "block"},
        {"name": "prod_deletes", "match": {"type": "delete", "target": "prod"}, "approval": "approve"},
        {"name": "conditional", "match": {"type": "read"}, "conditions": {"param_eq": {"a": 1}}},
        {"name": "reads", "match": {"type": "read"}},
    ]})
    pairs = [(r.name, e.name) for r, e in policy.shadowed_rules()]
    assert pairs == [("prod_deletes", "all_deletes")]


def test_policy_with_bad_glob_is_located() -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_string("rules:\n  - name: r\n    match: {type: 'del[ete'}\n", "p.yaml")
    issue = info.value.issues[0]
    assert (issue.file, issue.line, issue.column) == ("p.yaml", 3, 19)  # the bad value itself
    assert "never closed" in issue.message
