"""`python -m validation golden`: a case's golden from the app's SEG (or mask) on the reference platform."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset

from tests.test_seg import NAMES, label_map, make_ct_series, make_seg
from tests.test_seg_only import write_contract
from validation import contract, golden
from validation.errors import GateError
from validation.profiles import ROOT

APP = contract.load()


@pytest.fixture
def series(tmp_path: Path) -> tuple[Path, list[Dataset]]:
    return tmp_path / "ct", make_ct_series(tmp_path / "ct")


def test_a_seg_becomes_a_label_map_on_its_series_grid(tmp_path: Path, series) -> None:
    ct_dir, source = series
    seg = make_seg(tmp_path / "1.2.3.dcm", source, label_map(), ["liver", "right kidney"])
    written = golden.seg_to_label_map(seg, ct_dir, NAMES, tmp_path / "reference" / "golden.nii.gz")
    image = nib.load(written)
    assert np.array_equal(np.asarray(image.dataobj), label_map().transpose(2, 1, 0))
    assert np.allclose(image.affine, np.diag([-0.8, -0.8, 2.0, 1.0]))  # the series' grid, RAS


def test_a_seg_with_an_undeclared_label_is_refused_naming_the_seg(tmp_path: Path, series) -> None:
    ct_dir, source = series
    seg = make_seg(tmp_path / "1.2.3.dcm", source, label_map(), ["liver", "gallbladder"])
    with pytest.raises(GateError) as error:
        golden.seg_to_label_map(seg, ct_dir, NAMES, tmp_path / "golden.nii.gz")
    assert str(error.value).startswith(f"{seg}: segment 2 'Gallbladder' is not a label the contract declares")
    assert not (tmp_path / "golden.nii.gz").exists()


@pytest.mark.parametrize("what", ["not-a-seg", "other-series"])
def test_the_command_refuses_bad_input_in_one_line(tmp_path: Path, series, what: str) -> None:
    ct_dir, source = series
    if what == "not-a-seg":
        seg, needle = tmp_path / "notes.dcm", "not a DICOM Segmentation"
        seg.write_text("hello")
    else:  # a SEG of this series, read against another series' folder
        seg = make_seg(tmp_path / "1.2.3.dcm", source, label_map(), ["liver", "right kidney"])
        ct_dir, needle = tmp_path / "other", "which is not a volume in"
        make_ct_series(ct_dir)
    command = [sys.executable, "-m", "validation", "golden", "--seg", str(seg), "--dicom", str(ct_dir)]
    command += ["-o", str(tmp_path / "g.nii.gz")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"armgate: {seg}: ") and needle in lines[0], lines
    assert not (tmp_path / "g.nii.gz").exists()


@pytest.mark.slow
def test_run_writes_the_golden_the_gate_holds_the_app_to(tmp_path: Path) -> None:
    """The repository's app gated by its SEG alone: the golden made from its host run's SEG equals the
    committed golden (made from its NIfTI mask) voxel for voxel, on the same grid."""
    app = write_contract(tmp_path, '[outputs]\nseg = "*.dcm"')
    case = tmp_path / "two-series"
    shutil.copytree(APP.default_cases / "two-series" / "dicom", case / "dicom")
    command = [sys.executable, "-m", "validation", "golden", "--app", str(app), "--run", str(case)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    made = nib.load(case / "reference" / "golden.nii.gz")
    committed = nib.load(APP.default_cases / "two-series" / "reference" / "golden.nii.gz")
    assert np.array_equal(np.asarray(made.dataobj), np.asarray(committed.dataobj))
    assert np.allclose(made.affine, committed.affine, atol=1e-6)
