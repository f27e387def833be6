"""armgate's mask comparison against MONAI's metrics, on several CT-sized label pairs.

Pairs (512×512×300, 13 organs): near (every organ slightly perturbed, the best case for the near
search), displaced (the whole mask 25 voxels away), swapped (two organs' labels exchanged), missing
(one organ absent). Both sides start from the same arrays in memory, with their imports and a warm-up
outside the timers and the same number of repeats; MONAI's time includes the one-hot encoding its
metrics require. The values compared are those of COMPARED below (Dice, NSD, HD95; not volume). The load
baseline reads both files on two threads, as armgate's compare does, so that the ratio of the two is
the comparison's own cost, not a difference in how the files are read.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bench.figures import Figure, Headline, Target, median
from validation import compare, metrics

SHAPE = (512, 512, 300)
SPACING_MM = (0.78, 0.78, 1.5)
NSD_TOLERANCE_MM = 2.0
DISPLACEMENT_VOXELS = 25
SWAPPED = (4, 5)  # right and left kidney
MISSING = 6  # gallbladder
PAIRS = ("near", "displaced", "swapped", "missing")
EQUAL_MAX_ABS_DIFF = 1e-6  # "values equal": armgate's metrics vs MONAI's, float noise only
SPEEDUP = Headline("speedup_vs_monai_worst_pair", "4  MONAI ÷ armgate, worst pair", Target(">=", 20.0))
MAX_DIFF = Headline(
    "max_diff_vs_monai",
    "4  largest Dice, NSD or HD95 difference from MONAI",
    Target("<=", EQUAL_MAX_ABS_DIFF),
)
HEADLINES = (SPEEDUP, MAX_DIFF)
LOAD_TARGET = Target("<=", 3.0)
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


def paint_organs(
    rng: np.random.Generator,
    perturb: bool,
    shape: tuple[int, ...] = SHAPE,
    spacing: tuple[float, ...] = SPACING_MM,
) -> np.ndarray:
    """Paint each organ as a wobbly ellipsoid; `perturb` shifts, rescales and re-wobbles it a little."""
    labels = np.zeros(shape, dtype=np.uint8)
    spacing_ = np.asarray(spacing)
    for label, (_, centre_mm, axes_mm) in enumerate(ORGANS, start=1):
        centre = np.asarray(centre_mm) / spacing_
        axes = np.asarray(axes_mm) / spacing_
        if perturb:
            centre = centre + rng.uniform(-1.5, 1.5, 3)
            axes = axes * rng.uniform(0.97, 1.03, 3)
        reach = np.ceil(axes * 1.2).astype(int)
        low = np.maximum(np.floor(centre).astype(int) - reach, 0)
        high = np.minimum(np.floor(centre).astype(int) + reach + 1, shape)
        grid = np.ogrid[tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))]
        radius = sum(((axis_grid - c) / a) ** 2 for axis_grid, c, a in zip(grid, centre, axes, strict=True))
        wobble = sum(
            0.04 * np.sin(sum(g * w for g, w in zip(grid, rng.uniform(-0.15, 0.15, 3), strict=True)) + phase)
            for phase in rng.uniform(0, 2 * np.pi, 3)
        )
        box = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
        labels[box][radius + wobble < 1.0] = label
    return labels


def make_output(
    kind: str,
    reference: np.ndarray,
    rng: np.random.Generator,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    displacement: int = DISPLACEMENT_VOXELS,
) -> np.ndarray:
    """The 'output' mask of one pair kind, derived from the reference."""
    if kind == "near":
        return paint_organs(rng, True, shape, spacing)
    if kind == "displaced":
        output = np.zeros_like(reference)
        output[displacement:] = reference[:-displacement]
        return output
    if kind == "swapped":
        first, second = SWAPPED
        output = reference.copy()
        output[reference == first], output[reference == second] = second, first
        return output
    if kind == "missing":
        return np.where(reference == MISSING, 0, reference).astype(reference.dtype)
    raise ValueError(f"unknown pair kind {kind!r}; expected one of {', '.join(PAIRS)}")


def make_pairs(
    seed: int = 0,
    shape: tuple[int, ...] = SHAPE,
    spacing: tuple[float, ...] = SPACING_MM,
    displacement: int = DISPLACEMENT_VOXELS,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The seeded reference and one output per pair kind."""
    rng = np.random.default_rng(seed)
    reference = paint_organs(rng, False, shape, spacing)
    return reference, {
        kind: make_output(kind, reference, rng, shape, spacing, displacement) for kind in PAIRS
    }


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


def armgate_metrics(
    output: np.ndarray, reference: np.ndarray, spacing_mm: tuple[float, ...]
) -> compare.LabelReport:
    return compare.compare_arrays(output, reference, spacing_mm, nsd_tolerance_mm=NSD_TOLERANCE_MM)


# What max_differences compares, per metric: (which labels, how the difference is taken). Volume is not
# compared (MONAI has no volume metric); the affine is not either (both sides get the same spacing).
COMPARED = {
    "dice": ("every label either mask holds", "|armgate − MONAI|"),
    "nsd": ("the labels both masks hold", "|armgate − MONAI|"),
    "hd95": ("the labels both masks hold", "|armgate − MONAI| ÷ max(MONAI, 1 mm)"),
}


def compared_text() -> str:
    """COMPARED in words, for the figure's detail and bench.json."""
    return "; ".join(f"{metric}: {how}, over {labels}" for metric, (labels, how) in COMPARED.items())


def max_differences(report: compare.LabelReport, theirs: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest difference from MONAI per metric of COMPARED, over the labels COMPARED names for it
    (MONAI's distances are undefined where a mask lacks the label).

    Dice and NSD (fractions) as |armgate − MONAI|; HD95 relative to MONAI's value, since MONAI
    returns it as float32, whose resolution at 16–32 mm is 1.9e-6 mm: an absolute 1e-6 mm would
    test float32 rounding, not agreement. The absolute mm difference is kept as "hd95_abs_mm"."""
    both = set(report.output_labels) & set(report.reference_labels)
    differences: dict[str, float] = {}
    for metric in COMPARED:
        values = theirs[metric]
        rows = [m for m in report.per_label if metric == "dice" or m.label in both]
        ours = np.array([getattr(m, metrics.BY_NAME[metric].field) for m in rows], dtype=np.float64)
        reference = values[[m.label - 1 for m in rows]]
        absolute = np.abs(ours - reference)
        if metric == "hd95":
            differences["hd95_abs_mm"] = float(np.max(absolute)) if ours.size else 0.0
            absolute = absolute / np.maximum(np.abs(reference), 1.0)
        differences[metric] = float(np.max(absolute)) if ours.size else 0.0
    return differences


HEADLINE_METRICS = tuple(COMPARED)  # hd95 relative; see max_differences


def warm_up() -> None:
    """Both sides' imports and first-call set-up, outside every timer."""
    reference, outputs = make_pairs(0, (32, 32, 20), (12.5, 12.5, 22.5), 2)
    armgate_metrics(outputs["near"], reference, (12.5, 12.5, 22.5))
    monai_metrics(outputs["near"], reference, (12.5, 12.5, 22.5), len(ORGANS), NSD_TOLERANCE_MM)


def _timed(function: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def load_both(paths: Sequence[Path]) -> list[np.ndarray]:
    """The load baseline: both NIfTI files read and inflated side by side on two threads, as armgate's
    compare reads them (validation.compare.load_masks), without its checks."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda path: np.asanyarray(nib.load(path).dataobj), paths))


def measure_pair(output: np.ndarray, reference: np.ndarray, directory: Path) -> dict[str, Any]:
    """One repeat of one pair: both sides once from the arrays; armgate from the files; the load floor."""
    affine = np.diag([*SPACING_MM, 1.0])
    paths = directory / "output.nii.gz", directory / "reference.nii.gz"
    for array, path in zip((output, reference), paths, strict=True):
        nib.save(nib.Nifti1Image(array, affine), path)
    ours, armgate_s = _timed(lambda: armgate_metrics(output, reference, SPACING_MM))
    theirs, monai_s = _timed(
        lambda: monai_metrics(output, reference, SPACING_MM, len(ORGANS), NSD_TOLERANCE_MM)
    )
    _, from_files_s = _timed(lambda: compare.compare_masks(*paths, nsd_tolerance_mm=NSD_TOLERANCE_MM))
    _, load_s = _timed(lambda: load_both(paths))
    return {
        "armgate_s": armgate_s,
        "monai_s": monai_s,
        "armgate_from_files_s": from_files_s,
        "load_s": load_s,
        "max_abs_diff": max_differences(ours, theirs),
    }


def section_compare(ctx: Any) -> list[Figure]:
    """Every pair, ctx.runs repeats each; the worst pair's speed-up and the largest difference."""
    warnings.filterwarnings("ignore", module=r"monai\.")  # deprecation notes, once per call
    warm_up()
    reference, outputs = make_pairs(0)
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in PAIRS}
    with tempfile.TemporaryDirectory(prefix="armgate-bench-compare-") as scratch:
        for index in range(ctx.runs):
            for kind in PAIRS:
                results[kind].append(measure_pair(outputs[kind], reference, Path(scratch)))
                last = results[kind][-1]
                print(
                    f"  compare {kind} {index + 1}: armgate {last['armgate_s']:.2f} s, "
                    f"MONAI {last['monai_s']:.1f} s",
                    flush=True,
                )
    speedup = {k: [r["monai_s"] / r["armgate_s"] for r in results[k]] for k in PAIRS}
    over_load = {k: [r["armgate_from_files_s"] / r["load_s"] for r in results[k]] for k in PAIRS}
    worst = min(PAIRS, key=lambda k: median(speedup[k]))
    worst_load = max(PAIRS, key=lambda k: median(over_load[k]))
    diffs = [max(r["max_abs_diff"][m] for m in HEADLINE_METRICS) for k in PAIRS for r in results[k]]
    shape = "×".join(map(str, SHAPE))
    figures = [
        SPEEDUP.figure(
            speedup[worst],
            detail=f"{worst}: MONAI {median([r['monai_s'] for r in results[worst]]):.1f} s / armgate "
            f"{median([r['armgate_s'] for r in results[worst]]):.2f} s; {shape}, {len(ORGANS)} labels",
            extra={"pairs": results},
        )
    ]
    for kind in PAIRS:
        figures.append(
            Figure(
                f"speedup_vs_monai_{kind}",
                f"   MONAI ÷ armgate, {kind}",
                speedup[kind],
                detail=f"MONAI {median([r['monai_s'] for r in results[kind]]):.1f} s / armgate "
                f"{median([r['armgate_s'] for r in results[kind]]):.2f} s",
            )
        )
    figures += [
        MAX_DIFF.figure(
            diffs,
            unit="abs",
            aggregate="max",
            detail=f"{compared_text()}; every pair and run",
        ),
        Figure(
            "armgate_over_load_worst_pair",
            "4  armgate from files ÷ NIfTI load, worst pair",
            over_load[worst_load],
            target=LOAD_TARGET,
            detail=f"{worst_load}: armgate from the files "
            f"{median([r['armgate_from_files_s'] for r in results[worst_load]]):.2f} s / load "
            f"{median([r['load_s'] for r in results[worst_load]]):.2f} s (both on two threads, as armgate)",
        ),
    ]
    return figures
