"""A crop of a case's study, for the cross-architecture tier: a box of the series' voxel grid around one
organ, small enough that the app runs few model windows on it, written as a case of its own.

The box is `crop_windows` model windows along each axis (the model's input at the app's window spacing,
`[run] window_spacing_mm` of the contract), centred on the organ of the host's full-study label map that
it holds best (the largest share of an organ's voxels inside, then the larger organ). The crop keeps the
study's DICOM as it is but for the box: the series' images of the slices inside, each cut to the box's
rows and columns (pixel data uncompressed, ImagePositionPatient moved to the box's first pixel; UIDs
kept, so the case's expected series is still the one the app must pick); the study's other series are
copied unchanged. The case's references are cut to the same box.
"""

from __future__ import annotations

import math
import shutil
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from validation import cases
from validation.dicom_grid import SeriesGrid
from validation.errors import GateError
from validation.profiles import to_toml

# [input] facts a crop changes, so its case.toml leaves them out (the rest still hold and are checked)
CHANGED_FACTS = ("files", "slices")


@dataclass(frozen=True)
class Crop:
    """A box of a series' grid (i: columns, j: rows, k: slices in ascending order), end exclusive."""

    low: tuple[int, int, int]
    high: tuple[int, int, int]
    grid_shape: tuple[int, int, int]
    label: int | None  # the organ it centres (None: the host's map holds none)
    inside: float  # that organ's share of voxels inside the box

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(h - lo for lo, h in zip(self.low, self.high, strict=True))

    def describe(self, names: Mapping[int, str]) -> str:
        axes = ("columns", "rows", "slices")
        box = ", ".join(
            f"{axis} {lo}-{h - 1}" for axis, lo, h in zip(axes, self.low, self.high, strict=True)
        )
        size = "×".join(map(str, self.grid_shape))
        organ = (
            f"{names.get(self.label, f'label {self.label}')}, {self.inside:.0%} of it inside"
            if self.label is not None
            else "no organ in the host's label map: the grid's centre"
        )
        return f"{box} of {size} ({organ})"


def voxel_mm(grid: SeriesGrid) -> np.ndarray:
    """The grid's voxel size along i, j, k in mm."""
    return np.linalg.norm(grid.affine[:3, :3], axis=0)


def box_voxels(grid: SeriesGrid, box_mm: Sequence[float]) -> tuple[int, int, int]:
    """How many voxels of the grid fit in `box_mm` along each axis (at least one, at most all)."""
    sizes = voxel_mm(grid)
    return tuple(
        max(1, min(n, math.floor(mm / size + 1e-6)))
        for n, mm, size in zip(grid.shape, box_mm, sizes, strict=True)
    )  # type: ignore[return-value]


def _placed(centre: np.ndarray, size: tuple[int, ...], shape: tuple[int, ...]) -> tuple[tuple, tuple]:
    low = [int(min(max(round(c - s / 2), 0), n - s)) for c, s, n in zip(centre, size, shape, strict=True)]
    return tuple(low), tuple(lo + s for lo, s in zip(low, size, strict=True))


def choose(labels: np.ndarray, size: tuple[int, int, int]) -> Crop:
    """The box of `size` voxels that holds an organ of `labels` best: for each organ, the box centred on
    its bounding box; the largest share inside wins, then the most voxels."""
    shape = tuple(int(n) for n in labels.shape)
    best: tuple[float, int, Crop] | None = None
    for label in (int(v) for v in np.unique(labels) if v != 0):
        where = np.nonzero(labels == label)
        centre = np.array([(axis.min() + axis.max() + 1) / 2 for axis in where])
        low, high = _placed(centre, size, shape)
        box = tuple(slice(lo, h) for lo, h in zip(low, high, strict=True))
        inside = int((labels[box] == label).sum())
        share = inside / len(where[0])
        crop = Crop(low, high, shape, label, share)  # type: ignore[arg-type]
        if best is None or (share, inside) > best[:2]:
            best = (share, inside, crop)
    if best is None:
        low, high = _placed(np.array(shape) / 2, size, shape)
        return Crop(low, high, shape, None, 0.0)  # type: ignore[arg-type]
    return best[2]


def crop_label_map(source: Path, crop: Crop, target: Path) -> Path:
    """A label map on the series' grid, cut to the box (its affine moved to the box's first voxel)."""
    image = nib.load(str(source))
    data = np.asarray(image.dataobj)
    if tuple(data.shape[:3]) != crop.grid_shape:
        raise GateError(f"{source}: grid {data.shape} is not the series' {crop.grid_shape}; cannot cut it")
    box = tuple(slice(lo, h) for lo, h in zip(crop.low, crop.high, strict=True))
    shift = np.eye(4)
    shift[:3, 3] = crop.low
    affine = image.affine @ shift
    cut = nib.Nifti1Image(np.ascontiguousarray(data[box]), affine, image.header)
    cut.set_sform(affine, code=1)
    cut.set_qform(affine, code=1)
    target.parent.mkdir(parents=True, exist_ok=True)
    nib.save(cut, str(target))
    return target


def _cut_image(dataset: pydicom.Dataset, crop: Crop) -> pydicom.Dataset:
    """One image of the series cut to the box's rows and columns, its position moved with it."""
    (i0, j0, _), (i1, j1, _) = crop.low, crop.high
    pixels = dataset.pixel_array[j0:j1, i0:i1]
    orientation = [float(v) for v in dataset.ImageOrientationPatient]
    row_mm, column_mm = (float(v) for v in dataset.PixelSpacing)
    position = np.array([float(v) for v in dataset.ImagePositionPatient])
    position += i0 * column_mm * np.array(orientation[:3]) + j0 * row_mm * np.array(orientation[3:])
    photometric, bits = str(dataset.PhotometricInterpretation), int(dataset.BitsStored)
    # uncompressed, with its Rows and Columns; the instance keeps its UID (the case names its series)
    dataset.set_pixel_data(np.ascontiguousarray(pixels), photometric, bits, generate_instance_uid=False)
    dataset.ImagePositionPatient = [f"{value:.6f}" for value in position]
    return dataset


def write_dicom(source: Path, grid: SeriesGrid, crop: Crop, target: Path) -> int:
    """The study with the series cut to the box; its other files unchanged. The files written."""
    kept = set(grid.slice_instances[crop.low[2] : crop.high[2]])
    written = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, TypeError):
            continue
        if str(header.get("SeriesInstanceUID", "")) != grid.series_uid:
            shutil.copy2(path, destination)
        elif str(header.get("SOPInstanceUID", "")) in kept:
            _cut_image(pydicom.dcmread(path), crop).save_as(destination, enforce_file_format=True)
        else:
            continue
        written += 1
    return written


def write_case(
    case: cases.Case, grid: SeriesGrid, crop: Crop, target: Path, names: Mapping[int, str]
) -> Path:
    """The crop as a case folder named like the case: its DICOM, its references cut to the box, and its
    case.toml with the [input] facts the crop changes left out, the crop described, and the organ it
    was chosen for as its one required label."""
    if target.exists():
        shutil.rmtree(target)
    write_dicom(case.dicom_dir, grid, crop, target / "dicom")
    for kind, reference in case.references.items():
        crop_label_map(reference, crop, target / "reference" / cases.REFERENCES[kind])
    data = tomllib.loads((case.path / "case.toml").read_text())
    data.pop("reference", None)
    inputs = {k: v for k, v in data.get("input", {}).items() if k not in CHANGED_FACTS and k != "dicom"}
    data["input"] = inputs
    data["description"] = f"{case.name} cut to {crop.describe(names)}"
    if crop.label is not None:  # the organ the box was chosen for; others may lie on its border
        data["labels"] = [crop.label]
        if "label_names" in data:
            data["label_names"] = [names[crop.label]]
    (target / "case.toml").write_text(to_toml(data))
    return target


def set_timeout(target: Path, seconds: float, basis: str) -> None:
    """Give the crop case a timeout of its own (its case.toml's [run] timeout_s), saying why."""
    case_toml = target / "case.toml"
    data = tomllib.loads(case_toml.read_text())
    data.setdefault("run", {})["timeout_s"] = float(math.ceil(seconds))
    data["description"] = f"{data.get('description', '')}; timeout {basis}"
    case_toml.write_text(to_toml(data))
