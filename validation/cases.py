"""Fixture cases: a DICOM series, reference masks and a case.toml, one folder each.

Layout (the app contract's default cases folder, or any folder passed with --cases):
    dicom/                      the input series (one study; may hold several series)
    reference/golden.nii.gz     the app's mask on the reference platform
    reference/ground_truth.nii.gz
    case.toml                   labels, tolerances, run limits, provenance
Tolerances not given in case.toml come from validation/tolerances.toml.
"""

from __future__ import annotations

import math
import tomllib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from app.stages import window_count
from validation.contract import AppContract
from validation.errors import GateError
from validation.metrics import TOLERANCE_KEYS
from validation.profiles import reject_unknown_keys

DEFAULTS_TOML = Path(__file__).with_name("tolerances.toml")
REFERENCES = {"golden": "golden.nii.gz", "ground_truth": "ground_truth.nii.gz"}
_TOLERANCES = dict.fromkeys(TOLERANCE_KEYS)
CASE_SCHEMA = {
    "name": None,
    "description": None,
    "labels": None,
    "label_names": None,
    "input": dict.fromkeys(
        (
            "dicom",
            "files",
            "series",
            "study_instance_uid",
            "expected_series_instance_uid",
            "slices",
            "pixel_spacing_mm",
            "slice_spacing_mm",
            "patient_position",
        )
    ),
    "reference": dict.fromkeys(REFERENCES),
    "tolerances": {"golden": _TOLERANCES, "ground_truth": _TOLERANCES, "host": _TOLERANCES},
    "run": {"timeout_s": None, "memory": None},
    "provenance": None,  # free-form: how the case and its references were made
}


@dataclass(frozen=True)
class RunTime:
    """How long the app takes on a series: a fixed start (imports, model, reading, writing) plus a
    time per sliding window, both measured (README "Case timeouts"), times a stated margin."""

    start_s: float
    seconds_per_window: float
    margin: float
    window_spacing_mm: tuple[float, float, float]  # the grid the app resamples to before its windows
    window_overlap: float
    window: tuple[int, int, int]  # the model's input window (the contract's model.input_shape)

    def timeout_s(self, windows: int) -> float:
        return float(math.ceil(self.margin * (self.start_s + windows * self.seconds_per_window)))

    def basis(self, windows: int) -> str:
        return (
            f"{self.margin:g} × ({self.start_s:g} s + {windows} windows × {self.seconds_per_window:g} s)"
        )


def run_time(app: AppContract) -> RunTime | None:
    """The contract's [run] table, checked; None when it has none (cases then need timeout_s)."""
    table = app.run_time
    if not table:
        return None
    numbers = ("start_s", "seconds_per_window", "margin", "window_overlap")
    spacing = table.get("window_spacing_mm")
    bad = [key for key in numbers if not isinstance(table.get(key), int | float) or table[key] < 0]
    numeric = isinstance(spacing, list) and all(isinstance(v, int | float) for v in spacing)
    if not (numeric and len(spacing) == 3):
        bad.append("window_spacing_mm")
    if bad or len(app.model_input_shape) < 3:
        raise GateError(
            f"{app.path}: field 'run.{(bad or ['window_spacing_mm'])[0]}' must be a number >= 0 "
            "(window_spacing_mm: [x, y, z] in mm); see README \"Case timeouts\""
        )
    return RunTime(
        float(table["start_s"]),
        float(table["seconds_per_window"]),
        float(table["margin"]),
        (float(spacing[0]), float(spacing[1]), float(spacing[2])),
        float(table["window_overlap"]),
        tuple(app.model_input_shape[-3:]),
    )


def series_extent_mm(dicom_dir: Path, series_uid: str | None = None) -> tuple[float, float, float] | None:
    """(columns, rows, slices) extent in mm of the series the app will pick (`series_uid`, else the
    one with most images), from the headers; None when no series has a readable geometry."""
    series: dict[str, list[Any]] = defaultdict(list)
    for path in sorted(p for p in dicom_dir.rglob("*") if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, TypeError):
            continue
        if all(key in header for key in ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient")):
            series[str(header.get("SeriesInstanceUID", ""))].append(header)
    if series_uid not in series:
        series_uid = max(series, key=lambda uid: (len(series[uid]), uid), default=None)
    if series_uid is None:
        return None
    headers = series[series_uid]
    first = headers[0]
    try:
        rows, columns = int(first.Rows), int(first.Columns)
        row_mm, column_mm = (float(v) for v in first.PixelSpacing)
        orientation = np.asarray([float(v) for v in first.ImageOrientationPatient])
        normal = np.cross(orientation[:3], orientation[3:])
        along = sorted(float(np.dot(normal, [float(v) for v in h.ImagePositionPatient])) for h in headers)
    except (AttributeError, TypeError, ValueError):
        return None
    if len(along) > 1:
        step = (along[-1] - along[0]) / (len(along) - 1)
    else:
        step = float(first.get("SliceThickness") or 1.0)
    return (columns * column_mm, rows * row_mm, len(along) * abs(step))


def estimated_windows(extent_mm: tuple[float, float, float], model: RunTime) -> int:
    """The windows of the whole field of view resampled to the app's grid: an upper bound, since the
    app crops to the body first."""
    size = [math.ceil(mm / spacing) for mm, spacing in zip(extent_mm, model.window_spacing_mm, strict=True)]
    return window_count(size, model.window, model.window_overlap)


MEMORY_UNITS = {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30}  # `docker run --memory`'s suffixes


def memory_bytes(limit: str) -> int | None:
    """A `docker run --memory` size ("4g", "512m", "1073741824") in bytes; None if it is not one."""
    text = limit.strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in MEMORY_UNITS else (text, "b")
    try:
        value = float(number) * MEMORY_UNITS[unit]
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value > 0 else None


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    dicom_dir: Path
    labels: tuple[int, ...]
    tolerances: dict[str, dict[str, float]]  # reference kind ("golden", "ground_truth", "host") -> limits
    timeout_s: float
    memory: str
    references: dict[str, Path]  # "golden", "ground_truth" -> mask file
    description: str = ""
    expected_series_uid: str | None = None  # the series the app must pick (and its SEG reference)
    timeout_basis: str = ""  # how timeout_s was set: case.toml, or scaled with the series' windows

    def reference(self, kind: str) -> Path:
        return self.references[kind]


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise GateError(
            f"{path}: missing; every case folder needs a case.toml (see fixtures/README.md)"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise GateError(f"{path}: not valid TOML ({error}); fix the syntax") from None


def _timeout(
    path: Path, data: dict[str, Any], default_s: float, dicom_dir: Path, model: RunTime | None
) -> tuple[float, str]:
    """case.toml's [run] timeout_s when it sets one; else scaled with the series' windows (the app
    contract's [run] table); else the default of validation/tolerances.toml."""
    explicit = data.get("run", {}).get("timeout_s")
    if explicit is not None:
        if not isinstance(explicit, int | float) or explicit <= 0:
            raise GateError(f"{path / 'case.toml'}: field 'run.timeout_s' must be seconds > 0, e.g. 900")
        return float(explicit), f"{path / 'case.toml'} [run] timeout_s"
    extent = series_extent_mm(dicom_dir, data.get("input", {}).get("expected_series_instance_uid"))
    if model is None or extent is None:
        return float(default_s), f"{DEFAULTS_TOML.name} [run] timeout_s"
    windows = estimated_windows(extent, model)
    return model.timeout_s(windows), model.basis(windows)


def load_case(path: Path, known_labels: Iterable[int] | None = None, model: RunTime | None = None) -> Case:
    """One case folder, checked; `known_labels` (the app contract's) bound the case's labels, `model`
    (its [run] table) sizes the timeout of a case that sets none."""
    defaults = _read(DEFAULTS_TOML)
    reject_unknown_keys(DEFAULTS_TOML, defaults, {**CASE_SCHEMA["tolerances"], "run": CASE_SCHEMA["run"]})
    data = _read(path / "case.toml")
    reject_unknown_keys(path / "case.toml", data, CASE_SCHEMA)
    case_tolerances = data.get("tolerances", {})
    tolerances = {
        kind: {**defaults[kind], **case_tolerances.get(kind, {})}
        for kind in ("golden", "ground_truth", "host")
    }
    run = {**defaults["run"], **data.get("run", {})}
    labels = data.get("labels")
    if not isinstance(labels, list) or not all(isinstance(label, int) for label in labels):
        raise GateError(f"{path / 'case.toml'}: field 'labels' must list the label ids present, e.g. [1, 6]")
    unknown = sorted(set(labels) - set(known_labels)) if known_labels is not None else []
    if unknown:
        raise GateError(
            f"{path / 'case.toml'}: field 'labels' has {unknown}, which the app contract does not declare; "
            "gate this case with its own app's contract (--app FILE)"
        )
    dicom_dir = path / data.get("input", {}).get("dicom", "dicom")
    if not dicom_dir.is_dir():
        raise GateError(f"{dicom_dir}: the case's DICOM folder is missing; put the series there")
    named = data.get("reference", {})
    references = {kind: path / named.get(kind, f"reference/{file}") for kind, file in REFERENCES.items()}
    for reference in references.values():
        if not reference.is_file():
            raise GateError(
                f"{reference}: reference mask missing; regenerate with `nox -s fixtures` or add it"
            )
    timeout_s, timeout_basis = _timeout(path, data, defaults["run"]["timeout_s"], dicom_dir, model)
    if not isinstance(run["memory"], str) or memory_bytes(run["memory"]) is None:
        raise GateError(
            f"{path / 'case.toml'}: field 'run.memory' must be a size as `docker run --memory` takes it, "
            'e.g. "4g" or "512m"'
        )
    return Case(
        name=path.name,
        path=path,
        dicom_dir=dicom_dir,
        labels=tuple(labels),
        tolerances=tolerances,
        timeout_s=timeout_s,
        memory=str(run["memory"]),
        references=references,
        description=str(data.get("description", "")),
        expected_series_uid=data.get("input", {}).get("expected_series_instance_uid"),
        timeout_basis=timeout_basis,
    )


def discover(cases_dir: Path, app: AppContract | None = None) -> list[Case]:
    if not cases_dir.is_dir():
        raise GateError(f"{cases_dir}: cases folder not found; pass --cases DIR with one folder per case")
    known = app.labels if app is not None else None
    model = run_time(app) if app is not None else None
    found = [
        load_case(path, known, model) for path in sorted(cases_dir.iterdir()) if (path / "case.toml").exists()
    ]
    if not found:
        raise GateError(f"{cases_dir}: no case folders (each needs a case.toml); see fixtures/README.md")
    return found
