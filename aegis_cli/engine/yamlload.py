"""Read policy YAML safely, keeping where every value came from.

Policy files arrive from pull requests, so the reader assumes they may be hostile: no tags or
custom constructors, no duplicate keys, bounded size, nesting and alias expansion. Scalars are
resolved as YAML 1.2 core schema does (``18:00`` stays a string, ``no`` is not ``False``).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from aegis_cli.engine.errors import Issue, PolicyError

MAX_BYTES = 10 * 1024 * 1024
MAX_NODES = 2_000_000  # counted after alias expansion: a billion-laughs file stops here
MAX_DEPTH = 64

Path = tuple[str | int, ...]
KEY = "\x00key"  # locations[(*path, KEY)] is where the key of `path` was written; locations[path], its value
Locations = dict[Path, tuple[int, int]]


class _Resolver(yaml.resolver.BaseResolver):
    pass


# YAML 1.2 core schema, not PyYAML's YAML 1.1 default.
_Resolver.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                list("tTfF"))
_Resolver.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"),
                                ["~", "n", "N", ""])
_Resolver.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                list("-+0123456789"))
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+.0123456789"),
)
_Resolver.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"])


class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer, _Resolver):
    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _Resolver.__init__(self)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        tag = getattr(event, "tag", None)
        if tag is not None and not isinstance(event, yaml.events.AliasEvent):
            shown = tag.replace("tag:yaml.org,2002:", "!!")
            raise _LocatedError(f"YAML tag {shown!r} is not allowed in a policy", event.start_mark)
        # PyYAML composes recursively: stop deep nesting here, located, before Python's stack runs out
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _LocatedError(f"nesting deeper than {MAX_DEPTH} levels", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _LocatedError(Exception):
    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


def _scalar(node: yaml.ScalarNode) -> Any:
    value = node.value
    tag = node.tag
    if tag == "tag:yaml.org,2002:str":
        if not value.isascii() and any("\ud800" <= c <= "\udfff" for c in value):
            # "\ud83d\ude80" (as json.dumps writes an emoji) arrives as two surrogates: join the pair
            try:
                return value.encode("utf-16", "surrogatepass").decode("utf-16")
            except UnicodeDecodeError:
                raise _LocatedError("unpaired UTF-16 surrogate escape in string", node.start_mark) from None
        return value
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        return value.lower() == "true"
    if tag == "tag:yaml.org,2002:int":
        if value.startswith("0o"):
            return int(value[2:], 8)
        return int(value, 0) if value.startswith("0x") else int(value)
    if tag == "tag:yaml.org,2002:float":
        low = value.lower()
        if low.endswith(".inf"):
            return float("-inf") if low.startswith("-") else float("inf")
        if low == ".nan":
            return float("nan")
        return float(value)
    return value


class _Builder:
    """Turns composed nodes into plain Python values and a path -> (line, column) map."""

    def __init__(self) -> None:
        self.nodes = 0
        self.locations: Locations = {}

    def build(self, node: Any, path: Path, depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _LocatedError(
                f"document expands to more than {MAX_NODES:,} values (an alias bomb?)", node.start_mark
            )
        if depth > MAX_DEPTH:
            raise _LocatedError(f"nesting deeper than {MAX_DEPTH} levels", node.start_mark)
        if path not in self.locations:
            self.locations[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            try:
                return _scalar(node)
            except ValueError:  # Python refuses int() of more than 4300 digits
                raise _LocatedError(f"number {node.value[:20]}... is too long", node.start_mark) from None
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i), depth + 1) for i, child in enumerate(node.value)]
        out: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                for source in value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]:
                    if not isinstance(source, yaml.MappingNode):
                        raise _LocatedError("'<<' merges only mappings", source.start_mark)
                    for k, v in self.build(source, path, depth + 1).items():
                        merged.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise _LocatedError("mapping keys must be plain strings", key_node.start_mark)
            key = _scalar(key_node)
            if not isinstance(key, str):
                key = "null" if key is None else str(key).lower() if isinstance(key, bool) else str(key)
            if key in out:
                raise _LocatedError(f"duplicate key '{key}'", key_node.start_mark)
            child = (*path, key)
            self.locations[(*child, KEY)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.build(value_node, child, depth + 1)
        for k, v in merged.items():
            out.setdefault(k, v)
        return out


def _expanded_size(node: Any, memo: dict[int, int], depth: int = 0) -> int:
    """How many values ``node`` becomes once aliases are expanded, counted without expanding them.

    Aliases share nodes, so memoising on identity makes this linear in the file; a billion-laughs
    file is refused here before the builder allocates a single value for it.
    """
    known = memo.get(id(node))
    if known is not None:
        return known
    if depth > MAX_DEPTH:  # also ends a recursive alias (&a [*a]), which nests forever
        raise _LocatedError(f"nesting deeper than {MAX_DEPTH} levels", node.start_mark)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo, depth + 1) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(value, memo, depth + 1) for _, value in node.value)
    if size > MAX_NODES:
        raise _LocatedError(f"document expands to more than {MAX_NODES:,} values (an alias bomb?)", node.start_mark)
    memo[id(node)] = size
    return size


def load_yaml(data: bytes | str, source: str) -> tuple[Any, Locations]:
    """Parse one YAML document. Returns the value and where each path in it was written."""
    if isinstance(data, bytes):
        if len(data) > MAX_BYTES:
            raise PolicyError(Issue(source, None, None, f"file is {len(data):,} bytes; the limit is {MAX_BYTES:,}"))
        text = _decode(data, source)
    else:
        text = data
        if len(text) > MAX_BYTES:
            message = f"text is {len(text):,} characters; the limit is {MAX_BYTES:,}"
            raise PolicyError(Issue(source, None, None, message))
    nul = text.find("\x00")
    if nul >= 0:
        line, col = _line_col(text, nul)
        raise PolicyError(Issue(source, line, col, "NUL byte in file"))
    loader = None
    builder = _Builder()
    try:
        loader = _Loader(text)  # the reader refuses control characters as it starts
        node = loader.get_single_node()
        if node is None:
            return None, {}
        _expanded_size(node, {})
        return builder.build(node, ()), builder.locations
    except _LocatedError as exc:
        raise PolicyError(Issue(source, exc.mark.line + 1, exc.mark.column + 1, exc.message)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if "expected a single document" in str(exc.context or ""):
            problem = "expected a single YAML document, found several"
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise PolicyError(Issue(source, line, col, f"invalid YAML: {problem}")) from None
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        what = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise PolicyError(Issue(source, line, col, f"control character {what} is not allowed in YAML")) from None
    except yaml.YAMLError as exc:
        raise PolicyError(Issue(source, None, None, f"invalid YAML: {exc}")) from None
    except RecursionError:
        raise PolicyError(Issue(source, None, None, "YAML nested too deeply")) from None
    finally:
        if loader is not None:
            loader.dispose()


def _decode(data: bytes, source: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = data[: exc.start].decode("utf-8")
        line, col = _line_col(good, len(good))
        message = f"not UTF-8: byte 0x{data[exc.start]:02x} cannot be decoded"
        raise PolicyError(Issue(source, line, col, message)) from None


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col
