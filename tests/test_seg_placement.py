"""A SEG as the label map of an app that writes no mask: placed on the series' grid, or refused with why.

Built on the tiny synthetic series of tests/test_seg.py; the grids of the fixture cases are held to
their goldens, which the app wrote on each series' grid.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset

from tests.test_seg import NAMES, label_map, make_ct_series, make_seg
from validation import compare, contract, dicom_grid, seg_placement

CASES = contract.load().default_cases


@pytest.fixture
def series(tmp_path: Path) -> tuple[Path, list[Dataset]]:
    return tmp_path / "ct", make_ct_series(tmp_path / "ct")


def _grid(ct_dir: Path) -> dicom_grid.SeriesGrid:
    (grid,) = dicom_grid.read_grids(ct_dir).series.values()
    return grid


def _placed(
    tmp_path: Path, series, labels: np.ndarray, names: list[str], edit=None
) -> seg_placement.PlacedSeg:
    ct_dir, source = series
    dataset = hd.seg.segread(make_seg(tmp_path / "seg.dcm", source, labels, names))
    if edit is not None:
        edit(dataset)
    return seg_placement.place(dataset, _grid(ct_dir), NAMES)


def test_a_seg_is_placed_voxel_for_voxel(tmp_path: Path, series) -> None:
    placed = _placed(tmp_path, series, label_map(), ["liver", "right kidney"])
    assert placed.problems == () and placed.outcome().passed
    # NIfTI axis order (column, row, slice) against the SEG's (slice, row, column)
    assert np.array_equal(placed.labels, label_map().transpose(2, 1, 0))
    assert placed.labels.shape == placed.grid.shape == (16, 16, 4)


def test_values_come_from_the_contract_by_name_not_by_segment_number(tmp_path: Path, series) -> None:
    """The app numbers its segments 1..K in its own order; the label values are the contract's."""
    labels = label_map()
    swapped = np.where(labels == 1, 2, np.where(labels == 2, 1, 0)).astype(np.uint8)
    placed = _placed(tmp_path, series, swapped, ["liver", "right kidney"])
    # segment 1 is now the kidney's voxels under the name "Liver": they get the liver's value, 1
    assert np.array_equal(placed.labels, swapped.transpose(2, 1, 0))


def _shift_one_slice(dataset: Dataset) -> None:
    for frame in dataset.PerFrameFunctionalGroupsSequence:
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        position[2] = float(position[2]) + 2.0  # the series' slice spacing


def test_a_seg_shifted_by_one_slice_names_the_frames_off_their_source_images(tmp_path: Path, series) -> None:
    placed = _placed(tmp_path, series, label_map(), ["liver", "right kidney"], _shift_one_slice)
    assert placed.labels is None and len(placed.problems) == 1
    expected = r"\d+ of \d+ frames lie away from the image they derive from "
    expected += r"\(frame 1: 2\.00 mm from instance [\d.]+\)"
    assert re.fullmatch(expected, placed.problems[0]), placed.problems


def _shift_one_slice_unreferenced(dataset: Dataset) -> None:
    """Shifted, and without the per-frame source references that would give the shift away."""
    _shift_one_slice(dataset)
    for frame in dataset.PerFrameFunctionalGroupsSequence:
        del frame.DerivationImageSequence


def test_a_shifted_seg_without_source_references_fails_the_comparison(tmp_path: Path, series) -> None:
    placed = _placed(tmp_path, series, label_map(), ["liver", "right kidney"], _shift_one_slice_unreferenced)
    assert placed.problems == ()  # every pixel still lies on a voxel: only the comparison can tell
    expected = label_map().transpose(2, 1, 0)
    reference = compare.LabelMask("golden", expected, placed.grid.affine)
    output = compare.LabelMask("seg", placed.labels, placed.grid.affine)
    _, outcomes = compare.gate_images(output, reference, {"dice_min": 0.999}, names=NAMES)
    failed = [o.name for o in outcomes if not o.passed]
    assert "dice[liver]" in failed and "dice[right kidney]" in failed, outcomes


def test_a_seg_shifted_off_the_series_names_the_pixels(tmp_path: Path, series) -> None:
    def half_a_voxel(dataset: Dataset) -> None:
        for frame in dataset.PerFrameFunctionalGroupsSequence:
            frame.PlanePositionSequence[0].ImagePositionPatient[0] += 0.4

    placed = _placed(tmp_path, series, label_map(), ["liver", "right kidney"], half_a_voxel)
    assert placed.labels is None and not placed.outcome().passed
    moved, off_grid = placed.problems
    assert moved.endswith(" mm from instance " + moved.rsplit(" ", 1)[-1]) and "0.40 mm" in moved
    assert off_grid.startswith(f"{int((label_map() > 0).sum())} segment pixels fall outside or between")


def test_a_segment_label_the_contract_does_not_declare_is_named(tmp_path: Path, series) -> None:
    placed = _placed(tmp_path, series, label_map(), ["liver", "kidney stone"])
    assert placed.labels is None
    declared = "(liver, right kidney)"
    assert placed.problems == (f"segment 2 'Kidney stone' is not a label the contract declares {declared}",)


def test_overlapping_segments_are_named(tmp_path: Path, series) -> None:
    def overlap(dataset: Dataset) -> None:  # both segments' frames at the same position
        frames = dataset.PerFrameFunctionalGroupsSequence
        first = frames[0].PlanePositionSequence[0].ImagePositionPatient
        for frame in frames:
            frame.PlanePositionSequence[0].ImagePositionPatient = list(first)

    labels = np.zeros_like(label_map())
    labels[0, 2:8, 3:9], labels[1, 2:8, 3:9] = 1, 2  # same pixels on two slices, one segment each
    placed = _placed(tmp_path, series, labels, ["liver", "right kidney"], overlap)
    assert placed.labels is None
    assert any("overlaps another segment in 36 voxels" in p for p in placed.problems), placed.problems


@pytest.mark.parametrize("case", ["standard", "oblique", "two-series"])
def test_each_fixture_golden_lies_on_its_expected_series_grid(case: str) -> None:
    """The grid convention is the app's: its golden masks lie on the grids read here (oblique included)."""
    folder = CASES / case
    expected = tomllib.loads((folder / "case.toml").read_text())["input"]["expected_series_instance_uid"]
    golden = compare.load_mask(folder / "reference" / "golden.nii.gz")
    grids = dicom_grid.read_grids(folder / "dicom")
    found = grids.locate(golden.affine, golden.labels.shape, compare.DEFAULT_AFFINE_ATOL_MM)
    assert found is not None and found.series_uid == expected


def test_a_localizer_image_is_a_grid_of_its_own() -> None:
    """The two-series case's localizer (AP and lateral, one image each) does not stack; a mask on one of
    its images is still named, so a wrong pick can be told apart from a mask on no series at all."""
    grids = dicom_grid.read_grids(CASES / "two-series" / "dicom")
    assert len(grids.series) == 1 and len(grids.single_images) == 2
    image = grids.single_images[0]
    assert grids.locate(image.affine, image.shape, 1e-3) is image and image.shape[2] == 1
    assert grids.locate(image.affine + 5.0, image.shape, 1e-3) is None
