"""Reload a policy when its files change, and keep the old one when the edit is broken.

watchdog watches the *directories* holding the files, not the files: editors (vim, VS Code, sed -i,
``kubectl`` ConfigMap updates) often save by writing a temporary file and renaming it over the
original, which replaces the inode a file watch would be attached to. Events are debounced because
one save is often several events (truncate, write, chmod, rename).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

try:
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer
except ImportError:  # the core install: say which extra brings it
    raise ImportError("policy hot reload needs watchdog: pip install 'aegis-cli[runtime]'") from None

from aegis_cli.engine.errors import Issue, PolicyError
from aegis_cli.engine.policy import Policy

log = logging.getLogger("aegis.watcher")


class PolicyWatcher:
    """Watch policy files; call ``on_change(policy)`` with each new valid policy (merged, as
    ``Policy.from_yaml_files`` loads them), ``on_error(PolicyError)`` for an invalid edit.

    Callbacks run on the watcher's thread. A reload that yields the same policy (same hash) is
    not reported. ``initial`` is the policy in use now; without it the files are loaded by
    ``start()``, which raises ``PolicyError`` if they are invalid.
    """

    def __init__(self, paths: Iterable[str | Path], on_change: Callable[[Policy], None],
                 on_error: Callable[[PolicyError], None], *, debounce: float = 0.25,
                 initial: Policy | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("PolicyWatcher needs at least one policy file")
        self._watched = {_key(p) for p in self.paths}
        self.on_change = on_change
        self.on_error = on_error
        self.debounce = debounce
        self.policy: Policy | None = initial
        self.reloads = 0  # accepted changes, for tests and status pages
        self.errors = 0  # rejected edits
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()

    def start(self) -> PolicyWatcher:
        if self._observer is not None:
            return self
        if self.policy is None:
            self.policy = Policy.from_yaml_files(*self.paths)
        observer = Observer()
        handler = _Events(self)
        for directory in sorted({str(_key(p).parent) for p in self.paths}):
            observer.schedule(handler, directory, recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer
        return self

    def stop(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    def __enter__(self) -> PolicyWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def concerns(self, path: str | bytes) -> bool:
        if isinstance(path, bytes):
            path = path.decode(errors="replace")
        return bool(path) and _key(Path(path)) in self._watched

    def schedule(self) -> None:
        """A watched file changed: reload once things have been quiet for ``debounce`` seconds."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            if self._observer is None:
                return
            self._timer = threading.Timer(self.debounce, self.reload)
            self._timer.daemon = True
            self._timer.start()

    def reload(self) -> bool:
        """Load the files now; returns True when a new valid policy was handed to ``on_change``."""
        with self._reload_lock:
            try:
                policy = Policy.from_yaml_files(*self.paths)
            except PolicyError as exc:
                self.errors += 1
                log.warning("policy edit rejected, keeping the current policy: %s", exc)
                _call(self.on_error, exc)
                return False
            except Exception as exc:  # anything else unexpected: still keep the old policy
                self.errors += 1
                error = PolicyError(Issue(str(self.paths[0]), None, None, f"cannot reload: {exc}"))
                _call(self.on_error, error)
                return False
            if self.policy is not None and policy.hash == self.policy.hash:
                return False
            self.policy = policy
            self.reloads += 1
            log.info("policy reloaded: %s", policy.hash[:19])
            _call(self.on_change, policy)
            return True


class _Events(FileSystemEventHandler):
    def __init__(self, watcher: PolicyWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads, including our own reloads
        paths = (event.src_path, getattr(event, "dest_path", ""))
        if any(self.watcher.concerns(p) for p in paths):
            self.watcher.schedule()


def _key(path: Path) -> Path:
    # Resolve the directory (symlinks, relative paths) but not the file: a symlinked policy file
    # replaced by retargeting the link is still the same watched name.
    return path.absolute().parent.resolve() / path.name


def _call(callback: Callable[..., None], arg: object) -> None:
    try:
        callback(arg)
    except Exception:
        log.exception("policy watcher callback failed")
