"""The voxel grids of a case's DICOM series, read from their headers: where a label map of each belongs.

A label map on a series' grid has axes (i, j, k) = (column within a slice, row within a slice, slice),
slices in ascending order along the slice normal (row cosine × column cosine), and a NIfTI affine that maps
(i, j, k) to patient RAS millimetres: the DICOM LPS affine built from ImageOrientationPatient, PixelSpacing
and the first and last ImagePositionPatient, times diag(-1, -1, 1, 1). It is the grid MONAI Deploy's
series-to-volume operator stacks and the one the references of every case are on, so a SEG placed here,
or an app's mask, can be compared with them voxel by voxel.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from validation.errors import GateError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
TAGS = [
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SeriesDescription", "Rows", "Columns",
    "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness",
]  # fmt: skip
OPTIONAL_TAGS = ("SeriesDescription", "SliceThickness")
ORIENTATION_ATOL = 1e-4


@dataclass(frozen=True)
class SeriesGrid:
    """One series' voxel grid: shape (columns, rows, slices) and RAS affine, with its instances per slice."""

    series_uid: str
    study_uid: str
    description: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    slice_instances: tuple[str, ...]  # SOPInstanceUID of slice k

    @property
    def label(self) -> str:
        """How messages name the series: UID, description and size."""
        description = f"'{self.description}', " if self.description else ""
        return f"series {self.series_uid} ({description}{len(self.slice_instances)} images)"

    def patient_box_lps(self) -> tuple[np.ndarray, np.ndarray]:
        """The (low, high) corners, LPS mm, of the box holding every voxel of the grid, half a voxel out."""
        ends = [(-0.5, size - 0.5) for size in self.shape]
        corners = np.array([[i, j, k, 1.0] for i in ends[0] for j in ends[1] for k in ends[2]])
        lps = (LPS_TO_RAS @ self.affine @ corners.T).T[:, :3]
        return lps.min(axis=0), lps.max(axis=0)


def _floats(values: object) -> np.ndarray:
    return np.array([float(v) for v in values])  # type: ignore[attr-defined]


def _lps_affine(header: pydicom.Dataset, slice_step: np.ndarray) -> np.ndarray:
    orientation = _floats(header.ImageOrientationPatient)
    row_spacing, column_spacing = _floats(header.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = orientation[:3] * column_spacing  # column index i steps along the row direction
    lps[:3, 1] = orientation[3:] * row_spacing  # row index j steps along the column direction
    lps[:3, 2] = slice_step
    lps[:3, 3] = _floats(header.ImagePositionPatient)
    return LPS_TO_RAS @ lps


def _series_grid(series_uid: str, ordered: list[pydicom.Dataset], slice_step: np.ndarray) -> SeriesGrid:
    first = ordered[0]
    return SeriesGrid(
        series_uid,
        str(first.get("StudyInstanceUID", "")),
        str(first.get("SeriesDescription", "")),
        (int(first.Columns), int(first.Rows), len(ordered)),
        _lps_affine(first, slice_step),
        tuple(str(h.SOPInstanceUID) for h in ordered),
    )


def _stacked(series_uid: str, headers: list[pydicom.Dataset]) -> SeriesGrid | None:
    """The grid of one series, or None when its images do not stack into one volume."""
    first = headers[0]
    orientation = _floats(first.ImageOrientationPatient)
    same = all(
        np.allclose(_floats(h.ImageOrientationPatient), orientation, atol=ORIENTATION_ATOL)
        and (h.Rows, h.Columns) == (first.Rows, first.Columns)
        for h in headers
    )
    if not same or len(headers) < 2:
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    ordered = sorted(headers, key=lambda h: float(normal @ _floats(h.ImagePositionPatient)))
    step = (_floats(ordered[-1].ImagePositionPatient) - _floats(ordered[0].ImagePositionPatient)) / (
        len(ordered) - 1
    )
    return _series_grid(series_uid, ordered, step)


@dataclass(frozen=True)
class CaseGrids:
    """The grids of a case's series; images of series that do not stack (a localizer's AP and lateral
    views) each count as a one-slice grid, so that a label map of one of them can still be named."""

    series: dict[str, SeriesGrid]
    single_images: tuple[SeriesGrid, ...]

    def locate(self, affine: np.ndarray, shape: tuple[int, ...], atol_mm: float) -> SeriesGrid | None:
        """The series (or single image) a label map with this affine and shape lies on, if any."""
        for grid in self.series.values():
            if on_grid(affine, shape, grid, atol_mm):
                return grid
        in_plane = [0, 1, 3]  # a one-slice map says nothing about the slice step
        for grid in self.single_images:
            if tuple(shape) == grid.shape and np.allclose(affine[:, in_plane], grid.affine[:, in_plane],
                                                          atol=atol_mm):  # fmt: skip
                return grid
        return None


def read_grids(dicom_dir: str | Path) -> CaseGrids:
    """The grids of every series under `dicom_dir` (headers only)."""
    dicom_dir = Path(dicom_dir)
    if not dicom_dir.is_dir():
        raise GateError(f"{dicom_dir}: no such folder; pass the case's DICOM folder")
    series: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for path in sorted(p for p in dicom_dir.rglob("*") if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=TAGS)
        except (InvalidDicomError, OSError, ValueError, TypeError):
            continue
        if all(tag in header for tag in TAGS if tag not in OPTIONAL_TAGS):
            series[str(header.SeriesInstanceUID)].append(header)
    stacked, singles = {}, []
    for uid, headers in series.items():
        grid = _stacked(uid, headers)
        if grid is not None:
            stacked[uid] = grid
            continue
        for header in headers:
            orientation = _floats(header.ImageOrientationPatient)
            step = np.cross(orientation[:3], orientation[3:]) * float(header.get("SliceThickness") or 1.0)
            singles.append(_series_grid(uid, [header], step))
    return CaseGrids(stacked, tuple(singles))


def on_grid(affine: np.ndarray, shape: tuple[int, ...], grid: SeriesGrid, atol_mm: float) -> bool:
    """Whether a label map with this affine and shape lies on `grid` (shape equal, affines within atol)."""
    return tuple(shape) == grid.shape and float(np.max(np.abs(affine - grid.affine))) <= atol_mm
