"""Compare an output label mask with a reference one and turn the figures into named pass/fail checks.

The masks and their grid are in validation/masks.py, the per-label metrics (MONAI's definitions) in
validation/label_metrics.py, surface distances in validation/surfaces.py and the command line in
validation/compare_cli.py; this module joins them: geometry first, metrics only on one grid, then the
checks `geometry`, `labels`, `dice[name]`, `hd95[name]`, `nsd[name]`, `volume[name]`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from validation.label_metrics import (
    DEFAULT_NSD_TOLERANCE_MM,
    LabelMetrics,
    LabelReport,
    compare_arrays,
    json_number,
    label_name,
)
from validation.masks import DEFAULT_AFFINE_ATOL_MM, Geometry, LabelMask, compare_geometry, load_mask
from validation.metrics import METRICS, TOLERANCE_KEYS, Metric

__all__ = [  # what callers reach through this module
    "DEFAULT_AFFINE_ATOL_MM", "DEFAULT_NSD_TOLERANCE_MM", "CheckOutcome", "ComparisonResult", "Geometry",
    "LabelMask", "LabelMetrics", "LabelReport", "compare_arrays", "compare_images", "compare_masks",
    "evaluate", "gate", "gate_images", "label_name", "load_mask",
]  # fmt: skip


@dataclass(frozen=True)
class ComparisonResult:
    """Everything `compare` measured; `report` is None when the grids differ (no metrics computed)."""

    output_path: str
    reference_path: str
    geometry: Geometry
    nsd_tolerance_mm: float
    report: LabelReport | None
    expected_labels: tuple[int, ...] | None = None
    names: Mapping[int, str] = field(default_factory=dict)

    @property
    def per_label(self) -> tuple[LabelMetrics, ...]:
        return self.report.per_label if self.report else ()

    @property
    def missing_labels(self) -> tuple[int, ...]:
        """In the reference, not in the output."""
        if not self.report:
            return ()
        return tuple(sorted(set(self.report.reference_labels) - set(self.report.output_labels)))

    @property
    def extra_labels(self) -> tuple[int, ...]:
        """In the output, not in the reference."""
        if not self.report:
            return ()
        return tuple(sorted(set(self.report.output_labels) - set(self.report.reference_labels)))

    @property
    def unexpected_labels(self) -> tuple[int, ...]:
        """Present in either mask but outside the expected set (when one was given)."""
        if not self.report or self.expected_labels is None:
            return ()
        present = set(self.report.output_labels) | set(self.report.reference_labels)
        return tuple(sorted(present - set(self.expected_labels)))

    @property
    def absent_expected_labels(self) -> tuple[int, ...]:
        """Expected (given an expected set) but in neither mask: no per-label metric can catch these."""
        if not self.report or self.expected_labels is None:
            return ()
        present = set(self.report.output_labels) | set(self.report.reference_labels)
        return tuple(sorted(set(self.expected_labels) - present - {0}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output_path,
            "reference": self.reference_path,
            "geometry": self.geometry.to_dict(),
            "nsd_tolerance_mm": self.nsd_tolerance_mm,
            "spacing_mm": list(self.report.spacing_mm) if self.report else None,
            "expected_labels": None if self.expected_labels is None else list(self.expected_labels),
            "output_labels": list(self.report.output_labels) if self.report else None,
            "reference_labels": list(self.report.reference_labels) if self.report else None,
            "missing_labels": list(self.missing_labels),
            "extra_labels": list(self.extra_labels),
            "unexpected_labels": list(self.unexpected_labels),
            "absent_expected_labels": list(self.absent_expected_labels),
            "per_label": [metrics.to_dict() for metrics in self.per_label],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComparisonResult:
        """Back from metrics.json (what `to_dict` wrote), so a merged report shows a shard's figures."""
        report = None
        if data.get("spacing_mm") is not None:
            spacing = tuple(float(s) for s in data["spacing_mm"])
            voxel_volume_ml = math.prod(spacing) / 1000.0
            per_label = tuple(LabelMetrics.from_dict(entry, voxel_volume_ml) for entry in data["per_label"])
            report = LabelReport(
                spacing, tuple(data["output_labels"]), tuple(data["reference_labels"]), per_label
            )
        expected = data.get("expected_labels")
        return cls(
            str(data["output"]),
            str(data["reference"]),
            Geometry.from_dict(data["geometry"]),
            float(data["nsd_tolerance_mm"]),
            report,
            None if expected is None else tuple(expected),
            {metrics.label: metrics.name for metrics in report.per_label} if report else {},
        )


def compare_images(
    output: LabelMask,
    reference: LabelMask,
    *,
    labels: Iterable[int] | None = None,
    names: Mapping[int, str] | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    affine_atol_mm: float = DEFAULT_AFFINE_ATOL_MM,
) -> ComparisonResult:
    """Geometry first; per-label metrics only when both masks share one grid."""
    geometry = compare_geometry(output, reference, affine_atol_mm)
    report = None
    if geometry.matches:
        report = compare_arrays(
            output.labels,
            reference.labels,
            reference.spacing_mm,
            names=names,
            nsd_tolerance_mm=nsd_tolerance_mm,
        )
    return ComparisonResult(
        output.path,
        reference.path,
        geometry,
        nsd_tolerance_mm,
        report,
        None if labels is None else tuple(sorted(set(labels))),
        dict(names or {}),
    )


def compare_masks(
    output_path: str | Path,
    reference_path: str | Path,
    *,
    labels: Iterable[int] | None = None,
    names: Mapping[int, str] | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    affine_atol_mm: float = DEFAULT_AFFINE_ATOL_MM,
) -> ComparisonResult:
    """Load two NIfTI label masks (GateError on bad input) and compare them."""
    output, reference = load_masks(output_path, reference_path)
    return compare_images(
        output,
        reference,
        labels=labels,
        names=names,
        nsd_tolerance_mm=nsd_tolerance_mm,
        affine_atol_mm=affine_atol_mm,
    )


@dataclass(frozen=True)
class CheckOutcome:
    """One named pass/fail verdict; the acceptance gate turns each into a junit test case."""

    name: str
    passed: bool
    value: Any
    limit: Any
    reason: str

    def to_dict(self) -> dict[str, Any]:
        value = json_number(self.value) if isinstance(self.value, float) else self.value
        return {
            "name": self.name,
            "passed": self.passed,
            "value": value,
            "limit": self.limit,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckOutcome:
        return cls(
            str(data["name"]), bool(data["passed"]), data.get("value"), data.get("limit"), str(data["reason"])
        )


def labels_outcome(result: ComparisonResult) -> CheckOutcome:
    def named(labels: Sequence[int]) -> str:
        return ", ".join(label_name(label, result.names) for label in labels)

    problems = [
        f"{description}: {named(labels)}"
        for description, labels in (
            ("missing from the output", result.missing_labels),
            ("extra in the output", result.extra_labels),
            (f"outside the expected set {list(result.expected_labels or ())}", result.unexpected_labels),
            ("expected but absent from both masks", result.absent_expected_labels),
        )
        if labels
    ]
    if result.report is None:
        return CheckOutcome("labels", False, None, 0, "not computed: the geometry check failed")
    count = sum(
        len(labels)
        for labels in (
            result.missing_labels,
            result.extra_labels,
            result.unexpected_labels,
            result.absent_expected_labels,
        )
    )
    reason = "; ".join(problems) or f"same labels in both: {named(result.report.reference_labels) or 'none'}"
    return CheckOutcome("labels", not problems, count, 0, reason)


def _metric_outcome(metric: Metric, metrics: LabelMetrics, limit: float) -> CheckOutcome:
    value = getattr(metrics, metric.field)
    passed = metric.holds(value, limit)
    if metrics.output_voxels == 0 or metrics.reference_voxels == 0:
        where = "output" if metrics.output_voxels == 0 else "reference"
        reason = f"label {metrics.name} is absent from the {where}"
    else:
        measured = abs(value) if metric.absolute else value
        bound = "minimum" if metric.at_least else "maximum"
        verdict = "within" if passed else ("below" if metric.at_least else "above")
        reason = f"{metric.name} {measured:.4g} {verdict} the {bound} {limit:g}"
    return CheckOutcome(f"{metric.name}[{metrics.name}]", bool(passed), value, limit, reason)


def evaluate(result: ComparisonResult, tolerances: Mapping[str, float]) -> list[CheckOutcome]:
    """Checks `geometry`, `labels`, then `dice[name]`, `hd95[name]`, `nsd[name]`, `volume[name]` per label
    for each tolerance given; with mismatching grids, the per-label checks of the expected or named labels
    are reported failed so the same names appear in every run."""
    unknown = set(tolerances) - set(TOLERANCE_KEYS)
    if unknown:
        raise ValueError(f"unknown tolerance keys {sorted(unknown)}; known: {sorted(TOLERANCE_KEYS)}")
    for key, used in (
        ("nsd_tolerance_mm", result.nsd_tolerance_mm),
        ("affine_atol_mm", result.geometry.affine_atol_mm),
    ):
        if key in tolerances and not math.isclose(tolerances[key], used):
            raise ValueError(
                f"the result was computed with {key}={used}, not {tolerances[key]}: compare again"
            )
    geometry = result.geometry
    outcomes = [
        CheckOutcome(
            "geometry",
            geometry.matches,
            geometry.max_affine_diff_mm,
            geometry.affine_atol_mm,
            geometry.reason,
        ),
        labels_outcome(result),
    ]
    active = [metric for metric in METRICS if metric.limit in tolerances]
    if result.report is None:
        labels = result.expected_labels if result.expected_labels is not None else sorted(result.names)
        for label in (label for label in labels if label != 0):
            for metric in active:
                name = f"{metric.name}[{label_name(label, result.names)}]"
                reason = "not computed: the geometry check failed"
                outcomes.append(CheckOutcome(name, False, None, tolerances[metric.limit], reason))
        return outcomes
    for metrics in result.per_label:
        outcomes.extend(_metric_outcome(metric, metrics, tolerances[metric.limit]) for metric in active)
    return outcomes


def gate(
    output_path: str | Path,
    reference_path: str | Path,
    tolerances: Mapping[str, float],
    *,
    labels: Iterable[int] | None = None,
    names: Mapping[int, str] | None = None,
) -> tuple[ComparisonResult, list[CheckOutcome]]:
    """Compare with the NSD tolerance and affine tolerance taken from `tolerances`, then evaluate."""
    output, reference = load_masks(output_path, reference_path)
    return gate_images(output, reference, tolerances, labels=labels, names=names)


def gate_images(
    output: LabelMask,
    reference: LabelMask,
    tolerances: Mapping[str, float],
    *,
    labels: Iterable[int] | None = None,
    names: Mapping[int, str] | None = None,
) -> tuple[ComparisonResult, list[CheckOutcome]]:
    """`gate` on masks already loaded (the gate draws its overlay from the same arrays)."""
    result = compare_images(output, reference, labels=labels, names=names, **settings(tolerances))
    return result, evaluate(result, tolerances)


def settings(tolerances: Mapping[str, float]) -> dict[str, float]:
    """How to measure (not what to accept), from a tolerance table: compare_images' keyword arguments."""
    return {
        "nsd_tolerance_mm": tolerances.get("nsd_tolerance_mm", DEFAULT_NSD_TOLERANCE_MM),
        "affine_atol_mm": tolerances.get("affine_atol_mm", DEFAULT_AFFINE_ATOL_MM),
    }


def load_masks(output_path: str | Path, reference_path: str | Path) -> tuple[LabelMask, LabelMask]:
    """Both masks (GateError on bad input), read side by side: gzip inflation releases the GIL."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        output, reference = pool.map(load_mask, (output_path, reference_path))
    return output, reference
