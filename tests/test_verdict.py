"""The verdict names its scope: PASS only when every check was run, evaluated and passed."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from validation import verdict
from validation.verdict import Scope

PASSED = verdict.Check("test_container_run[standard]", "standard", True, False, "")
FAILED = verdict.Check("test_mask[standard-golden-dice]", "standard", False, False, "dice 0.5 below 0.999")
NOT_EVALUATED = verdict.Check("test_outputs[standard]", "standard", False, True, "not evaluated: ...")
LEFT_OUT = Scope(["--no-host"], ["test_host_run[standard]"])


@pytest.mark.parametrize(
    ("checks", "scope", "pytest_exit", "interrupted", "expected"),
    [
        ([PASSED], Scope(), 0, False, "pass"),
        ([PASSED], LEFT_OUT, 0, False, "partial"),  # deselected checks: never PASS
        ([PASSED, NOT_EVALUATED], Scope(), 0, False, "partial"),
        ([PASSED, FAILED, NOT_EVALUATED], LEFT_OUT, 1, False, "fail"),
        ([], Scope(), 5, False, "fail"),  # nothing ran
        ([PASSED], Scope(), 3, False, "fail"),  # the runner broke down: no verdict from its checks
        ([PASSED], Scope(), 2, False, "fail"),  # pytest's INTERRUPTED without a signal: a check module broke
        ([PASSED], Scope(), 2, True, "interrupted"),
        ([PASSED], Scope(), 0, True, "interrupted"),  # an interrupt is never a pass, whatever pytest said
        ([PASSED], Scope(["--shard 1/2"], [], "1/2"), 0, False, "partial"),  # one shard: never PASS
        ([FAILED], Scope(["--shard 1/2"], [], "1/2"), 1, False, "fail"),
    ],
    ids=[
        *("all", "deselected", "not-evaluated", "failed", "empty", "internal-error", "collection-error"),
        *("ctrl-c", "late-ctrl-c", "shard", "shard-failed"),
    ],
)
def test_decide(checks, scope: Scope, pytest_exit: int, interrupted: bool, expected: str) -> None:
    outcome = verdict.decide(checks, scope, pytest_exit, interrupted)
    assert outcome.name == expected
    assert (outcome.exit_code == 0) == (expected == "pass")


def test_junit_properties_name_verdict_and_scope(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest" tests="1"><testcase name="t"/></testsuite></testsuites>'
    )
    outcome = verdict.decide([PASSED], LEFT_OUT, 0, False)
    verdict.add_junit_properties(junit, outcome, LEFT_OUT)
    properties = {p.get("name"): p.get("value") for p in ElementTree.parse(junit).getroot().iter("property")}
    assert properties["armgate.verdict"] == "partial"
    assert properties["armgate.selection"] == "--no-host"
    assert properties["armgate.deselected"] == "test_host_run[standard]"
