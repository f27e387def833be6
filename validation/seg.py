"""Validate the app's DICOM SEG output: it parses, points at the input series, and says what the mask says.

A SEG that viewers cannot attach to the input study, or whose segments are mislabelled, fails a
release as surely as a wrong mask. Checks, each a `compare.CheckOutcome` (same shape as the mask
comparison's, so the acceptance gate reports them alike):

- `seg-parse`      the file is a DICOM Segmentation highdicom can read;
- `seg-series`     its study and ReferencedSeriesSequence series are the input's (and, when the case
                   names it, exactly the series the app had to pick, not a localizer beside it);
- `seg-instances`  every referenced SOP instance is one of the input series' instances;
- `seg-labels`     every segment label is a declared organ name, once (case-insensitive: the app
                   capitalises names), and, given the mask, exactly the organs present in it;
- `seg-pixels`     (given the mask) each segment's pixels, placed in patient space by their frame's
                   position, orientation and spacing, are exactly the mask's voxels of its organ: a
                   flipped, shifted or reordered SEG fails even when its pixel counts are right.

The app renumbers present labels 1..K as segments, so segments are matched to labels by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import Dataset

from validation.compare import CheckOutcome, LabelMask, load_mask
from validation.errors import GateError
from validation.seg_placement import normalised, segment_labels, segment_voxels

CHECK_NAMES = ("seg-parse", "seg-series", "seg-instances", "seg-labels", "seg-pixels")


@dataclass(frozen=True)
class InputSeries:
    """UIDs of the DICOM input the SEG must reference."""

    study_uids: frozenset[str]
    instances_by_series: Mapping[str, frozenset[str]]  # SeriesInstanceUID -> SOPInstanceUIDs


def read_input_series(dicom_dir: str | Path) -> InputSeries:
    """UIDs of every DICOM file under `dicom_dir` (headers only; non-DICOM files are skipped)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    dicom_dir = Path(dicom_dir)
    if not dicom_dir.is_dir():
        raise GateError(f"{dicom_dir}: no such directory; pass the DICOM input series the SEG was made from")
    studies: set[str] = set()
    series: dict[str, set[str]] = {}
    uid_tags = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
    for path in sorted(p for p in dicom_dir.rglob("*") if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=uid_tags)
        except (InvalidDicomError, OSError):
            continue
        if all(tag in header for tag in uid_tags):
            studies.add(str(header.StudyInstanceUID))
            series.setdefault(str(header.SeriesInstanceUID), set()).add(str(header.SOPInstanceUID))
    if not series:
        raise GateError(f"{dicom_dir}: no DICOM instances found; pass the input series directory")
    return InputSeries(frozenset(studies), {uid: frozenset(sops) for uid, sops in series.items()})


def _not_computed(names: tuple[str, ...], why: str) -> list[CheckOutcome]:
    return [CheckOutcome(name, False, None, None, f"not computed: {why}") for name in names]


def validate_seg(
    seg_path: str | Path,
    dicom_dir: str | Path,
    names: Mapping[int, str],
    *,
    mask_path: str | Path | None = None,
    expected_series: str | None = None,
) -> list[CheckOutcome]:
    """All SEG checks by their stable names; `seg-pixels` only when `mask_path` is given.

    A bad DICOM input directory or mask is the user's to fix (GateError); a bad SEG is a failed check."""
    import highdicom as hd

    expected_names = CHECK_NAMES if mask_path is not None else CHECK_NAMES[:-1]
    input_series = read_input_series(dicom_dir)
    mask = load_mask(mask_path) if mask_path is not None else None
    seg_path = Path(seg_path)
    try:
        seg = hd.seg.segread(seg_path)
    except FileNotFoundError:
        reason = f"{seg_path}: no such file (the app writes none for an empty mask)"
        return [
            CheckOutcome("seg-parse", False, None, None, reason),
            *_not_computed(expected_names[1:], "no SEG"),
        ]
    except Exception as error:  # pydicom/highdicom raise many types for a file that is not a SEG
        reason = f"{seg_path}: not a DICOM Segmentation ({type(error).__name__}: {error})"
        return [
            CheckOutcome("seg-parse", False, None, None, reason),
            *_not_computed(expected_names[1:], "no SEG"),
        ]
    outcomes = [
        CheckOutcome("seg-parse", True, seg.SegmentationType, None, f"{seg.number_of_segments} segments"),
        *validate_references(seg, input_series, expected_series),
        validate_labels(seg, names, mask),
    ]
    if mask is not None:
        outcomes.append(validate_pixels(seg, names, mask))
    return outcomes


def validate_references(
    seg: Dataset, input_series: InputSeries, expected_series: str | None = None
) -> list[CheckOutcome]:
    """`seg-series` and `seg-instances`: the SEG points at the input study, series and instances
    (only the expected series, when one is given)."""
    referenced = {
        str(item.SeriesInstanceUID): {
            str(ref.ReferencedSOPInstanceUID) for ref in item.ReferencedInstanceSequence
        }
        for item in getattr(seg, "ReferencedSeriesSequence", [])
    }
    study = str(seg.StudyInstanceUID)
    foreign_series = sorted(set(referenced) - set(input_series.instances_by_series))
    if not referenced:
        series_reason = "the SEG has no ReferencedSeriesSequence"
    elif foreign_series:
        series_reason = f"references series {', '.join(foreign_series)}, not the input's"
    elif study not in input_series.study_uids:
        series_reason = f"belongs to study {study}, not the input's"
    elif expected_series is not None and set(referenced) != {expected_series}:
        series_reason = (
            f"references series {', '.join(sorted(referenced))}; the case expects {expected_series} "
            "(the app picked another series of the study)"
        )
    else:
        series_reason = f"references input series {', '.join(sorted(referenced))}"
    series_ok = (
        bool(referenced)
        and not foreign_series
        and study in input_series.study_uids
        and (expected_series is None or set(referenced) == {expected_series})
    )

    known = frozenset().union(*input_series.instances_by_series.values())
    instances = set().union(*referenced.values()) if referenced else set()
    unknown = instances - known
    instances_ok = bool(instances) and not unknown
    if not instances:
        instances_reason = "references no SOP instances"
    elif unknown:
        instances_reason = f"{len(unknown)} of {len(instances)} referenced instances are not in the input"
    else:
        instances_reason = f"all {len(instances)} referenced instances are input instances"
    return [
        CheckOutcome(
            "seg-series",
            series_ok,
            sorted(referenced),
            sorted(input_series.instances_by_series),
            series_reason,
        ),
        CheckOutcome("seg-instances", instances_ok, len(instances), len(known), instances_reason),
    ]


def validate_labels(seg: Dataset, names: Mapping[int, str], mask: LabelMask | None) -> CheckOutcome:
    """`seg-labels`: segment labels are declared names, each once; with a mask, the organs it holds."""
    labelled = sorted(normalised(label) for label in segment_labels(seg).values())
    declared = {normalised(name) for name in names.values()}
    problems = []
    undeclared = sorted(set(labelled) - declared)
    if undeclared:
        problems.append(f"segment labels not declared: {', '.join(undeclared)}")
    duplicated = sorted({label for label in labelled if labelled.count(label) > 1})
    if duplicated:
        problems.append(f"segment labels used twice: {', '.join(duplicated)}")
    if mask is not None:
        present = {
            normalised(names.get(int(label), str(label))) for label in np.unique(mask.labels) if label
        }
        if missing := sorted(present - set(labelled)):
            problems.append(f"organs in the mask without a segment: {', '.join(missing)}")
        if extra := sorted(set(labelled) - present - set(undeclared)):
            problems.append(f"segments for organs absent from the mask: {', '.join(extra)}")
    reason = "; ".join(problems) or f"segments: {', '.join(labelled) or 'none'}"
    return CheckOutcome("seg-labels", not problems, labelled, sorted(declared), reason)


def validate_pixels(seg: Dataset, names: Mapping[int, str], mask: LabelMask) -> CheckOutcome:
    """`seg-pixels`: per organ, the SEG's pixels in patient space are the mask's voxels of that organ."""
    label_by_name = {normalised(name): label for label, name in names.items()}
    voxels, off_grid = segment_voxels(seg, mask.affine, mask.labels.shape)
    flat_mask = mask.labels.reshape(-1)
    disagreements = [f"{off_grid} pixels fall outside the mask's grid"] if off_grid else []
    for number, label_text in sorted(segment_labels(seg).items()):
        label = label_by_name.get(normalised(label_text))
        in_seg = np.unique(voxels.get(number, np.empty(0, dtype=np.int64)))
        in_mask = np.flatnonzero(flat_mask == label) if label is not None else np.empty(0, dtype=np.int64)
        misplaced = int(np.setxor1d(in_seg, in_mask, assume_unique=True).size)
        if misplaced:
            disagreements.append(
                f"{label_text}: {misplaced} voxels differ "
                f"({in_seg.size} in the SEG, {in_mask.size} in the mask)"
            )
    reason = "; ".join(disagreements) or f"all {len(voxels)} segments lie exactly on the mask's voxels"
    return CheckOutcome("seg-pixels", not disagreements, len(disagreements), 0, reason)
