"""The gate's verdict and the scope it names: PASS only when every check was run, evaluated and passed.

A run narrowed by `-k`, `--no-host` or `--shard K/N` (one share of the cases), or one in which checks
could not be evaluated, is not a release verdict: it says PARTIAL and which checks it left out, in
every place a reader looks (console, metrics.json, junit.xml properties, report banner).
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# A check that could not run because something it depends on failed first: the failure is reported
# once, by the check that owns its cause, and these are counted apart from passes and failures.
NOT_EVALUATED = "not evaluated: "
EXIT_CODES = {"pass": 0, "fail": 1, "partial": 3, "interrupted": 130}


@dataclass(frozen=True)
class Scope:
    """What the caller asked to leave out, and which checks that removed."""

    options: list[str] = field(default_factory=list)  # e.g. ["-k test_run", "--no-host"]
    deselected: list[str] = field(default_factory=list)  # check ids, e.g. "test_host_run[standard]"
    shard: str | None = None  # "K/N": this run gated one shard of the case set, never the whole

    @property
    def complete(self) -> bool:
        return not self.deselected and self.shard is None


@dataclass(frozen=True)
class Verdict:
    name: str  # one of EXIT_CODES
    passed: int
    failed: int
    not_evaluated: int
    deselected: int

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.name]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"exit_code": self.exit_code}


@dataclass(frozen=True)
class Check:
    """One of the gate's checks (a junit test case) as the gate recorded it."""

    name: str
    group: str  # "image" or the case's name
    passed: bool
    skipped: bool  # not evaluated: something it depends on failed, and said so in its own check
    reason: str

    @property
    def failed(self) -> bool:
        return not self.passed and not self.skipped

    @property
    def status(self) -> str:
        """ "passed", "failed" or "not_evaluated"."""
        if self.passed:
            return "passed"
        return "not_evaluated" if self.skipped else "failed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"status": self.status}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Check:
        return cls(
            str(data.get("name") or ""),
            str(data.get("group") or ""),
            bool(data.get("passed")),
            bool(data.get("skipped")),
            str(data.get("reason") or ""),
        )


def decide(checks: Iterable[Check], scope: Scope, pytest_exit: int, interrupted: bool) -> Verdict:
    """FAIL on any failure, on zero checks, or when the test runner itself did not finish cleanly;
    PARTIAL when nothing failed but something was left out or not evaluated; otherwise PASS."""
    statuses = [check.status for check in checks]
    counts = {status: statuses.count(status) for status in ("passed", "failed", "not_evaluated")}
    if interrupted:
        name = "interrupted"
    elif counts["failed"] or pytest_exit not in (0, 1) or not statuses:
        name = "fail"
    elif counts["not_evaluated"] or not scope.complete:
        name = "partial"
    else:
        name = "pass"
    return Verdict(name, counts["passed"], counts["failed"], counts["not_evaluated"], len(scope.deselected))


def add_junit_properties(
    junit: Path, verdict: Verdict, scope: Scope, extra: Mapping[str, str] | None = None
) -> None:
    """Record the verdict and the scope (and `extra`, e.g. a shard's identity) as testsuite
    properties, where CI dashboards read them."""
    if not junit.is_file():
        return
    tree = ElementTree.parse(junit)
    suites = tree.getroot()
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    if suite is None:
        return
    properties = suite.find("properties")
    if properties is None:
        properties = ElementTree.Element("properties")
        suite.insert(0, properties)
    for name, value in (
        ("armgate.verdict", verdict.name),
        ("armgate.selection", " ".join(scope.options) or "all checks"),
        ("armgate.deselected", ", ".join(scope.deselected)),
        ("armgate.not_evaluated", str(verdict.not_evaluated)),
        *(extra or {}).items(),
    ):
        ElementTree.SubElement(properties, "property", name=name, value=value)
    tree.write(junit, encoding="utf-8", xml_declaration=True)
