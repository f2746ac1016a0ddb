"""Policy test results as JUnit XML, the format every CI system's test view reads.

One ``<testsuite>`` per test file, one ``<testcase>`` per case; a failing case carries a
``<failure>`` whose message is the expected/actual diff and whose text adds the decision's
explanation, so the CI view shows why without re-running anything.
"""

from __future__ import annotations

import datetime as _dt
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

from aegis_cli.ci.policytest import FileResult


def _classname(file: str) -> str:
    stem = Path(file).with_suffix("").as_posix().lstrip("./")
    return stem.replace("/", ".") or "aegis"


def to_junit_xml(results: list[FileResult]) -> str:
    """The XML document (with declaration) for ``results``."""
    total = sum(len(r.cases) for r in results)
    failures = sum(len(r.failures) for r in results)
    seconds = sum(r.seconds for r in results)
    root = ET.Element("testsuites", name="aegis test", tests=str(total), failures=str(failures), errors="0",
                      skipped="0", time=f"{seconds:.6f}")
    stamp = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    host = socket.gethostname()
    for r in results:
        suite = ET.SubElement(root, "testsuite", name=r.name, tests=str(len(r.cases)),
                              failures=str(len(r.failures)), errors="0", skipped="0", time=f"{r.seconds:.6f}",
                              timestamp=stamp, hostname=host, file=r.file)
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="policy", value=", ".join(r.policy_files))
        if r.cases:
            ET.SubElement(props, "property", name="policy_hash", value=r.cases[0].decision.policy_hash)
        for case in r.cases:
            attrs = {"name": case.name, "classname": _classname(r.file), "time": f"{case.seconds:.6f}",
                     "file": r.file}
            if case.line:
                attrs["line"] = str(case.line)
            tc = ET.SubElement(suite, "testcase", attrs)
            if not case.passed:
                failure = ET.SubElement(tc, "failure", message=case.diff().replace("\n", "; "),
                                        type="PolicyExpectationFailed")
                failure.text = (f"{case.where}: {case.name}\naction: {case.action.to_dict()}\n{case.diff()}\n"
                                f"decision: {case.decision.explain()}\n")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit_xml(results: list[FileResult], path: str | Path) -> None:
    Path(path).write_text(to_junit_xml(results), encoding="utf-8")
