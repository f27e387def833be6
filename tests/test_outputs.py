"""Outputs found by the contract's patterns (exactly one file each), and the STL mesh's place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from stl import mesh

from validation import contract, dicom_grid, outputs

STANDARD = contract.load().default_cases / "standard" / "dicom"
PATTERNS = {"seg": "*.dcm", "stl": "stl/*.stl"}


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")


def test_one_file_per_pattern_is_found(tmp_path: Path) -> None:
    _touch(tmp_path, "1.2.826.0.1.3680043.10.511.3.1234.dcm", "stl/spleen.stl", "notes.txt")
    found = outputs.find(tmp_path, PATTERNS)
    assert found.problems == ()
    assert found.files == {
        "seg": tmp_path / "1.2.826.0.1.3680043.10.511.3.1234.dcm",
        "stl": tmp_path / "stl" / "spleen.stl",
    }


def test_two_files_matching_one_pattern_fail_naming_both(tmp_path: Path) -> None:
    _touch(tmp_path, "1.2.3.dcm", "1.2.4.dcm", "stl/spleen.stl")
    found = outputs.find(tmp_path, PATTERNS)
    assert found.problems == ("seg: 2 files match '*.dcm' (1.2.3.dcm, 1.2.4.dcm); exactly one must",)
    assert "seg" not in found.files and "stl" in found.files


def test_nothing_matching_names_the_pattern_and_what_is_there(tmp_path: Path) -> None:
    _touch(tmp_path, "mask.nii.gz")
    found = outputs.find(tmp_path, {"seg": "*.dcm"})
    assert found.problems == ("seg: nothing matches '*.dcm'; the output folder holds mask.nii.gz",)


def _mesh_at(path: Path, corner_lps: np.ndarray, size_mm: float = 10.0) -> Path:
    """A tetrahedron with one corner at `corner_lps`."""
    corners = corner_lps + size_mm * np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    faces = [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]
    shape = mesh.Mesh(np.zeros(len(faces), dtype=mesh.Mesh.dtype))
    for index, face in enumerate(faces):
        shape.vectors[index] = corners[list(face)]
    path.parent.mkdir(parents=True, exist_ok=True)
    shape.save(str(path))
    return path


@pytest.fixture(scope="module")
def grid() -> dicom_grid.SeriesGrid:
    (found,) = dicom_grid.read_grids(STANDARD).series.values()
    return found


def test_a_mesh_inside_the_series_passes(tmp_path: Path, grid: dicom_grid.SeriesGrid) -> None:
    low, high = grid.patient_box_lps()
    assert outputs.stl_problem(_mesh_at(tmp_path / "in.stl", (low + high) / 2), grid) == ""


def test_a_mesh_placed_without_the_series_origin_fails_with_both_boxes(
    tmp_path: Path, grid: dicom_grid.SeriesGrid
) -> None:
    """An STL written in voxel-index millimetres (the series' origin left out) lies beside the patient."""
    _, high = grid.patient_box_lps()
    problem = outputs.stl_problem(_mesh_at(tmp_path / "out.stl", high + 50.0), grid)
    assert problem.startswith("out.stl: 12 of 12 vertices lie outside series "), problem
    assert "patient-space box (LPS mm: mesh x" in problem and "; series x" in problem


def test_a_file_that_is_not_stl_fails_in_one_line(tmp_path: Path, grid: dicom_grid.SeriesGrid) -> None:
    (tmp_path / "broken.stl").write_bytes(b"solid nothing\nendsolid\n" * 0 + b"\x00" * 10)
    problem = outputs.stl_problem(tmp_path / "broken.stl", grid)
    assert problem.startswith("broken.stl: ") and "\n" not in problem


def test_the_contract_refuses_outputs_without_a_label_map_or_outside_the_folder(tmp_path: Path) -> None:
    from tests.test_contract import _write  # a contract placed where the default's relative paths hold
    from validation.errors import GateError

    base = contract.DEFAULT_CONTRACT.read_text()
    old = base[base.index("[outputs]") : base.index("[labels]")]
    for outputs_table, needle in (
        ('[outputs]\nstl = "stl/*.stl"\n\n', "field 'outputs' declares no label map"),
        ('[outputs]\nseg = "../*.dcm"\n\n', "field 'outputs.seg' = '../*.dcm' must be a pattern inside"),
    ):
        path = _write(tmp_path, base.replace(old, outputs_table))
        try:
            with pytest.raises(GateError) as error:
                contract.load(path)
            assert needle in str(error.value) and "\n" not in str(error.value)
        finally:
            path.unlink()
    path = _write(tmp_path, base.replace(old, '[outputs]\nseg = "*.dcm"\nstl = "stl/*.stl"\n\n'))
    try:
        app = contract.load(path)
    finally:
        path.unlink()
    assert app.outputs == {"seg": "*.dcm", "stl": "stl/*.stl"} and app.mask is None and app.seg == "*.dcm"
