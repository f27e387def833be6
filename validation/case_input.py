"""A case's DICOM folder, read once (headers only), and its case.toml [input] facts checked against it.

What a case.toml says about its series (how many files and series, the study, the series the app must
pick, its slices, spacings and patient position) is checked before anything runs: a case that
describes another series than the one in its folder would otherwise be gated on data nobody meant.
The same headers size the case's timeout (validation/cases.py), so the folder is read once.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from validation.errors import GateError

MM_ATOL = 1e-3  # a declared spacing agrees with the headers' within this (DICOM writes decimal strings)
GEOMETRY = ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient")


@dataclass(frozen=True)
class DicomFolder:
    """Every DICOM file's header in a case's folder, by series (SeriesInstanceUID)."""

    path: Path
    series: dict[str, list[Dataset]]

    @property
    def files(self) -> int:
        return sum(len(headers) for headers in self.series.values())

    @property
    def studies(self) -> list[str]:
        return sorted({str(h.get("StudyInstanceUID", "")) for hs in self.series.values() for h in hs})

    def picked(self, series_uid: str | None = None) -> tuple[str, list[Dataset]] | None:
        """The series the app must pick (`series_uid`), else the one with most images; None if empty."""
        if series_uid in self.series:
            return series_uid, self.series[series_uid]
        uid = max(self.series, key=lambda found: (len(self.series[found]), found), default=None)
        return None if uid is None else (uid, self.series[uid])


def read_folder(dicom_dir: Path) -> DicomFolder:
    """The headers of every DICOM file under `dicom_dir` (pixel data not read); other files are skipped."""
    series: dict[str, list[Dataset]] = defaultdict(list)
    for path in sorted(p for p in dicom_dir.rglob("*") if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, TypeError):
            continue
        series[str(header.get("SeriesInstanceUID", ""))].append(header)
    return DicomFolder(dicom_dir, dict(series))


def _normal(header: Dataset) -> np.ndarray:
    orientation = np.asarray([float(v) for v in header.ImageOrientationPatient])
    return np.cross(orientation[:3], orientation[3:])


def _positions(headers: list[Dataset]) -> list[float]:
    """Each image's position along the slice normal, sorted."""
    normal = _normal(headers[0])
    return sorted(float(np.dot(normal, [float(v) for v in h.ImagePositionPatient])) for h in headers)


def slice_step_mm(headers: list[Dataset]) -> float | None:
    """The distance between neighbouring slices along the normal (SliceThickness for one image)."""
    with_geometry = [h for h in headers if all(key in h for key in GEOMETRY)]
    if not with_geometry:
        return None
    try:
        along = _positions(with_geometry)
        if len(along) > 1:
            return abs(along[-1] - along[0]) / (len(along) - 1)
        return float(with_geometry[0].get("SliceThickness") or 1.0)
    except (AttributeError, TypeError, ValueError):
        return None


def series_extent_mm(
    source: Path | DicomFolder, series_uid: str | None = None
) -> tuple[float, float, float] | None:
    """(columns, rows, slices) extent in mm of the series the app will pick (`series_uid`, else the
    one with most images with a geometry), from the headers; None when no series has one."""
    folder = source if isinstance(source, DicomFolder) else read_folder(source)
    placed = {uid: [h for h in hs if all(key in h for key in GEOMETRY)] for uid, hs in folder.series.items()}
    picked = DicomFolder(folder.path, {uid: hs for uid, hs in placed.items() if hs}).picked(series_uid)
    if picked is None:
        return None
    headers = picked[1]
    step = slice_step_mm(headers)
    try:
        rows, columns = int(headers[0].Rows), int(headers[0].Columns)
        row_mm, column_mm = (float(v) for v in headers[0].PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        return None
    if step is None:
        return None
    return (columns * column_mm, rows * row_mm, len(headers) * step)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _pixel_spacings(headers: list[Dataset]) -> list[float]:
    return sorted({round(float(v), 6) for h in headers if "PixelSpacing" in h for v in h.PixelSpacing})


def _equal_mm(declared: float, found: list[float]) -> bool:
    return bool(found) and all(math.isclose(declared, value, abs_tol=MM_ATOL) for value in found)


# field -> (what a valid value is, its example, whether the declared value agrees, what the DICOM has)
Fact = tuple[Callable[[Any], bool], str, Callable[[Any, DicomFolder, str | None], tuple[bool, str]]]


def _series_phrase(picked: tuple[str, list[Dataset]] | None) -> str:
    return f"in series {picked[0]}" if picked else "in no series (the folder holds no DICOM file)"


def _files(declared: Any, folder: DicomFolder, _: str | None) -> tuple[bool, str]:
    return declared == folder.files, f"{folder.files} DICOM file(s)"


def _series(declared: Any, folder: DicomFolder, _: str | None) -> tuple[bool, str]:
    return declared == len(folder.series), f"{len(folder.series)} series"


def _study(declared: Any, folder: DicomFolder, _: str | None) -> tuple[bool, str]:
    studies = folder.studies
    return studies == [declared], f"study {', '.join(studies) or 'none (no DICOM file)'}"


def _expected_series(declared: Any, folder: DicomFolder, _: str | None) -> tuple[bool, str]:
    return declared in folder.series, f"no such series (it has {', '.join(sorted(folder.series)) or 'none'})"


def _slices(declared: Any, folder: DicomFolder, uid: str | None) -> tuple[bool, str]:
    picked = folder.picked(uid)
    found = len(picked[1]) if picked else 0
    return declared == found, f"{found} image(s) {_series_phrase(picked)}"


def _pixel_spacing(declared: Any, folder: DicomFolder, uid: str | None) -> tuple[bool, str]:
    picked = folder.picked(uid)
    found = _pixel_spacings(picked[1]) if picked else []
    shown = ", ".join(f"{value:g}" for value in found) or "none"
    return _equal_mm(declared, found), f"pixel spacing {shown} mm {_series_phrase(picked)}"


def _slice_spacing(declared: Any, folder: DicomFolder, uid: str | None) -> tuple[bool, str]:
    picked = folder.picked(uid)
    step = slice_step_mm(picked[1]) if picked else None
    shown = "none" if step is None else f"{step:.4g}"
    found = [] if step is None else [step]
    return _equal_mm(declared, found), f"slices {shown} mm apart {_series_phrase(picked)}"


def _patient_position(declared: Any, folder: DicomFolder, uid: str | None) -> tuple[bool, str]:
    picked = folder.picked(uid)
    found = sorted({str(h.get("PatientPosition", "")) for h in picked[1]}) if picked else []
    return found == [declared], f"patient position {', '.join(found) or 'none'} {_series_phrase(picked)}"


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


FACTS: dict[str, Fact] = {
    "files": (_count, "64 (every DICOM file of every series in the folder)", _files),
    "series": (_count, "1 (how many series the folder holds)", _series),
    "study_instance_uid": (_text, '"2.25.…" (the one study of the folder)', _study),
    "expected_series_instance_uid": (_text, '"2.25.…" (the series the app must pick)', _expected_series),
    "slices": (_count, "64 (images in the series the app picks)", _slices),
    "pixel_spacing_mm": (_number, "1.5 (PixelSpacing, square pixels)", _pixel_spacing),
    "slice_spacing_mm": (_number, "2.0 (the distance between slices along their normal)", _slice_spacing),
    "patient_position": (_text, '"HFS" (PatientPosition)', _patient_position),
}
FIELDS = ("dicom", *FACTS)  # every field [input] accepts


def check_input(case_toml: Path, table: Mapping[str, Any], folder: DicomFolder) -> None:
    """Each fact [input] declares must hold in the folder's headers: GateError naming case.toml, the
    field, the declared and the found value otherwise. Facts the table leaves out are not checked."""
    uid = table.get("expected_series_instance_uid")
    for key, (valid, example, agrees) in FACTS.items():
        if key not in table:
            continue
        declared = table[key]
        if not valid(declared):
            raise GateError(f"{case_toml}: field 'input.{key}' must be like {example}, not {declared!r}")
        ok, found = agrees(declared, folder, uid if isinstance(uid, str) else None)
        if not ok:
            raise GateError(
                f"{case_toml}: field 'input.{key}' declares {declared!r}, but {folder.path} has {found}; "
                "make the field describe the case's DICOM (or remove it)"
            )
