"""Fixture cases: a DICOM series, reference masks and a case.toml, one folder each.

Layout (the app contract's default cases folder, or any folder passed with --cases):
    dicom/                      the input series (one study; may hold several series)
    reference/golden.nii.gz     the app's mask on the reference platform
    reference/ground_truth.nii.gz
    case.toml                   labels, tolerances, run limits, provenance
Tolerances not given in case.toml come from validation/tolerances.toml. Every other field is checked
when the case loads, before anything runs: its name against the folder's, its label names against
the app contract's, its [input] facts against the DICOM headers (validation/case_input.py).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from validation import case_input, generation
from validation.case_input import DicomFolder, series_extent_mm
from validation.contract import AppContract
from validation.errors import GateError
from validation.metrics import TOLERANCE_KEYS
from validation.profiles import reject_unknown_keys
from validation.stages import window_count

DEFAULTS_TOML = Path(__file__).with_name("tolerances.toml")
REFERENCES = {"golden": "golden.nii.gz", "ground_truth": "ground_truth.nii.gz"}
_TOLERANCES = dict.fromkeys(TOLERANCE_KEYS)
CASE_SCHEMA = {
    "name": None,
    "description": None,
    "labels": None,
    "label_names": None,
    "input": dict.fromkeys(case_input.FIELDS),
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
    windows: int | None = None  # model windows over the series' whole field of view (contract's [run])

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
    path: Path, data: dict[str, Any], default_s: float, folder: DicomFolder, model: RunTime | None
) -> tuple[float, str, int | None]:
    """(timeout, its basis, windows): case.toml's [run] timeout_s when it sets one; else scaled with the
    series' windows (the app contract's [run] table); else the default of validation/tolerances.toml.
    The windows are counted whenever the contract's [run] table says how (the gate's prediction)."""
    extent = series_extent_mm(folder, data.get("input", {}).get("expected_series_instance_uid"))
    windows = estimated_windows(extent, model) if model is not None and extent is not None else None
    explicit = data.get("run", {}).get("timeout_s")
    if explicit is not None:
        if not isinstance(explicit, int | float) or explicit <= 0:
            raise GateError(f"{path / 'case.toml'}: field 'run.timeout_s' must be seconds > 0, e.g. 900")
        return float(explicit), f"{path / 'case.toml'} [run] timeout_s", windows
    if model is None or windows is None:
        return float(default_s), f"{DEFAULTS_TOML.name} [run] timeout_s", windows
    return model.timeout_s(windows), model.basis(windows), windows


def _labels(case_toml: Path, data: dict[str, Any], app_labels: Mapping[int, str] | None) -> list[int]:
    """`labels`, bounded by the app contract's; `label_names`, when given, are the contract's names."""
    labels = data.get("labels")
    if not isinstance(labels, list) or not all(isinstance(label, int) for label in labels):
        raise GateError(f"{case_toml}: field 'labels' must list the label ids present, e.g. [1, 6]")
    unknown = sorted(set(labels) - set(app_labels)) if app_labels is not None else []
    if unknown:
        raise GateError(
            f"{case_toml}: field 'labels' has {unknown}, which the app contract does not declare; "
            "gate this case with its own app's contract (--app FILE)"
        )
    names = data.get("label_names")
    if names is None:
        return labels
    if not isinstance(names, list) or len(names) != len(labels) or not all(isinstance(n, str) for n in names):
        count = len(names) if isinstance(names, list) else type(names).__name__
        raise GateError(
            f"{case_toml}: field 'label_names' declares {count} name(s) for the {len(labels)} labels "
            f"{labels}; give one name (text) per label, in the same order"
        )
    for label, name in zip(labels, names, strict=True):
        if app_labels is not None and app_labels[label] != name:
            raise GateError(
                f"{case_toml}: field 'label_names' declares {name!r} for label {label}, but the app "
                f"contract names it {app_labels[label]!r}; use the contract's name (or remove the field)"
            )
    return labels


def _name(case_toml: Path, data: dict[str, Any]) -> str:
    """The case's name is its folder's: a case.toml that names another case was copied or renamed."""
    declared, folder = data.get("name", case_toml.parent.name), case_toml.parent.name
    if declared != folder:
        raise GateError(
            f"{case_toml}: field 'name' declares {declared!r}, but the case's folder is {folder!r}; "
            "make them equal (or remove the field)"
        )
    if not isinstance(data.get("description", ""), str):
        raise GateError(f"{case_toml}: field 'description' must be text")
    return folder


def load_case(
    path: Path, app_labels: Mapping[int, str] | None = None, model: RunTime | None = None,
    app_memory: str | None = None,
) -> Case:  # fmt: skip
    """One case folder, checked before anything runs; `app_labels` (the app contract's label names)
    bound the case's labels and names, `model` (its [run] table) sizes the timeout of a case that sets
    none. The DICOM headers are read once, for the [input] facts and the timeout."""
    defaults = _read(DEFAULTS_TOML)
    reject_unknown_keys(DEFAULTS_TOML, defaults, {**CASE_SCHEMA["tolerances"], "run": CASE_SCHEMA["run"]})
    case_toml = path / "case.toml"
    data = _read(case_toml)
    reject_unknown_keys(case_toml, data, CASE_SCHEMA)
    name = _name(case_toml, data)
    case_tolerances = data.get("tolerances", {})
    tolerances = {
        kind: {**defaults[kind], **case_tolerances.get(kind, {})}
        for kind in ("golden", "ground_truth", "host")
    }
    # the app's own memory (its app.yaml's resources.memory) unless the case sets one
    run = {**defaults["run"], **({"memory": app_memory} if app_memory else {}), **data.get("run", {})}
    labels = _labels(case_toml, data, app_labels)
    inputs = data.get("input", {})
    if not isinstance(inputs.get("dicom", "dicom"), str):
        raise GateError(f"{case_toml}: field 'input.dicom' must be a folder in the case, e.g. \"dicom\"")
    dicom_dir = path / inputs.get("dicom", "dicom")
    if not dicom_dir.is_dir():
        raise GateError(f"{dicom_dir}: the case's DICOM folder is missing; put the series there")
    named = data.get("reference", {})
    references = {kind: path / named.get(kind, f"reference/{file}") for kind, file in REFERENCES.items()}
    for reference in references.values():
        if not reference.is_file():
            raise GateError(
                f"{reference}: reference mask missing; regenerate with `nox -s fixtures` or add it"
            )
    folder = case_input.read_folder(dicom_dir)
    case_input.check_input(case_toml, inputs, folder)
    timeout_s, timeout_basis, windows = _timeout(path, data, defaults["run"]["timeout_s"], folder, model)
    if not isinstance(run["memory"], str) or memory_bytes(run["memory"]) is None:
        raise GateError(
            f"{case_toml}: field 'run.memory' must be a size as `docker run --memory` takes it, "
            'e.g. "4g" or "512m"'
        )
    return Case(
        name=name,
        path=path,
        dicom_dir=dicom_dir,
        labels=tuple(labels),
        tolerances=tolerances,
        timeout_s=timeout_s,
        memory=str(run["memory"]),
        references=references,
        description=str(data.get("description", "")),
        expected_series_uid=inputs.get("expected_series_instance_uid"),
        timeout_basis=timeout_basis,
        windows=windows,
    )


def discover(cases_dir: Path, app: AppContract | None = None) -> list[Case]:
    if not cases_dir.is_dir():
        raise GateError(f"{cases_dir}: cases folder not found; pass --cases DIR with one folder per case")
    names = app.labels if app is not None else None
    model = run_time(app) if app is not None else None
    found = [
        load_case(path, names, model, generation.memory_limit(app))
        for path in sorted(cases_dir.iterdir())
        if (path / "case.toml").exists()
    ]
    if not found:
        raise GateError(f"{cases_dir}: no case folders (each needs a case.toml); see fixtures/README.md")
    return found
