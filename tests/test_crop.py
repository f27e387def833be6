"""The cross-architecture tier's crop of a study (validation/crop.py): the box around the organ it holds
best, and the crop written as a case whose DICOM, references and case.toml agree with each other."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from validation import cases, contract, crop, dicom_grid

APP = contract.load()
STANDARD = next(case for case in cases.discover(APP.default_cases, APP) if case.name == "standard")


def test_the_box_goes_to_the_organ_it_holds_best() -> None:
    labels = np.zeros((40, 40, 40), dtype=np.uint8)
    labels[2:30, 2:30, 2:30] = 6  # a large organ: 28³, only part of it fits a 12³ box
    labels[30:38, 30:38, 30:38] = 1  # a small one: 8³, all of it fits
    chosen = crop.choose(labels, (12, 12, 12))
    assert chosen.label == 1 and chosen.inside == 1.0
    assert all(lo <= 30 and h >= 38 for lo, h in zip(chosen.low, chosen.high, strict=True))
    assert chosen.high == (40, 40, 40) or max(chosen.high) <= 40  # kept inside the grid
    empty = crop.choose(np.zeros((40, 40, 40), dtype=np.uint8), (12, 12, 12))
    assert empty.label is None and empty.low == (14, 14, 14)


def test_box_size_follows_the_grids_voxels() -> None:
    grid = dicom_grid.read_grids(STANDARD.dicom_dir).series[STANDARD.expected_series_uid]
    sizes = crop.voxel_mm(grid)
    box = crop.box_voxels(grid, [96 * 1.5, 96 * 1.5, 96 * 2.0])
    expected = (min(n, int(mm // s)) for n, mm, s in zip(grid.shape, (144, 144, 192), sizes, strict=True))
    assert box == tuple(expected)


def _cut(tmp_path, monkeypatch: pytest.MonkeyPatch | None = None):
    grid = dicom_grid.read_grids(STANDARD.dicom_dir).series[STANDARD.expected_series_uid]
    golden = np.asarray(__import__("nibabel").load(str(STANDARD.reference("golden"))).dataobj)
    chosen = crop.choose(golden, (48, 40, 32))
    target = crop.write_case(STANDARD, grid, chosen, tmp_path / "standard", APP.labels)
    return grid, golden, chosen, target


def _by_uid(folder) -> dict:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in folder.rglob("*.dcm")}


def test_the_crop_is_a_case_on_its_own_grid(tmp_path) -> None:
    """Its DICOM stacks into the box's grid, its references lie on it with the source's voxels, its
    pixels are the source's, and its case.toml loads (facts the crop changes left out)."""
    import nibabel as nib

    _, golden, chosen, target = _cut(tmp_path)
    loaded = cases.load_case(target, APP.labels, cases.run_time(APP))
    cut_grid = dicom_grid.read_grids(loaded.dicom_dir).series[STANDARD.expected_series_uid]
    assert cut_grid.shape == chosen.shape == (48, 40, 32)
    reference = nib.load(str(loaded.reference("golden")))
    assert dicom_grid.on_grid(reference.affine, reference.shape, cut_grid, 1e-3)
    box = tuple(slice(lo, h) for lo, h in zip(chosen.low, chosen.high, strict=True))
    assert np.array_equal(np.asarray(reference.dataobj), golden[box])
    assert loaded.labels == (chosen.label,) and loaded.windows == 1
    uid = cut_grid.slice_instances[0]
    source = pydicom.dcmread(_by_uid(STANDARD.dicom_dir)[uid]).pixel_array
    cut = pydicom.dcmread(_by_uid(loaded.dicom_dir)[uid]).pixel_array
    (i0, j0, _), (i1, j1, _) = chosen.low, chosen.high
    assert np.array_equal(cut, source[j0:j1, i0:i1])


def test_an_image_cut_without_moving_its_position_is_off_the_references_grid(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Must fail: the position moved to the box's first pixel is what puts the cut images under the
    cut references."""
    import nibabel as nib

    def unmoved(dataset: pydicom.Dataset, chosen: crop.Crop) -> pydicom.Dataset:
        (i0, j0, _), (i1, j1, _) = chosen.low, chosen.high
        pixels = dataset.pixel_array[j0:j1, i0:i1]
        dataset.set_pixel_data(np.ascontiguousarray(pixels), str(dataset.PhotometricInterpretation),
                               int(dataset.BitsStored), generate_instance_uid=False)  # fmt: skip
        return dataset

    monkeypatch.setattr(crop, "_cut_image", unmoved)
    _, _, _, target = _cut(tmp_path)
    cut_grid = dicom_grid.read_grids(target / "dicom").series[STANDARD.expected_series_uid]
    reference = nib.load(str(target / "reference" / "golden.nii.gz"))
    assert not dicom_grid.on_grid(reference.affine, reference.shape, cut_grid, 1e-3)
