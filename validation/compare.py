"""Compare an output label mask with a reference one: geometry, label sets, Dice, HD95, NSD, volumes.

The definitions are MONAI's, so figures can be cross-checked with `monai.metrics`:

- Dice = 2|A∩B| / (|A| + |B|)  (DiceMetric).
- Surface (edge) voxels of a label = its voxels with at least one 6-neighbour outside the label
  or outside the image (`get_mask_edges`: mask XOR binary_erosion with scipy's default cross).
- Surface distances = for each edge voxel of one mask, the Euclidean distance in mm (voxel index x
  spacing) to the nearest edge voxel of the other mask (`get_surface_distance`), as float32.
- HD95 = max over both directions of the 95th percentile, linear interpolation
  (HausdorffDistanceMetric(percentile=95)).
- NSD = (#distances <= tolerance in both directions) / (#edge voxels of both)
  (SurfaceDiceMetric, use_subvoxels=False).

Edge cases, made explicit rather than NaN: a label absent from both masks is skipped; a label in
only one mask scores Dice 0, NSD 0 and HD95 inf, and fails every metric check.

Speed: the masks are scanned once for their labelled voxels; everything after (counts, overlap,
edges, distances) works on those sparse voxels, and distances on edge voxels only, through one
KD-tree per label, skipping edge voxels the two masks share (distance 0). No full-volume one-hot,
erosion or distance transform.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from validation.errors import GateError
from validation.metrics import METRICS, TOLERANCE_KEYS, Metric

DEFAULT_NSD_TOLERANCE_MM = 2.0
DEFAULT_AFFINE_ATOL_MM = 1e-3
HAUSDORFF_PERCENTILE = 95.0


def _json_number(value: float | None) -> float | None:
    """JSON has no inf/NaN: non-finite numbers become null."""
    return value if value is None or math.isfinite(value) else None


@dataclass(frozen=True)
class LabelMask:
    """A label map with the affine that places its voxels in scanner space (mm)."""

    path: str
    labels: np.ndarray
    affine: np.ndarray

    @property
    def spacing_mm(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, : self.labels.ndim], axis=0))


def _integer_labels(data: np.ndarray, source: str) -> np.ndarray:
    """Labels as a non-negative integer array; a float or negative map is a user error naming `source`."""
    if data.dtype == bool:
        return data.view(np.uint8)
    if np.issubdtype(data.dtype, np.floating):
        if np.isnan(data).any():
            raise GateError(f"{source}: the mask contains NaN; a label mask holds integer label ids only")
        fractional = data[data != np.round(data)]
        if fractional.size:
            raise GateError(
                f"{source}: the mask holds non-integer values (e.g. {fractional.flat[0]:g}), not label ids; "
                "threshold/argmax it and save it with an integer dtype such as uint8"
            )
        data = data.astype(np.min_scalar_type(int(data.max())) if data.size and data.min() >= 0 else np.int64)
    elif not np.issubdtype(data.dtype, np.integer):
        raise GateError(f"{source}: voxel type {data.dtype} is not an integer label type")
    if np.issubdtype(data.dtype, np.signedinteger) and data.size and data.min() < 0:
        raise GateError(f"{source}: the mask holds negative values ({data.min()}); label ids must be >= 0")
    return data


def load_mask(path: str | Path) -> LabelMask:
    """Read a 3D NIfTI label mask, rejecting what is not one (missing, not NIfTI, float, NaN, 4D)."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise GateError(f"{path}: no such file; pass a NIfTI label mask (.nii or .nii.gz)")
    try:
        image = nib.load(path)
    except Exception as error:  # nibabel raises many types for unreadable input
        raise GateError(
            f"{path}: not a readable NIfTI image ({error}); pass a .nii or .nii.gz label mask"
        ) from None
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise GateError(f"{path}: a {type(image).__name__}, not NIfTI; convert it to .nii.gz")
    data = np.asanyarray(image.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise GateError(f"{path}: shape {data.shape} is not a 3D label map; save one volume of label ids")
    return LabelMask(str(path), _integer_labels(data, str(path)), np.asarray(image.affine, dtype=np.float64))


@dataclass(frozen=True)
class Geometry:
    """Whether the two masks share one voxel grid, without which no voxelwise metric means anything."""

    output_shape: tuple[int, ...]
    reference_shape: tuple[int, ...]
    max_affine_diff_mm: float | None  # None when the shapes already differ
    affine_atol_mm: float

    @property
    def matches(self) -> bool:
        return (
            self.output_shape == self.reference_shape
            and (self.max_affine_diff_mm or 0.0) <= self.affine_atol_mm
        )

    @property
    def reason(self) -> str:
        if self.output_shape != self.reference_shape:
            return (
                f"output shape {'x'.join(map(str, self.output_shape))} differs from the reference's "
                f"{'x'.join(map(str, self.reference_shape))}: resample the output onto the reference grid"
            )
        if not self.matches:
            return (
                f"output affine differs from the reference's by up to {self.max_affine_diff_mm:.4g} mm "
                f"(> {self.affine_atol_mm:g} mm): resample the output onto the reference grid"
            )
        shape = "x".join(map(str, self.output_shape))
        return f"same grid: shape {shape}, affines within {self.affine_atol_mm:g} mm"

    def to_dict(self) -> dict[str, Any]:
        return {
            "matches": self.matches,
            "output_shape": list(self.output_shape),
            "reference_shape": list(self.reference_shape),
            "max_affine_diff_mm": self.max_affine_diff_mm,
            "affine_atol_mm": self.affine_atol_mm,
            "reason": self.reason,
        }


def compare_geometry(output: LabelMask, reference: LabelMask, affine_atol_mm: float) -> Geometry:
    shapes_equal = output.labels.shape == reference.labels.shape
    diff = float(np.max(np.abs(output.affine - reference.affine))) if shapes_equal else None
    return Geometry(output.labels.shape, reference.labels.shape, diff, affine_atol_mm)


@dataclass(frozen=True)
class LabelMetrics:
    """Agreement of one label between output and reference (HD95 is inf when one mask lacks it)."""

    label: int
    name: str
    output_voxels: int
    reference_voxels: int
    voxel_volume_ml: float
    dice: float
    hd95_mm: float
    nsd: float

    @property
    def output_volume_ml(self) -> float:
        return self.output_voxels * self.voxel_volume_ml

    @property
    def reference_volume_ml(self) -> float:
        return self.reference_voxels * self.voxel_volume_ml

    @property
    def volume_diff_ml(self) -> float:
        return self.output_volume_ml - self.reference_volume_ml

    @property
    def volume_diff_pct(self) -> float:
        """Signed, relative to the reference; inf when the reference lacks the label."""
        if self.reference_voxels == 0:
            return math.inf
        return 100.0 * (self.output_voxels - self.reference_voxels) / self.reference_voxels

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "name": self.name,
            "dice": self.dice,
            "hd95_mm": _json_number(self.hd95_mm),
            "nsd": self.nsd,
            "output_voxels": self.output_voxels,
            "reference_voxels": self.reference_voxels,
            "output_volume_ml": self.output_volume_ml,
            "reference_volume_ml": self.reference_volume_ml,
            "volume_diff_ml": self.volume_diff_ml,
            "volume_diff_pct": _json_number(self.volume_diff_pct),
        }


@dataclass(frozen=True)
class LabelReport:
    """Labels present in each mask (background 0 excluded) and the metrics of each present label."""

    spacing_mm: tuple[float, ...]
    output_labels: tuple[int, ...]
    reference_labels: tuple[int, ...]
    per_label: tuple[LabelMetrics, ...]


@dataclass(frozen=True)
class _Surfaces:
    """One mask, sparse: voxel count per label and its edge voxels' flat indices grouped by label."""

    flat: np.ndarray
    labelled_index: np.ndarray  # flat indices of voxels with a label > 0, ascending
    labelled_values: np.ndarray
    counts: np.ndarray  # voxels per label id
    edge_index: np.ndarray  # flat indices of edge voxels, grouped by label, ascending within a label
    edge_starts: np.ndarray  # label l's edges are edge_index[edge_starts[l]:edge_starts[l + 1]]

    def edges(self, label: int) -> np.ndarray:
        if label + 1 >= self.edge_starts.size:
            return self.edge_index[:0]
        return self.edge_index[self.edge_starts[label] : self.edge_starts[label + 1]]


def _surfaces(labels: np.ndarray, steps: Sequence[int], n_labels: int) -> _Surfaces:
    """Find labelled voxels once, then their edges by comparing each with its 6 (2n) neighbours."""
    flat = labels.ravel(order="K")
    index = np.flatnonzero(flat != 0)
    values = flat[index]
    on_edge = np.zeros(index.size, dtype=bool)
    for axis, step in enumerate(steps):
        for offset in (step, -step):
            # clip keeps indices in range; only voxels on the image's faces read a wrong (wrapped)
            # neighbour, and those are edges anyway, flagged below
            on_edge |= flat.take(index + offset, mode="clip") != values
        size = labels.shape[axis]
        faces = [(slice(None),) * axis + (end,) for end in (0, size - 1)]  # views; np.take would copy
        if any(labels[face].any() for face in faces):
            coordinate = (index // step) % size
            on_edge |= (coordinate == 0) | (coordinate == size - 1)
    edge_index, edge_values = index[on_edge], values[on_edge]
    by_label = np.argsort(edge_values, kind="stable")
    edge_starts = np.concatenate(([0], np.cumsum(np.bincount(edge_values, minlength=n_labels))))
    return _Surfaces(
        flat, index, values, np.bincount(values, minlength=n_labels), edge_index[by_label], edge_starts
    )


# The near search tries at most about this many voxel offsets (whole distance shells) before the KD-tree.
NEAR_SEARCH_OFFSETS = 64


@dataclass(frozen=True)
class _Grid:
    """How a flat index maps to a voxel position, shared by both masks (same layout)."""

    shape: tuple[int, ...]
    steps: tuple[int, ...]  # flat-index distance between neighbours along each axis
    spacing: np.ndarray

    def voxel_coordinates(self, flat_index: np.ndarray) -> np.ndarray:
        return np.stack(
            [(flat_index // step) % size for size, step in zip(self.shape, self.steps, strict=True)], axis=1
        )

    @cached_property
    def near_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """Every integer offset up to a radius (whole shells, ~NEAR_SEARCH_OFFSETS of them), nearest first,
        with its length in mm: a search over them finds exact nearest distances up to that radius."""
        reach = np.ceil(2.0 * self.spacing.max() / self.spacing).astype(int)
        axes = [np.arange(-r, r + 1) for r in reach]
        offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(self.shape))
        lengths = np.sqrt(((offsets * self.spacing) ** 2).sum(axis=1))
        order = np.argsort(lengths, kind="stable")
        offsets, lengths = offsets[order], lengths[order]
        # all offsets within the generated box are complete only up to its inscribed radius
        radius = min(lengths[min(NEAR_SEARCH_OFFSETS, lengths.size) - 1], float((reach * self.spacing).min()))
        keep = lengths <= radius
        return offsets[keep], lengths[keep]


def _near_search(
    source: np.ndarray, target: np.ndarray, offsets: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact distances of source voxels whose nearest target voxel is within the offsets' radius.

    Source and target (voxel coordinates) go into one padded box; the target marks a dense lookup
    table; each offset, nearest first, settles the source voxels it lands on a target from. Returns
    the distances (NaN where unsettled) and the unsettled source rows."""
    pad = np.abs(offsets).max(axis=0)
    low = np.minimum(source.min(axis=0), target.min(axis=0)) - pad
    box = np.maximum(source.max(axis=0), target.max(axis=0)) + pad - low + 1
    box_steps = np.cumprod(np.concatenate(([1], box[:0:-1])))[::-1]  # C order within the box
    lookup = np.zeros(int(np.prod(box)), dtype=bool)
    lookup[(target - low) @ box_steps] = True
    distances = np.full(source.shape[0], np.nan, dtype=np.float32)
    pending = np.arange(source.shape[0])
    where = (source - low) @ box_steps
    for step, length in zip(offsets @ box_steps, lengths, strict=True):
        hit = lookup[where + step]
        if hit.any():
            distances[pending[hit]] = length
            pending, where = pending[~hit], where[~hit]
            if not pending.size:
                break
    return distances, pending


def _directed_distances(source: np.ndarray, target: np.ndarray, grid: _Grid) -> np.ndarray:
    """Distance (mm, float32 like MONAI) from each source edge voxel to the nearest target edge voxel:
    near ones by the dense near search, the rest through a KD-tree of the target voxels."""
    source_voxels, target_voxels = grid.voxel_coordinates(source), grid.voxel_coordinates(target)
    distances, pending = _near_search(source_voxels, target_voxels, *grid.near_offsets)
    if pending.size:
        # compact_nodes=False: 3-5x faster queries from far points (a missing slice, a hole) than the default
        tree = cKDTree(target_voxels * grid.spacing, leafsize=32, balanced_tree=False, compact_nodes=False)
        distances[pending] = tree.query(source_voxels[pending] * grid.spacing, k=1, workers=1)[0]
    return distances


def _label_metrics(
    label: int,
    name: str,
    voxels: tuple[int, int, int],
    voxel_volume_ml: float,
    distances: tuple[np.ndarray, np.ndarray] | None,
    nsd_tolerance_mm: float,
) -> LabelMetrics:
    """Metrics of one label from its voxel counts (output, reference, overlap) and surface distances
    (output->reference, reference->output; None when one mask lacks the label)."""
    output_voxels, reference_voxels, overlap = voxels
    if distances is None:
        return LabelMetrics(label, name, output_voxels, reference_voxels, voxel_volume_ml, 0.0, math.inf, 0.0)
    hd95 = max(float(np.percentile(d, HAUSDORFF_PERCENTILE)) for d in distances)
    # float32 distances against a float32 tolerance, as MONAI's torch comparison does
    tolerance = np.float32(nsd_tolerance_mm)
    nsd = sum(np.count_nonzero(d <= tolerance) for d in distances) / sum(d.size for d in distances)
    dice = 2.0 * overlap / (output_voxels + reference_voxels)
    return LabelMetrics(label, name, output_voxels, reference_voxels, voxel_volume_ml, dice, hd95, nsd)


def _same_layout(output: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays contiguous in one memory order and one integer dtype wide enough for both, so one flat
    index addresses the same voxel in both and label values compare exactly."""
    order = "F" if output.flags.f_contiguous and not output.flags.c_contiguous else "C"
    dtype = np.promote_types(output.dtype, reference.dtype)
    if not np.issubdtype(dtype, np.integer):  # uint64 with int64 promotes to float
        dtype = np.dtype(np.int64)
    return np.asarray(output, dtype=dtype, order=order), np.asarray(reference, dtype=dtype, order=order)


def label_name(label: int, names: Mapping[int, str] | None) -> str:
    return (names or {}).get(label, str(label))


def compare_arrays(
    output: np.ndarray,
    reference: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    names: Mapping[int, str] | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> LabelReport:
    """Per-label metrics of two integer label maps on one grid (callers check the geometry first).

    Work runs on a thread pool (numpy and the KD-tree release the GIL): the two masks' surfaces side
    by side, then one job per label and direction, largest first."""
    if output.shape != reference.shape:
        raise ValueError(f"shapes differ: {output.shape} vs {reference.shape}")
    if len(spacing_mm) != output.ndim:
        raise ValueError(f"{len(spacing_mm)} spacings for a {output.ndim}D mask")
    output, reference = _same_layout(
        _integer_labels(output, "output"), _integer_labels(reference, "reference")
    )
    grid = _Grid(
        output.shape, tuple(s // output.itemsize for s in output.strides), np.asarray(spacing_mm, float)
    )
    n_labels = int(max(output.max(initial=0), reference.max(initial=0))) + 1
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        ours, theirs = pool.map(lambda labels: _surfaces(labels, grid.steps, n_labels), (output, reference))
        agrees = theirs.flat[ours.labelled_index] == ours.labelled_values
        overlap = np.bincount(ours.labelled_values[agrees], minlength=n_labels)
        output_labels = tuple(int(label) for label in np.flatnonzero(ours.counts[1:]) + 1)
        reference_labels = tuple(int(label) for label in np.flatnonzero(theirs.counts[1:]) + 1)
        in_both = set(output_labels) & set(reference_labels)

        def directed(job: tuple[int, bool]) -> np.ndarray:
            label, from_output = job
            source, target = (ours, theirs) if from_output else (theirs, ours)
            return _directed_distances(source.edges(label), target.edges(label), grid)

        jobs = [(label, from_output) for label in in_both for from_output in (True, False)]
        jobs.sort(key=lambda job: -(ours if job[1] else theirs).edges(job[0]).size)
        distances = dict(zip(jobs, pool.map(directed, jobs), strict=True))
    voxel_volume_ml = float(np.prod(grid.spacing)) / 1000.0
    per_label = tuple(
        _label_metrics(
            label,
            label_name(label, names),
            (int(ours.counts[label]), int(theirs.counts[label]), int(overlap[label])),
            voxel_volume_ml,
            (distances[label, True], distances[label, False]) if label in in_both else None,
            nsd_tolerance_mm,
        )
        for label in sorted(set(output_labels) | set(reference_labels))
    )
    return LabelReport(tuple(float(s) for s in spacing_mm), output_labels, reference_labels, per_label)


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
    with ThreadPoolExecutor(max_workers=2) as pool:  # gzip inflation releases the GIL
        output, reference = pool.map(load_mask, (output_path, reference_path))
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
        value = _json_number(self.value) if isinstance(self.value, float) else self.value
        return {
            "name": self.name,
            "passed": self.passed,
            "value": value,
            "limit": self.limit,
            "reason": self.reason,
        }


def _labels_outcome(result: ComparisonResult) -> CheckOutcome:
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
        _labels_outcome(result),
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
    result = compare_masks(
        output_path,
        reference_path,
        labels=labels,
        names=names,
        nsd_tolerance_mm=tolerances.get("nsd_tolerance_mm", DEFAULT_NSD_TOLERANCE_MM),
        affine_atol_mm=tolerances.get("affine_atol_mm", DEFAULT_AFFINE_ATOL_MM),
    )
    return result, evaluate(result, tolerances)


def load_names(path: str | Path) -> dict[int, str]:
    """Label names from a JSON object {"1": "lesion", ...}."""
    path = Path(path)
    try:
        mapping = json.loads(path.read_text())
        return {int(label): str(name) for label, name in mapping.items()}
    except OSError as error:
        raise GateError(f"{path}: cannot read label names ({error.strerror})") from None
    except (ValueError, AttributeError):
        raise GateError(
            f'{path}: label names must be a JSON object of id -> name, e.g. {{"1": "lesion"}}'
        ) from None


def format_table(result: ComparisonResult) -> str:
    """A small human-readable report of the same figures as --json."""
    report = result.report
    assert report is not None
    spacing = "x".join(f"{s:.3g}" for s in report.spacing_mm)
    titles = [metric.title for metric in METRICS]
    titles[-1:-1] = ["out ml", "ref ml"]
    columns = {title: max(len(title), 8) for title in titles}
    lines = [
        f"output:    {result.output_path}",
        f"reference: {result.reference_path}",
        f"geometry:  {result.geometry.reason} (spacing {spacing} mm)",
        f"labels:    {_labels_outcome(result).reason}",
        "",
        f"{'label':>5}  {'name':<20}"
        + "".join(f" {title:>{width}}" for title, width in columns.items())
        + f"  (NSD within {result.nsd_tolerance_mm:g} mm)",
    ]
    for m in result.per_label:
        values = [metric.number.format(getattr(m, metric.field)) for metric in METRICS]
        values[-1:-1] = [f"{m.output_volume_ml:.2f}", f"{m.reference_volume_ml:.2f}"]  # beside their diff
        cells = "".join(f" {value:>{width}}" for value, width in zip(values, columns.values(), strict=True))
        lines.append(f"{m.label:>5}  {m.name[:20]:<20}{cells}")
    if not result.per_label:
        lines.append("  (no labels in either mask)")
    return "\n".join(lines)


class _ArgumentParser(argparse.ArgumentParser):
    """Usage errors become one GateError line (exit 2), like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise GateError(f"compare: {message} (see python -m validation compare --help)")


def _label_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--labels wants comma-separated integers, got {text!r}") from None


def main(argv: list[str]) -> int:
    """`python -m validation compare OUTPUT REFERENCE`: 0 = measured (and within any given limits),
    1 = a given limit (--dice-min ...) violated, 2 = bad input (GateError)."""
    parser = _ArgumentParser(prog="python -m validation compare", description=__doc__.splitlines()[0])
    parser.add_argument("output", help="output label mask (.nii/.nii.gz)")
    parser.add_argument("reference", help="reference label mask on the same grid")
    parser.add_argument("--labels", type=_label_list, help="expected label ids, e.g. 1,2,3")
    parser.add_argument("--names", help='JSON file of label names, {"1": "lesion", ...}')
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--nsd-tolerance", type=float, default=DEFAULT_NSD_TOLERANCE_MM, metavar="MM")
    parser.add_argument("--affine-atol", type=float, default=DEFAULT_AFFINE_ATOL_MM, metavar="MM")
    limits = parser.add_argument_group("limits (any given makes the exit code gate: 1 when violated)")
    for metric in METRICS:
        meaning = metric.meaning.replace("%", "%%")  # argparse formats help strings with %
        limits.add_argument(metric.flag, type=float, dest=metric.limit, metavar="LIMIT", help=meaning)
    args = parser.parse_args(argv)

    names = load_names(args.names) if args.names else None
    result = compare_masks(
        args.output,
        args.reference,
        labels=args.labels,
        names=names,
        nsd_tolerance_mm=args.nsd_tolerance,
        affine_atol_mm=args.affine_atol,
    )
    if not result.geometry.matches:
        raise GateError(f"{result.output_path}: {result.geometry.reason} ({result.reference_path})")
    given = {metric.limit: getattr(args, metric.limit) for metric in METRICS}
    given = {key: value for key, value in given.items() if value is not None}
    outcomes = evaluate(result, given) if given else []
    if given and not result.per_label:
        # limits with nothing to hold them against: a gate must not pass what it never measured
        outcomes.append(
            CheckOutcome(
                "measured", False, 0, None, "no label in either mask: nothing to measure under the limits"
            )
        )
    if args.json:
        document = result.to_dict() | ({"checks": [o.to_dict() for o in outcomes]} if given else {})
        print(json.dumps(document, indent=2))
    else:
        print(format_table(result))
        for outcome in outcomes:
            if not outcome.passed:
                print(f"FAIL {outcome.name}: {outcome.reason}")
    return 1 if any(not outcome.passed for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
