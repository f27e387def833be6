"""Headers as scanners and exporters write them, on the host: each variant works or is refused by name.

The inputs come from fixtures/header_suite.py, generated from the committed standard phantom at test time:
a small copy of its series (every second row, column and slice), one series holding one tolerated variant per
file (must give the very same mask as the unmutated copy), and one folder per header fault (must be refused
with one line naming the file and what is wrong, exit 2, no traceback, input untouched).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from fixtures.header_suite import (
    FAULTS,
    TOLERATED,
    HeaderFault,
    dicom_files,
    small_series,
    write_tolerated_series,
)
from tests.test_app import (
    AppRun,
    assert_one_line_failure,
    assert_succeeded,
    case_dicom,
    run_app,
    tree_snapshot,
)


@pytest.fixture(scope="module")
def small_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("headers") / "base"
    small_series(case_dicom("standard"), folder)
    return folder


@pytest.fixture(scope="module")
def base_run(small_base: Path, tmp_path_factory: pytest.TempPathFactory) -> AppRun:
    run = run_app(small_base, tmp_path_factory.mktemp("headers-out") / "base", form="path")
    assert_succeeded(run)
    return run


def _mask(run: AppRun) -> nib.Nifti1Image:
    return nib.load(run.output / "mask.nii.gz")


@pytest.mark.slow
def test_tolerated_variants_give_the_same_mask(small_base: Path, base_run: AppRun, tmp_path: Path) -> None:
    series = tmp_path / "export"
    applied = write_tolerated_series(small_base, series)
    assert set(applied.values()) == {variant.name for variant in TOLERATED}
    first = dicom_files(series)[0]
    assert applied[first] == "empty-series-number", "the SDK takes series attributes from the first file"
    assert pydicom.dcmread(first).SeriesNumber is None
    bare = [path for path, name in applied.items() if name == "bare-dataset"]
    assert bare and bare[0].read_bytes()[128:132] != b"DICM" and bare[0].read_bytes()[:2] == b"\x08\x00"
    before = tree_snapshot(series)

    run = run_app(series, tmp_path / "out", form="path")

    assert_succeeded(run)
    assert (run.output / "seg.dcm").is_file()
    expected, got = _mask(base_run), _mask(run)
    np.testing.assert_allclose(got.affine, expected.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(expected.dataobj))
    assert np.asarray(expected.dataobj).any()
    assert tree_snapshot(series) == before


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
def test_header_fault_is_refused_naming_the_file(
    fault: HeaderFault, small_base: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    shutil.copytree(small_base, folder)
    damaged = fault.mutate(folder)
    before = tree_snapshot(folder)

    run = run_app(folder, tmp_path / "out", form="path")

    assert run.returncode == 2, run.stderr
    assert_one_line_failure(run, fault.refused_with, "fix:")
    line = run.stderr.strip()
    assert "no DICOM files" not in line and "non-DICOM" not in line
    named = str(damaged) if damaged is not None else str(folder)
    assert named in line, f"{named} not named in {line!r}"
    assert tree_snapshot(folder) == before


@pytest.mark.slow
def test_single_slice_ct_is_refused_with_one_line(tmp_path: Path) -> None:
    """pydicom's own CT_small.dcm: one 128x128 slice, a real scanner's header."""
    from pydicom.data import get_testdata_file

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "CT_small.dcm")
    run = run_app(folder, tmp_path / "out", form="path")
    assert run.returncode == 2
    assert_one_line_failure(run, str(folder), "has 1 image", "fix:")


@pytest.mark.slow
def test_folder_of_other_files_is_still_called_non_dicom(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("not DICOM\n")
    (folder / "b.bin").write_bytes(bytes(range(256)) * 4)
    run = run_app(folder, tmp_path / "out", form="path")
    assert run.returncode == 2
    assert_one_line_failure(run, str(folder), "holds no DICOM files (2 files, none DICOM", "fix:")
