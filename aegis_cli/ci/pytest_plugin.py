"""pytest plugin for aegis policies: a fixture to load them, and policy test files as pytest items.

Loaded in every pytest run of an environment where aegis is installed (entry point ``pytest11``),
so it imports nothing of aegis until a fixture or a test file needs it.

    def test_prod_deletes_are_blocked(aegis_policy):
        policy = aegis_policy("policy.yaml")          # relative to this test file
        decision = policy.evaluate(Action("delete", "production"))
        assert decision.approval is Approval.BLOCK

To run ``aegis test`` files under pytest too, name them in the ini file::

    [tool.pytest.ini_options]
    aegis_test_files = ["*.aegis-test.yaml"]
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("aegis_test_files", "file name patterns of aegis policy test files to collect", type="args",
                  default=[])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "aegis: a policy test case from an aegis test file")


def _resolve(path: str | Path, test_dir: Path, root: Path) -> Path:
    p = Path(path)
    if p.is_absolute():
        return p
    for base in (test_dir, root):
        if (base / p).exists():
            return base / p
    return test_dir / p  # report the missing file where it was looked for first


@pytest.fixture
def aegis_policy(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Load (and merge) policy files: ``aegis_policy("base.yaml", "team.yaml") -> Policy``.

    Relative paths are looked up beside the test file, then in pytest's rootdir. A policy that
    does not load fails the test with every located error in the message.
    """
    from aegis_cli.engine.errors import PolicyError
    from aegis_cli.engine.policy import Policy

    test_dir = Path(str(request.path)).parent
    root = Path(str(request.config.rootpath))
    cache: dict[tuple[Path, ...], Any] = {}

    def load(*paths: str | Path) -> Any:
        if not paths:
            raise TypeError("aegis_policy() needs at least one policy file")
        files = tuple(_resolve(p, test_dir, root) for p in paths)
        if files not in cache:
            try:
                cache[files] = Policy.from_yaml_files(*files)
            except PolicyError as exc:
                pytest.fail("policy did not load:\n" + "\n".join(str(i) for i in exc.issues), pytrace=False)
        return cache[files]

    return load


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    patterns = parent.config.getini("aegis_test_files")
    if patterns and any(fnmatch.fnmatch(file_path.name, p) for p in patterns):
        return AegisTestFile.from_parent(parent, path=file_path)
    return None


class AegisTestFile(pytest.File):
    """An aegis policy test file; each case is one item."""

    def collect(self) -> Iterator[pytest.Item]:
        from aegis_cli.ci.policytest import run_test_file
        from aegis_cli.engine.errors import PolicyError

        try:
            result = run_test_file(self.path)
        except PolicyError as exc:
            raise self.CollectError("\n".join(str(i) for i in exc.issues)) from None
        for case in result.cases:
            item = AegisCase.from_parent(self, name=case.name, case=case)
            item.add_marker("aegis")
            yield item


class AegisCase(pytest.Item):
    def __init__(self, *, case: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case

    def runtest(self) -> None:
        if not self.case.passed:
            raise AegisCaseFailed(self.case)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, AegisCaseFailed):
            case = excinfo.value.case
            return (f"{case.where}: {case.name}\naction: {case.action.to_dict()}\n{case.diff()}\n"
                    f"decision: {case.decision.explain()}")
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, (self.case.line - 1) if self.case.line else None, f"aegis case: {self.name}"


class AegisCaseFailed(Exception):
    def __init__(self, case: Any) -> None:
        super().__init__(case.diff())
        self.case = case
