"""Benchmark of `validation.compare` against MONAI's metrics on a CT-sized synthetic label pair.

Issue 5 point 4 asks for armgate's mask comparison to be at least 20x faster than MONAI's
Dice + HD95 + surface Dice and within 3x of just loading the two NIfTI files, with the same
values. `run_benchmark()` measures all three on a seeded 512x512x300 pair with 13 organs.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import nibabel as nib
import numpy as np

from validation import compare

T = TypeVar("T")

SHAPE = (512, 512, 300)
SPACING_MM = (0.78, 0.78, 1.5)
NSD_TOLERANCE_MM = 2.0
# BTCV-like organs: (name, centre in mm from the volume's corner, semi-axes in mm). Volumes span
# ~4 ml (adrenal glands) to ~1.6 l (liver); tubes (aorta, oesophagus) are long thin ellipsoids.
ORGANS: tuple[tuple[str, tuple[float, float, float], tuple[float, float, float]], ...] = (
    ("liver", (130, 170, 260), (90, 70, 60)),
    ("stomach", (250, 160, 280), (50, 40, 50)),
    ("spleen", (300, 240, 270), (40, 25, 45)),
    ("right_kidney", (130, 260, 200), (28, 25, 50)),
    ("left_kidney", (270, 260, 200), (28, 25, 50)),
    ("gallbladder", (160, 140, 220), (15, 15, 35)),
    ("esophagus", (210, 240, 330), (8, 8, 90)),
    ("aorta", (210, 250, 220), (12, 12, 150)),
    ("inferior_vena_cava", (180, 245, 220), (11, 11, 120)),
    ("portal_vein", (180, 200, 240), (6, 6, 50)),
    ("pancreas", (220, 210, 230), (70, 15, 20)),
    ("right_adrenal", (150, 250, 265), (10, 5, 20)),
    ("left_adrenal", (255, 250, 265), (10, 5, 20)),
)
LABEL_NAMES = {label: name for label, (name, _, _) in enumerate(ORGANS, start=1)}


def _paint_organs(rng: np.random.Generator, perturb: bool) -> np.ndarray:
    """Paint each organ as a wobbly ellipsoid; `perturb` shifts, rescales and re-wobbles it a little."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    spacing = np.asarray(SPACING_MM)
    for label, (_, centre_mm, axes_mm) in enumerate(ORGANS, start=1):
        centre = np.asarray(centre_mm) / spacing
        axes = np.asarray(axes_mm) / spacing
        if perturb:
            centre = centre + rng.uniform(-1.5, 1.5, 3)
            axes = axes * rng.uniform(0.97, 1.03, 3)
        reach = np.ceil(axes * 1.2).astype(int)
        low = np.maximum(np.floor(centre).astype(int) - reach, 0)
        high = np.minimum(np.floor(centre).astype(int) + reach + 1, SHAPE)
        grid = np.ogrid[tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))]
        radius = sum(((axis_grid - c) / a) ** 2 for axis_grid, c, a in zip(grid, centre, axes, strict=True))
        wobble = sum(
            0.04 * np.sin(sum(g * w for g, w in zip(grid, rng.uniform(-0.15, 0.15, 3), strict=True)) + phase)
            for phase in rng.uniform(0, 2 * np.pi, 3)
        )
        box = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
        labels[box][radius + wobble < 1.0] = label
    return labels


def make_synthetic_pair(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write a seeded reference label map and a perturbed copy as .nii.gz; return (output, reference)."""
    rng = np.random.default_rng(seed)
    affine = np.diag([*SPACING_MM, 1.0])
    affine[:3, 3] = (-200.0, -200.0, -400.0)
    reference_path, output_path = directory / "reference.nii.gz", directory / "output.nii.gz"
    nib.save(nib.Nifti1Image(_paint_organs(rng, perturb=False), affine), reference_path)
    nib.save(nib.Nifti1Image(_paint_organs(rng, perturb=True), affine), output_path)
    return output_path, reference_path


def _timed(function: Callable[[], T], repeats: int = 1) -> tuple[T, float]:
    """The last value and the fastest of `repeats` wall-clock runs (the least disturbed by other load)."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - start)
    return value, best


def _load_both(output_path: Path, reference_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The floor: what any comparison must pay to read the two files into integer arrays."""
    return tuple(np.asanyarray(nib.load(path).dataobj) for path in (output_path, reference_path))  # type: ignore[return-value]


def monai_metrics(
    output: np.ndarray,
    reference: np.ndarray,
    spacing_mm: tuple[float, ...],
    n_labels: int,
    nsd_tolerance_mm: float,
) -> dict[str, np.ndarray]:
    """MONAI's DiceMetric, HD95 and SurfaceDice per foreground label, one-hot encoding included."""
    import torch
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric
    from monai.networks.utils import one_hot

    def encode(labels: np.ndarray) -> torch.Tensor:
        return one_hot(torch.from_numpy(labels.astype(np.int64))[None, None], num_classes=n_labels + 1)

    y_pred, y = encode(output), encode(reference)
    spacing = list(spacing_mm)
    dice = DiceMetric(include_background=False, reduction="none")(y_pred, y)
    hd95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
        y_pred, y, spacing=spacing
    )
    nsd = SurfaceDiceMetric([nsd_tolerance_mm] * n_labels, include_background=False, reduction="none")(
        y_pred, y, spacing=spacing
    )
    return {
        name: metric[0].numpy().astype(np.float64)
        for name, metric in (("dice", dice), ("hd95", hd95), ("nsd", nsd))
    }


def max_differences(
    result: compare.ComparisonResult, reference_metrics: dict[str, np.ndarray]
) -> dict[str, float]:
    """Largest |armgate - MONAI| per metric over labels present in both masks."""
    differences: dict[str, float] = {}
    for metric, values in reference_metrics.items():
        ours = np.array(
            [getattr(m, compare.METRIC_FIELDS[metric]) for m in result.per_label], dtype=np.float64
        )
        theirs = values[[m.label - 1 for m in result.per_label]]
        differences[metric] = float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
    return differences


def run_benchmark(
    seed: int = 0, with_monai: bool = True, repeats: int = 3, directory: Path | None = None
) -> dict[str, float]:
    """Seconds for loading both files, armgate's compare from the files (best of `repeats`) and MONAI's
    three metrics (once: ~1 min), their ratios, and the largest |armgate - MONAI| per metric."""
    with tempfile.TemporaryDirectory(prefix="armgate-bench-") as scratch:
        work = Path(directory or scratch)
        output_path, reference_path = make_synthetic_pair(work, seed)
        (output, reference), load_s = _timed(lambda: _load_both(output_path, reference_path), repeats)
        result, compare_s = _timed(
            lambda: compare.compare_masks(output_path, reference_path, nsd_tolerance_mm=NSD_TOLERANCE_MM),
            repeats,
        )
        _, compute_s = _timed(
            lambda: compare.compare_arrays(output, reference, SPACING_MM, nsd_tolerance_mm=NSD_TOLERANCE_MM),
            repeats,
        )
        figures = {
            "load_s": load_s,
            "armgate_s": compare_s,
            "armgate_compute_only_s": compute_s,
            "armgate_over_load": compare_s / load_s,
        }
        if with_monai:
            theirs, monai_s = _timed(
                lambda: monai_metrics(output, reference, SPACING_MM, len(ORGANS), NSD_TOLERANCE_MM)
            )
            figures |= {"monai_s": monai_s, "monai_over_armgate": monai_s / compare_s}
            figures |= {
                f"max_abs_diff_{name}": value for name, value in max_differences(result, theirs).items()
            }
        return figures


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run_benchmark(with_monai="--no-monai" not in sys.argv[1:]), indent=2))
