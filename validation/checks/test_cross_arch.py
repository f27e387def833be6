"""The cross-architecture tier's own checks (`acceptance --cross-arch`, validation/cross_arch.py): the full
study on the host against the case's references, and the image's model against the host's on chosen
windows of the full study. The crop's run in the image is gated by the regular checks (test_cases.py)."""

from __future__ import annotations

import pytest

from validation import compare

pytestmark = pytest.mark.cross_arch


def _entry(gate, case: str):
    entry = gate.config.tier.cases[case]
    assert not entry.problem, f"the tier could not prepare the case: {entry.problem}"
    return entry


def test_full_study_host_run(gate, case: str) -> None:
    """The app on the whole study, on the host: the full study's mask comes from here."""
    entry = gate.config.tier.cases[case]
    assert entry.host is not None and entry.host.ok, entry.host.failure() if entry.host else "not run"


@pytest.mark.parametrize("kind", ["golden", "ground_truth"])
def test_full_study_mask(gate, case: str, kind: str) -> None:
    """The host's full-study label map against the case's reference, with the case's limits."""
    entry = _entry(gate, case)
    limits = entry.case.tolerances[kind]
    _, outcomes = compare.gate(
        entry.label_map, entry.case.reference(kind), limits, labels=entry.case.labels,
        names=gate.config.app.labels,
    )  # fmt: skip
    failures = [f"{o.name}: {o.reason}" for o in outcomes if not o.passed]
    assert not failures, "; ".join(failures)


def test_full_study_windows(gate, case: str) -> None:
    """The image's logits against the host's on the chosen windows of the full study."""
    entry = _entry(gate, case)
    result = entry.comparison.result()
    assert result.ok, result.line(entry.windows_total)
