"""Mask comparison: analytic cases, edge cases, MONAI cross-check and the CLI contract."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from validation import compare
from validation.__main__ import main as armgate_main
from validation.errors import GateError
from validation.metrics import FAMILIES, METRICS, TOLERANCE_KEYS, Metric

NAMES = {1: "liver", 2: "spleen", 3: "kidney"}


def write_mask(path: Path, labels: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Path:
    nib.save(nib.Nifti1Image(labels, np.diag([*spacing, 1.0])), path)
    return path


def cube(
    shape: tuple[int, int, int] = (24, 24, 24), start: int = 5, size: int = 10, label: int = 1
) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint8)
    labels[start : start + size, start : start + size, start : start + size] = label
    return labels


def random_blobs(rng: np.random.Generator, shape: tuple[int, ...], n_labels: int) -> np.ndarray:
    """Smooth random blobs per label, some touching the image border, later labels painted over earlier."""
    labels = np.zeros(shape, dtype=np.uint8)
    for label in range(1, n_labels + 1):
        field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
        labels[field > np.quantile(field, 0.92)] = label
    return labels


def test_identical_masks_score_perfectly() -> None:
    labels = cube()
    labels[16:20, 16:20, 16:20] = 2
    report = compare.compare_arrays(labels, labels.copy(), (0.8, 0.8, 2.0))
    assert [m.label for m in report.per_label] == [1, 2]
    for metrics in report.per_label:
        assert (metrics.dice, metrics.hd95_mm, metrics.nsd, metrics.volume_diff_ml) == (1.0, 0.0, 1.0, 0.0)
    assert report.per_label[1].reference_volume_ml == pytest.approx(64 * 0.8 * 0.8 * 2.0 / 1000)


@pytest.mark.parametrize(
    ("axis", "spacing", "expected_hd95_mm"),
    [(0, (1.5, 1.0, 1.0), 3.0), (1, (1.5, 1.0, 1.0), 2.0), (2, (0.7, 0.7, 2.5), 5.0)],
)
def test_cube_shifted_two_voxels_has_hd95_of_the_shift(
    axis: int, spacing: tuple, expected_hd95_mm: float
) -> None:
    """A 10-voxel cube moved 2 voxels: Dice 2*8/20 = 0.8; a fifth of each surface (the trailing face)
    lies exactly 2 voxels from the other surface, and nothing lies further, so HD95 = 2 x spacing."""
    reference = cube()
    output = np.roll(reference, 2, axis=axis)
    (metrics,) = compare.compare_arrays(
        output, reference, spacing, nsd_tolerance_mm=expected_hd95_mm - 0.01
    ).per_label
    assert metrics.dice == pytest.approx(0.8)
    assert metrics.hd95_mm == pytest.approx(expected_hd95_mm)
    assert 0.5 < metrics.nsd < 1.0
    assert metrics.volume_diff_pct == 0.0


def test_nsd_counts_distances_up_to_the_tolerance_inclusive() -> None:
    reference = cube()
    output = np.roll(reference, 2, axis=0)
    (metrics,) = compare.compare_arrays(output, reference, (1.5, 1.0, 1.0), nsd_tolerance_mm=3.0).per_label
    assert metrics.nsd == 1.0


def test_label_in_one_mask_only_scores_zero_and_fails_its_checks(tmp_path: Path) -> None:
    reference = cube()
    reference[18:22, 18:22, 18:22] = 2
    output = np.where(reference == 2, 0, reference).astype(np.uint8)
    result = compare.compare_masks(
        write_mask(tmp_path / "out.nii.gz", output),
        write_mask(tmp_path / "ref.nii.gz", reference),
        names=NAMES,
    )
    assert result.missing_labels == (2,) and result.extra_labels == ()
    spleen = result.per_label[1]
    assert (spleen.dice, spleen.hd95_mm, spleen.nsd, spleen.output_voxels) == (0.0, math.inf, 0.0, 0)
    outcomes = {o.name: o for o in compare.evaluate(result, {"dice_min": 0.9, "hd95_max_mm": 5.0})}
    assert not outcomes["labels"].passed and "missing from the output: spleen" in outcomes["labels"].reason
    assert outcomes["dice[liver]"].passed and outcomes["hd95[liver]"].passed
    assert not outcomes["dice[spleen]"].passed and not outcomes["hd95[spleen]"].passed
    assert "absent from the output" in outcomes["hd95[spleen]"].reason
    document = json.loads(json.dumps(result.to_dict(), allow_nan=False))  # no Infinity in the JSON
    assert document["per_label"][1]["hd95_mm"] is None
    assert json.dumps([o.to_dict() for o in outcomes.values()], allow_nan=False)


def test_labels_outside_the_expected_set_fail_the_labels_check() -> None:
    labels = cube()
    labels[18:22, 18:22, 18:22] = 7
    mask = compare.LabelMask("m.nii.gz", labels, np.eye(4))
    result = compare.compare_images(mask, mask, labels=[1, 2])
    (labels_check,) = [o for o in compare.evaluate(result, {}) if o.name == "labels"]
    assert not labels_check.passed and "outside the expected set [1, 2]: 7" in labels_check.reason


def test_an_expected_label_absent_from_both_masks_fails_with_its_name() -> None:
    mask = compare.LabelMask("m.nii.gz", cube(label=1), np.eye(4))
    result = compare.compare_images(mask, mask, labels=[1, 2], names=NAMES)
    outcomes = {o.name: o for o in compare.evaluate(result, {"dice_min": 0.9})}
    assert result.absent_expected_labels == (2,)
    assert not outcomes["labels"].passed
    assert "expected but absent from both masks: spleen" in outcomes["labels"].reason
    assert outcomes["dice[liver]"].passed  # the cause is named once, by the labels check


def test_absent_in_both_labels_are_skipped() -> None:
    report = compare.compare_arrays(cube(label=3), cube(label=3), (1.0, 1.0, 1.0))
    assert [m.label for m in report.per_label] == [3]


def test_empty_masks_and_mixed_dtypes() -> None:
    empty = np.zeros((8, 8, 8), dtype=np.uint8)
    report = compare.compare_arrays(empty, empty, (1.0, 1.0, 1.0))
    assert report.per_label == () and report.output_labels == ()
    wide = cube().astype(np.uint16) * 300  # label 300 must not wrap to 44 against a uint8 map
    report = compare.compare_arrays(cube(label=44), wide, (1.0, 1.0, 1.0))
    assert report.output_labels == (44,) and report.reference_labels == (300,)
    assert compare.compare_arrays(cube() > 0, cube(), (1.0, 1.0, 1.0)).per_label[0].dice == 1.0


def test_another_affine_fails_geometry_and_computes_no_metrics() -> None:
    labels = cube()
    shifted = np.eye(4)
    shifted[0, 3] = 0.5
    result = compare.compare_images(
        compare.LabelMask("out.nii.gz", labels, shifted),
        compare.LabelMask("ref.nii.gz", labels, np.eye(4)),
        names=NAMES,
    )
    assert not result.geometry.matches and result.report is None and result.per_label == ()
    assert "differs from the reference's by up to 0.5 mm" in result.geometry.reason
    outcomes = compare.evaluate(result, {"dice_min": 0.9})
    assert [(o.name, o.passed) for o in outcomes] == [
        ("geometry", False),
        ("labels", False),
        ("dice[liver]", False),
        ("dice[spleen]", False),
        ("dice[kidney]", False),
    ]


def test_another_shape_fails_geometry() -> None:
    result = compare.compare_images(
        compare.LabelMask("out", cube((24, 24, 25)), np.eye(4)), compare.LabelMask("ref", cube(), np.eye(4))
    )
    assert (
        not result.geometry.matches
        and "24x24x25 differs from the reference's 24x24x24" in result.geometry.reason
    )


def test_affines_within_tolerance_match() -> None:
    nudged = np.eye(4)
    nudged[2, 3] = 5e-4
    result = compare.compare_images(
        compare.LabelMask("o", cube(), nudged), compare.LabelMask("r", cube(), np.eye(4))
    )
    assert result.geometry.matches and result.per_label[0].dice == 1.0


def test_spacing_comes_from_the_affine_columns() -> None:
    rotated = np.array(
        [[0.0, 0.0, 2.5, 0.0], [-0.7, 0.0, 0.0, 0.0], [0.0, 0.9, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    )
    assert compare.LabelMask("m", cube(), rotated).spacing_mm == pytest.approx((0.7, 0.9, 2.5))


@pytest.mark.parametrize(
    ("values", "message"),
    [(np.float32(0.5), "non-integer values (e.g. 0.5)"), (np.float32(np.nan), "contains NaN")],
)
def test_float_masks_that_are_not_labels_are_rejected(
    tmp_path: Path, values: np.floating, message: str
) -> None:
    labels = cube().astype(np.float32)
    labels[0, 0, 0] = values
    path = write_mask(tmp_path / "probabilities.nii.gz", labels)
    with pytest.raises(GateError, match=re.escape(message)) as error:
        compare.load_mask(path)
    assert str(path) in str(error.value)


def test_float_mask_with_integral_values_is_accepted(tmp_path: Path) -> None:
    mask = compare.load_mask(write_mask(tmp_path / "float.nii.gz", cube().astype(np.float32)))
    assert np.issubdtype(mask.labels.dtype, np.integer) and set(np.unique(mask.labels)) == {0, 1}


def test_negative_labels_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(GateError, match="negative"):
        compare.load_mask(write_mask(tmp_path / "neg.nii.gz", -cube().astype(np.int16)))


def test_evaluate_rejects_unknown_or_inconsistent_tolerances() -> None:
    mask = compare.LabelMask("m", cube(), np.eye(4))
    result = compare.compare_images(mask, mask, nsd_tolerance_mm=1.0)
    with pytest.raises(ValueError, match="unknown tolerance keys"):
        compare.evaluate(result, {"dice_minimum": 0.9})
    with pytest.raises(ValueError, match="nsd_tolerance_mm"):
        compare.evaluate(result, {"nsd_tolerance_mm": 2.0})


def test_gate_names_every_check_stably(tmp_path: Path) -> None:
    reference = cube()
    reference[18:22, 18:22, 18:22] = 2
    output_path = write_mask(tmp_path / "out.nii.gz", np.roll(reference, 1, axis=0))
    tolerances = {
        "dice_min": 0.95,
        "hd95_max_mm": 2.0,
        "nsd_min": 0.9,
        "nsd_tolerance_mm": 1.0,
        "volume_diff_max_pct": 1.0,
        "affine_atol_mm": 1e-3,
    }
    result, outcomes = compare.gate(
        output_path, write_mask(tmp_path / "ref.nii.gz", reference), tolerances, names=NAMES
    )
    assert [o.name for o in outcomes] == [
        "geometry",
        "labels",
        "dice[liver]",
        "hd95[liver]",
        "nsd[liver]",
        "volume[liver]",
        "dice[spleen]",
        "hd95[spleen]",
        "nsd[spleen]",
        "volume[spleen]",
    ]
    assert result.nsd_tolerance_mm == 1.0
    by_name = {o.name: o for o in outcomes}
    assert by_name["hd95[liver]"].passed and by_name["volume[liver]"].passed
    assert not by_name["dice[spleen]"].passed  # a 4-voxel cube moved by 1 voxel keeps Dice 0.75
    assert by_name["dice[spleen]"].value == pytest.approx(0.75)


def _monai_metrics(
    output: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...], n_labels: int, tolerance: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import torch
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric
    from monai.networks.utils import one_hot

    y_pred, y = (
        one_hot(torch.from_numpy(x.astype(np.int64))[None, None], n_labels + 1) for x in (output, reference)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dice = DiceMetric(include_background=False, reduction="none")(y_pred, y)
        hd95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
            y_pred, y, spacing=list(spacing)
        )
        nsd = SurfaceDiceMetric([tolerance] * n_labels, include_background=False, reduction="none")(
            y_pred, y, spacing=list(spacing)
        )
    return dice[0].numpy(), hd95[0].numpy(), nsd[0].numpy()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("seed", "spacing"),
    [
        (0, (0.7, 1.1, 2.5)),
        (1, (0.7, 1.1, 2.5)),
        (2, (0.7, 1.1, 2.5)),
        (3, (0.7, 1.1, 2.5)),
        (4, (0.5, 0.5, 5.0)),
    ],
)
def test_metrics_equal_monai(seed: int, spacing: tuple[float, float, float]) -> None:
    """Random but seeded label maps, near (even seeds) and far (odd seeds) from each other; seed 3 is
    Fortran-ordered like nibabel's arrays, seed 4 thick-sliced. Every value must equal MONAI's within
    Dice 1e-6, mm 1e-3."""
    rng = np.random.default_rng(seed)
    shape, n_labels, tolerance = (40, 36, 24), 4, 1.5
    reference = random_blobs(rng, shape, n_labels)
    if seed % 2:
        output = random_blobs(rng, shape, n_labels)
    else:  # small disagreements: drop 5 % of voxels and grow label 1 by one voxel
        output = np.where(rng.random(shape) < 0.05, 0, reference).astype(np.uint8)
        output[ndimage.binary_dilation(reference == 1) & (reference == 0)] = 1
    if seed == 3:
        output, reference = np.asfortranarray(output), np.asfortranarray(reference)
    report = compare.compare_arrays(output, reference, spacing, nsd_tolerance_mm=tolerance)
    dice, hd95, nsd = _monai_metrics(output, reference, spacing, n_labels, tolerance)
    assert [m.label for m in report.per_label] == [1, 2, 3, 4]
    ours = np.array([(m.dice, m.hd95_mm, m.nsd) for m in report.per_label])
    assert np.all(ours[:, 1] > 0) and np.all(ours[:, 0] < 1)  # non-trivial cases, so the check can fail
    np.testing.assert_allclose(ours[:, 0], dice, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours[:, 1], hd95, rtol=0, atol=1e-3)
    np.testing.assert_allclose(ours[:, 2], nsd, rtol=0, atol=1e-3)


@pytest.mark.slow
def test_monai_cross_check_detects_a_wrong_spacing() -> None:
    """The cross-check is sensitive: metrics computed with the axes' spacings swapped differ from MONAI's."""
    rng = np.random.default_rng(1)
    reference, output = (random_blobs(rng, (40, 36, 24), 2) for _ in range(2))
    _, hd95, _ = _monai_metrics(output, reference, (0.7, 1.1, 2.5), 2, 1.5)
    swapped = compare.compare_arrays(output, reference, (2.5, 1.1, 0.7), nsd_tolerance_mm=1.5)
    assert np.max(np.abs([m.hd95_mm for m in swapped.per_label] - hd95)) > 1e-3


# --- CLI: python -m validation compare ---


def test_cli_prints_a_table_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = write_mask(tmp_path / "ref.nii.gz", cube())
    output = write_mask(tmp_path / "out.nii.gz", np.roll(cube(), 1, axis=2))
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"1": "liver"}))
    assert armgate_main(["compare", str(output), str(reference), "--names", str(names)]) == 0
    table = capsys.readouterr().out
    assert "liver" in table and all(metric.title in table for metric in METRICS)


@pytest.mark.parametrize("metric", METRICS, ids=lambda metric: metric.name)
def test_every_declared_metric_has_a_limit_flag_that_gates(
    metric: Metric, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One declaration: each metric's limit is a tolerance key and a compare flag, and a limit no mask
    can meet fails that metric's check (exit 1), named."""
    reference = write_mask(tmp_path / "ref.nii.gz", cube())
    output = write_mask(tmp_path / "out.nii.gz", np.roll(cube(), 1, axis=2))
    unreachable = 1.01 if metric.at_least else -1.0
    assert metric.limit in TOLERANCE_KEYS and metric.name in FAMILIES
    assert armgate_main(["compare", str(output), str(reference), metric.flag, str(unreachable)]) == 1
    assert f"FAIL {metric.name}[1]: {metric.name} " in capsys.readouterr().out


def test_cli_json_and_dice_min_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = write_mask(tmp_path / "ref.nii.gz", cube())
    output = write_mask(tmp_path / "out.nii.gz", np.roll(cube(), 2, axis=0))
    assert armgate_main(["compare", str(output), str(reference), "--json", "--nsd-tolerance", "1"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["per_label"][0]["dice"] == pytest.approx(0.8) and document["nsd_tolerance_mm"] == 1.0
    assert armgate_main(["compare", str(output), str(reference), "--json", "--dice-min", "0.9"]) == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["dice[1]"]["passed"] is False and checks["dice[1]"]["limit"] == 0.9
    assert armgate_main(["compare", str(output), str(reference), "--dice-min", "0.75"]) == 0


def test_cli_two_empty_masks_under_limits_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = np.zeros((8, 8, 8), dtype=np.uint8)
    reference = write_mask(tmp_path / "ref.nii.gz", empty)
    output = write_mask(tmp_path / "out.nii.gz", empty)
    assert armgate_main(["compare", str(output), str(reference)]) == 0  # measuring alone: nothing to fail
    capsys.readouterr()
    assert armgate_main(["compare", str(output), str(reference), "--dice-min", "0.9"]) == 1
    failures = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert failures == ["FAIL measured: no label in either mask: nothing to measure under the limits"]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("armgate: ") and "Traceback" not in captured.err
    return lines[0]


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = write_mask(tmp_path / "ref.nii.gz", cube())
    missing = tmp_path / "missing.nii.gz"
    assert armgate_main(["compare", str(missing), str(reference)]) == 2
    assert str(missing) in _one_line_error(capsys)

    not_nifti = tmp_path / "notes.nii.gz"
    not_nifti.write_text("not an image")
    assert armgate_main(["compare", str(not_nifti), str(reference)]) == 2
    assert "not a readable NIfTI image" in _one_line_error(capsys)

    floats = cube().astype(np.float32) * 0.5
    probabilities = write_mask(tmp_path / "prob.nii.gz", floats)
    assert armgate_main(["compare", str(probabilities), str(reference)]) == 2
    assert str(probabilities) in _one_line_error(capsys)

    other_grid = write_mask(tmp_path / "grid.nii.gz", cube(), spacing=(1.0, 1.0, 2.0))
    assert armgate_main(["compare", str(other_grid), str(reference)]) == 2
    line = _one_line_error(capsys)
    assert str(other_grid) in line and "resample the output onto the reference grid" in line

    assert armgate_main(["compare", str(reference)]) == 2
    assert "compare:" in _one_line_error(capsys)

    assert armgate_main(["compare", str(reference), str(reference), "--labels", "1,x"]) == 2
    assert "--labels" in _one_line_error(capsys)
