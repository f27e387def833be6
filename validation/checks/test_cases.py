"""Each case run as a site runs it, and its masks against the references, one check per metric family.

A failed run fails its own check once (`test_container_run`, `test_host_run`, with the app's last
words); every check that needs what the run did not produce is *not evaluated*, never failed again.
"""

from __future__ import annotations

import pytest

from validation.metrics import FAMILIES
from validation.verdict import NOT_EVALUATED


def _family_failures(gate, case: str, kind: str, family: str) -> tuple[list, list[str]]:
    comparison = gate.comparison(case, kind)
    if family != "geometry":
        geometry = next(o for o in comparison.outcomes if o.name == "geometry")
        if not geometry.passed:
            pytest.skip(f"{NOT_EVALUATED}the masks' grids differ (see the {kind} geometry check)")
    outcomes = [o for o in comparison.outcomes if o.name == family or o.name.startswith(family + "[")]
    return outcomes, [f"{o.name}: {o.reason}" for o in outcomes if not o.passed]


def test_container_run(gate, case: str) -> None:
    result = gate.container_run(case)
    assert result.ok, result.failure()


def test_outputs(gate, case: str) -> None:
    output = gate.succeeded(case).output_dir
    missing = [name for name in gate.config.app.outputs.values() if not (output / name).is_file()]
    assert not missing, f"the app wrote no {', '.join(missing)} in {output}"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["golden", "ground_truth"])
def test_mask(gate, case: str, kind: str, family: str) -> None:
    outcomes, failures = _family_failures(gate, case, kind, family)
    if family not in ("geometry", "labels"):
        if not gate.comparison(case, kind).result.per_label:
            pytest.skip(f"{NOT_EVALUATED}no label in either mask (see the {kind} labels check)")
        assert outcomes, f"no {family} check: no tolerance for it in the case or the defaults"
    assert not failures, "; ".join(failures)


@pytest.mark.seg_output
def test_dicom_seg(gate, case: str) -> None:
    failures = [f"{o.name}: {o.reason}" for o in gate.seg_outcomes(case) if not o.passed]
    assert not failures, "; ".join(failures)


@pytest.mark.host_run
def test_host_run(gate, case: str) -> None:
    """The same app on the host (the reference platform, for cross-architecture agreement)."""
    result = gate.host_run(case)
    assert result.ok, result.failure()


@pytest.mark.host_run
@pytest.mark.parametrize("family", ["geometry", "labels", "dice", "nsd"])
def test_host_agreement(gate, case: str, family: str) -> None:
    """The same app on the host and in the arm64 image agree."""
    _, failures = _family_failures(gate, case, "host", family)
    assert not failures, "; ".join(failures)
