"""Who may call the server: bearer tokens, each with a role.

Tokens come from ``$AEGIS_API_TOKEN`` (one token with the admin role) and/or a token file::

    tokens:
      - name: ci-agent          # recorded in the audit trail as the caller
        role: evaluate          # evaluate < approve < admin
        token: "a-long-random-secret"
      - name: alice
        role: approve
        sha256: "9f86d0..."     # or the token's sha256 (hex), so the file holds no secret

Presented tokens are hashed and compared with every stored hash in constant time, without
stopping at the first match, so neither timing nor the order of the file says anything.
Tokens are never logged and never stored in the audit trail; only the token's name is.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aegis_cli.engine.errors import AegisError

TOKEN_ENV = "AEGIS_API_TOKEN"
MIN_TOKEN_LENGTH = 16


class Role(enum.IntEnum):
    """What a token may do. Each role may do everything the roles below it may."""

    EVALUATE = 1  # ask for decisions, ask for approvals, read policy/approvals/audit
    APPROVE = 2  # also answer approvals
    ADMIN = 3  # also replace the policy

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a request was authenticated as."""

    name: str
    role: Role


# With no token configured the server binds loopback only, and everyone who can reach it is trusted.
LOCAL = Principal("local", Role.ADMIN)


class TokenConfigError(AegisError, ValueError):
    """The token file or $AEGIS_API_TOKEN is unusable."""


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    role: Role
    digest: bytes


class TokenStore:
    """The configured tokens. Empty means: no authentication (loopback only)."""

    def __init__(self, entries: Iterable[_Entry] = ()) -> None:
        self._entries = tuple(entries)

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def names(self) -> list[str]:
        return [e.name for e in self._entries]

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal for an ``Authorization: Bearer ...`` header value, or None."""
        if not self._entries:
            return LOCAL
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).digest()
        found: _Entry | None = None
        for entry in self._entries:  # no early exit: the time taken does not depend on which entry matched
            if hmac.compare_digest(digest, entry.digest) and found is None:
                found = entry
        return Principal(found.name, found.role) if found else None

    @classmethod
    def load(cls, env_token: str | None = None, tokens_file: str | Path | None = None) -> TokenStore:
        entries: list[_Entry] = []
        if env_token is not None:
            _check_secret(env_token, f"${TOKEN_ENV}")
            entries.append(_Entry("admin", Role.ADMIN, hashlib.sha256(env_token.encode()).digest()))
        if tokens_file is not None:
            entries.extend(_read_file(Path(tokens_file)))
        names = [e.name for e in entries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise TokenConfigError(f"token name(s) used twice: {', '.join(dupes)}")
        digests = [e.digest for e in entries]
        if len(set(digests)) != len(digests):
            raise TokenConfigError("the same token is given twice (under different names)")
        return cls(entries)


def _check_secret(token: str, where: str) -> None:
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenConfigError(f"{where}: a token must be at least {MIN_TOKEN_LENGTH} characters "
                               "(try: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if token != token.strip() or any(c.isspace() for c in token):
        raise TokenConfigError(f"{where}: a token must not contain whitespace")


def _read_file(path: Path) -> list[_Entry]:
    from aegis_cli.engine.errors import PolicyError
    from aegis_cli.engine.yamlload import load_yaml

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TokenConfigError(f"{path}: {exc.strerror or exc}") from None
    try:
        document, locations = load_yaml(raw, str(path))
    except PolicyError as exc:
        raise TokenConfigError(str(exc)) from None

    def where(*key: str | int) -> str:
        line, col = locations.get(tuple(key), (None, None))
        return f"{path}:{line}:{col}" if line else str(path)

    items = document.get("tokens") if isinstance(document, dict) else None
    if not isinstance(items, list) or not items:
        raise TokenConfigError(f"{where()}: expected a non-empty list under 'tokens:'")
    entries = []
    roles = ", ".join(r.label for r in Role)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise TokenConfigError(f"{where('tokens', i)}: each token must be a mapping with name, role, token")
        unknown = sorted(set(item) - {"name", "role", "token", "sha256"})
        if unknown:
            raise TokenConfigError(f"{where('tokens', i, unknown[0])}: unknown key '{unknown[0]}'")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise TokenConfigError(f"{where('tokens', i)}: 'name' must be a non-empty string")
        role = item.get("role")
        if role not in {r.label for r in Role}:
            raise TokenConfigError(f"{where('tokens', i, 'role')}: role must be one of {roles}, not {role!r}")
        token, sha = item.get("token"), item.get("sha256")
        if (token is None) == (sha is None):
            raise TokenConfigError(f"{where('tokens', i)}: give exactly one of 'token' or 'sha256'")
        if token is not None:
            if not isinstance(token, str):
                raise TokenConfigError(f"{where('tokens', i, 'token')}: 'token' must be a string")
            _check_secret(token, where("tokens", i, "token"))
            digest = hashlib.sha256(token.encode()).digest()
        else:
            try:
                digest = bytes.fromhex(sha) if isinstance(sha, str) else b""
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise TokenConfigError(f"{where('tokens', i, 'sha256')}: 'sha256' must be 64 hex digits")
        entries.append(_Entry(name.strip(), Role[role.upper()], digest))
    return entries
