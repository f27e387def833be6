"""Each case run as a site runs it, and what it wrote against the references, one check per fact.

A failed run fails its own check once (`test_container_run`, `test_host_run`, with the app's last
words); every check that needs what the run did not produce is *not evaluated*, never failed again.
The label map compared is the app's NIfTI mask, or, for an app that writes none, its DICOM SEG placed
on the series' grid (validation/evidence.py).
"""

from __future__ import annotations

import pytest

from validation.metrics import FAMILIES
from validation.verdict import NOT_EVALUATED


def _family_failures(evidence, case: str, kind: str, family: str) -> tuple[list, list[str]]:
    comparison = evidence.comparison(case, kind)
    if family != "geometry":
        geometry = next(o for o in comparison.outcomes if o.name == "geometry")
        if not geometry.passed:
            pytest.skip(f"{NOT_EVALUATED}the masks' grids differ (see the {kind} geometry check)")
    outcomes = [o for o in comparison.outcomes if o.name == family or o.name.startswith(family + "[")]
    return outcomes, [f"{o.name}: {o.reason}" for o in outcomes if not o.passed]


def test_container_run(gate, case: str) -> None:
    result = gate.container_run(case)
    assert result.ok, result.failure()


def test_outputs(evidence, case: str) -> None:
    """Every output the contract declares, found by its pattern: exactly one file each."""
    problems = evidence.found(case).problems
    assert not problems, "; ".join(problems)


@pytest.mark.expects_series
def test_series(evidence, case: str) -> None:
    """The app used the series the case names (input.expected_series_instance_uid), not another of the
    study: its mask lies on that series' grid and its SEG references it."""
    problem = evidence.series_problem(case)
    assert not problem, problem


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["golden", "ground_truth"])
def test_mask(evidence, case: str, kind: str, family: str) -> None:
    outcomes, failures = _family_failures(evidence, case, kind, family)
    if family not in ("geometry", "labels"):
        if not evidence.comparison(case, kind).result.per_label:
            pytest.skip(f"{NOT_EVALUATED}no label in either mask (see the {kind} labels check)")
        assert outcomes, f"no {family} check: no tolerance for it in the case or the defaults"
    assert not failures, "; ".join(failures)


@pytest.mark.seg_output
def test_dicom_seg(evidence, case: str) -> None:
    failures = [f"{o.name}: {o.reason}" for o in evidence.seg_outcomes(case) if not o.passed]
    assert not failures, "; ".join(failures)


@pytest.mark.stl_output
def test_stl(evidence, case: str) -> None:
    """The STL mesh parses and lies inside the series' patient-space box."""
    problem = evidence.stl_problem(case)
    assert not problem, problem


@pytest.mark.host_run
def test_host_run(gate, case: str) -> None:
    """The same app on the host (the reference platform, for cross-architecture agreement)."""
    result = gate.host_run(case)
    assert result.ok, result.failure()


@pytest.mark.host_run
@pytest.mark.host_families
def test_host_agreement(evidence, case: str, family: str) -> None:
    """The same app on the host and in the arm64 image agree, on every metric the case's [host] bounds."""
    _, failures = _family_failures(evidence, case, "host", family)
    assert not failures, "; ".join(failures)
