"""Per-label agreement of two label maps on one grid: Dice, HD95, NSD and volumes.

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

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from validation.masks import integer_labels
from validation.surfaces import Grid, directed_distances, surfaces

DEFAULT_NSD_TOLERANCE_MM = 2.0
HAUSDORFF_PERCENTILE = 95.0


def json_number(value: float | None) -> float | None:
    """JSON has no inf/NaN: non-finite numbers become null."""
    return value if value is None or math.isfinite(value) else None


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
            "hd95_mm": json_number(self.hd95_mm),
            "nsd": self.nsd,
            "output_voxels": self.output_voxels,
            "reference_voxels": self.reference_voxels,
            "output_volume_ml": self.output_volume_ml,
            "reference_volume_ml": self.reference_volume_ml,
            "volume_diff_ml": self.volume_diff_ml,
            "volume_diff_pct": json_number(self.volume_diff_pct),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], voxel_volume_ml: float) -> LabelMetrics:
        """Back from metrics.json; a null HD95 is the inf it was written for."""
        hd95 = data.get("hd95_mm")
        return cls(
            int(data["label"]),
            str(data["name"]),
            int(data["output_voxels"]),
            int(data["reference_voxels"]),
            voxel_volume_ml,
            float(data["dice"]),
            math.inf if hd95 is None else float(hd95),
            float(data["nsd"]),
        )


@dataclass(frozen=True)
class LabelReport:
    """Labels present in each mask (background 0 excluded) and the metrics of each present label."""

    spacing_mm: tuple[float, ...]
    output_labels: tuple[int, ...]
    reference_labels: tuple[int, ...]
    per_label: tuple[LabelMetrics, ...]


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
        integer_labels(output, "output"), integer_labels(reference, "reference")
    )
    grid = Grid(
        output.shape, tuple(s // output.itemsize for s in output.strides), np.asarray(spacing_mm, float)
    )
    n_labels = int(max(output.max(initial=0), reference.max(initial=0))) + 1
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        ours, theirs = pool.map(lambda labels: surfaces(labels, grid.steps, n_labels), (output, reference))
        agrees = theirs.flat[ours.labelled_index] == ours.labelled_values
        overlap = np.bincount(ours.labelled_values[agrees], minlength=n_labels)
        output_labels = tuple(int(label) for label in np.flatnonzero(ours.counts[1:]) + 1)
        reference_labels = tuple(int(label) for label in np.flatnonzero(theirs.counts[1:]) + 1)
        in_both = set(output_labels) & set(reference_labels)

        def directed(job: tuple[int, bool]) -> np.ndarray:
            label, from_output = job
            source, target = (ours, theirs) if from_output else (theirs, ours)
            return directed_distances(source.edges(label), target.edges(label), grid)

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
