"""Fixture cases: a DICOM series, reference masks and a case.toml, one folder each.

Layout (the app contract's default cases folder, or any folder passed with --cases):
    dicom/                      the input series (one study; may hold several series)
    reference/golden.nii.gz     the app's mask on the reference platform
    reference/ground_truth.nii.gz
    case.toml                   labels, tolerances, run limits, provenance
Tolerances not given in case.toml come from validation/tolerances.toml.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def load_case(path: Path, known_labels: Iterable[int] | None = None) -> Case:
    """One case folder, checked; `known_labels` (the app contract's) bound the case's labels."""
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
    return Case(
        name=path.name,
        path=path,
        dicom_dir=dicom_dir,
        labels=tuple(labels),
        tolerances=tolerances,
        timeout_s=float(run["timeout_s"]),
        memory=str(run["memory"]),
        references=references,
        description=str(data.get("description", "")),
        expected_series_uid=data.get("input", {}).get("expected_series_instance_uid"),
    )


def discover(cases_dir: Path, app: AppContract | None = None) -> list[Case]:
    if not cases_dir.is_dir():
        raise GateError(f"{cases_dir}: cases folder not found; pass --cases DIR with one folder per case")
    known = app.labels if app is not None else None
    found = [load_case(path, known) for path in sorted(cases_dir.iterdir()) if (path / "case.toml").exists()]
    if not found:
        raise GateError(f"{cases_dir}: no case folders (each needs a case.toml); see fixtures/README.md")
    return found
