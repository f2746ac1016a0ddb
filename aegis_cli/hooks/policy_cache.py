"""A compiled-policy cache for the hook commands, keyed on the policy files' content.

A hook is a new process per tool call; parsing the YAML and checking it against the JSON Schema
(jsonschema, PyYAML) cost more than everything else it does. The files' bytes are read and hashed
on every call, and when the same bytes were loaded before, the rules are taken from the cache and
compiled again (compiling is cheap and keeps closures out of the file): no YAML, no schema.
An entry is JSON (the rules' fields as plain data): the ``json`` module is loaded anyway, and
unlike pickle, reading a JSON entry cannot run code whatever the file holds.

Safety (the cache decides what gets blocked, so it is never trusted blindly):

- key: sha256 over the cache format, aegis's version, and each file's path (as given: it names
  the rules) and the sha256 of its bytes. Editing a file changes the key: a new entry is built.
- place: ``$XDG_CACHE_HOME/aegis`` or ``~/.cache/aegis``, created 0700; entries are written 0600
  through a temporary file and an atomic rename.
- an entry is read only if the directory and the file are owned by this user and writable by
  nobody else (the file opened without following symlinks), and its checksum matches; it must
  carry the key it was looked up by, and the rebuilt policy must have the hash it was saved with.
  Anything else is ignored and rebuilt from the files, never trusted.
- only a policy that loaded and validated is saved, and only when the policy rebuilt from the entry
  equals it rule for rule (a value JSON would change, a tuple or a non-string key, means no cache);
  a file with errors is loaded (and its errors reported) the normal way on every call.

``$AEGIS_POLICY_CACHE=off`` turns the cache off.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see CONTRIBUTING.md, start-up
if TYPE_CHECKING:
    from typing import Any

FORMAT = b"aegis-policy-cache 2\n"
ENV = "AEGIS_POLICY_CACHE"
KEEP = 64  # entries kept; older ones are removed when a new one is written
# Rule fields that JSON cannot carry as they are, and how they come back.
_ENUMS = ("risk_level", "approval")
_TUPLES = ("tags",)


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "aegis")


def enabled() -> bool:
    return os.environ.get(ENV, "").strip().lower() not in ("off", "0", "no", "false")


def load(paths: list[str]) -> Any:
    """The merged policy of ``paths``: from the cache when these exact bytes were loaded before.

    Raises ``PolicyUnavailable`` as the normal loader does (and through it, on any read error).
    """
    from aegis_cli.hooks.common import PolicyUnavailable, load_policy_files, policy_error_text

    if not paths or "-" in paths or not enabled():
        return load_policy_files(paths)
    try:
        sources = [(path, _read_bytes(path)) for path in paths]
    except OSError:
        return load_policy_files(paths)  # missing, a directory, unreadable: its own located error
    key = cache_key(sources)
    policy = _read(key)
    if policy is not None:
        return policy
    from aegis_cli.engine.errors import PolicyError
    from aegis_cli.engine.policy import Policy

    try:  # from the bytes that were hashed, so an edit in between cannot be cached under this key
        policies = [Policy.from_string(data, path) for path, data in sources]
    except PolicyError as exc:
        raise PolicyUnavailable(policy_error_text(exc)) from None
    policy = policies[0]
    for later in policies[1:]:
        policy = policy.merge(later)
    _write(key, policy)
    return policy


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def cache_key(sources: list[tuple[str, bytes]]) -> str:
    from aegis_cli import __version__

    h = hashlib.sha256(FORMAT + __version__.encode() + b"\0")
    for path, data in sources:
        h.update(path.encode("utf-8", "surrogateescape") + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def entry_path(key: str) -> str:
    return os.path.join(cache_dir(), f"{key}.policy")


# -- reading ------------------------------------------------------------------------------------

def _private(st: os.stat_result) -> bool:
    """Owned by this user and writable by nobody else."""
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _read(key: str) -> Any:
    """The cached policy for ``key``, or None when there is no entry this process can trust."""
    path = entry_path(key)
    try:
        if not _private(os.stat(os.path.dirname(path))):
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _private(st):
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            blob = f.read()
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        return _rebuild(key, blob)
    except Exception:  # corrupt, foreign, from another version: rebuilt from the files
        return None


def _rebuild(key: str, blob: bytes) -> Any:
    head = len(FORMAT)
    if blob[:head] != FORMAT or blob[head + 64:head + 65] != b"\n":
        return None
    payload = blob[head + 65:]
    if hashlib.sha256(payload).hexdigest().encode() != blob[head:head + 64]:
        return None
    entry = json.loads(payload)
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    from aegis_cli.engine.models import Approval, RiskLevel
    from aegis_cli.engine.policy import Policy, Rule

    kinds = {"risk_level": RiskLevel, "approval": Approval}
    rules = []
    for fields in entry["rules"]:
        for name in _ENUMS:
            fields[name] = kinds[name](fields[name])
        for name in _TUPLES:
            fields[name] = tuple(fields[name])
        rules.append(Rule(**fields))
    options = entry["options"]
    for name in ("redact", "sources", "default_tags"):
        options[name] = tuple(options[name])
    policy = Policy(rules, *entry["defaults"], **options)
    if policy.hash != entry["hash"]:  # the rebuilt policy is not the one that was saved
        return None
    return policy


# -- writing ------------------------------------------------------------------------------------

def _write(key: str, policy: Any) -> None:
    """Save ``policy`` under ``key``; best effort (a read-only home just means no cache)."""
    rules = []
    for rule in policy.rules:
        data = {name: getattr(rule, name) for name in rule._fields}
        for name in _ENUMS:
            data[name] = data[name].value
        rules.append(data)
    entry = {
        "key": key, "hash": policy.hash, "rules": rules,
        "defaults": [policy.default_risk_level.value, policy.default_approval.value, policy.default_reason],
        "options": {"tools": policy.tools, "redact": policy.redact, "sources": policy.sources,
                    "explicit_defaults": policy.explicit_defaults, "name": policy.name,
                    "default_tags": policy.default_tags},
    }
    try:
        payload = json.dumps(entry, allow_nan=False).encode("ascii")  # \u escapes: any str round-trips
        back = _rebuild(key, FORMAT + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    except Exception:
        return  # something in the policy is not JSON: no cache for it
    if back is None or not _same(back, policy):
        return  # something does not survive the round trip (a tuple, a non-string key): no cache for it
    import tempfile

    directory = cache_dir()
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not _private(os.stat(directory)):
            return
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".policy")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(FORMAT + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            os.replace(tmp, entry_path(key))
        except BaseException:
            with _suppress():
                os.unlink(tmp)
            raise
        _prune(directory)
    except OSError:
        return


def _same(a: Any, b: Any) -> bool:
    """The policies decide alike: same rules (every field), defaults and options."""
    names = ("rules", "default_risk_level", "default_approval", "default_reason", "tools", "redact",
             "sources", "explicit_defaults", "name", "default_tags", "hash")
    return all(getattr(a, n) == getattr(b, n) for n in names)


def _prune(directory: str) -> None:
    with _suppress():
        entries = [os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".policy")]
        entries.sort(key=os.path.getmtime, reverse=True)
        for old in entries[KEEP:]:
            os.unlink(old)


def _suppress() -> Any:
    import contextlib

    return contextlib.suppress(OSError)
