"""A DICOM SEG's segments placed on a series' voxel grid: the label map of an app that writes no NIfTI mask.

Each frame's pixels are put in patient space by the frame's own position, orientation and spacing, then on
the grid (validation/dicom_grid.py); each segment takes the contract's label value of its name (matched as
the SEG checks match them: case, spaces and underscores aside). The map is only made when it is exact:
a segment whose name the contract does not declare, a pixel between or outside the grid's voxels, two
segments claiming one voxel, or a frame lying away from the source image it says it derives from (a SEG
moved after it was made) is a problem named in one line, and no label map is compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import Dataset

from validation.compare import CheckOutcome
from validation.dicom_grid import LPS_TO_RAS, SeriesGrid

ON_GRID_VOXELS = 0.05  # a pixel this close to a voxel centre (in voxels, per axis) lies on it
FRAME_ATOL_MM = 0.01  # a frame this close to the image it derives from lies on it (DS values keep ~1e-6)


def normalised(name: str) -> str:
    """A segment label as the checks compare it: case, underscores and runs of spaces aside."""
    return " ".join(name.replace("_", " ").split()).casefold()


def segment_labels(seg: Dataset) -> dict[int, str]:
    return {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.SegmentSequence}


def _frame_geometry(seg: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: segment number and ImagePositionPatient; shared: row/column directions and spacing."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    frames = seg.PerFrameFunctionalGroupsSequence

    def item(frame: Dataset, sequence: str) -> Dataset:
        # one-segment SEGs may identify the segment once, in the shared functional groups
        return (getattr(frame, sequence, None) or getattr(shared, sequence))[0]

    segments = np.array(
        [int(item(f, "SegmentIdentificationSequence").ReferencedSegmentNumber) for f in frames]
    )
    positions = np.array(
        [[float(v) for v in item(f, "PlanePositionSequence").ImagePositionPatient] for f in frames]
    )
    orientation = np.array(
        [float(v) for v in item(frames[0], "PlaneOrientationSequence").ImageOrientationPatient]
    )
    spacing = np.array([float(v) for v in item(frames[0], "PixelMeasuresSequence").PixelSpacing])
    return segments, positions, orientation.reshape(2, 3), spacing


def segment_voxels(
    seg: Dataset, affine: np.ndarray, shape: tuple[int, ...]
) -> tuple[dict[int, np.ndarray], int]:
    """Each segment's set pixels as flat voxel indices of the grid (RAS `affine`, `shape`), and how many
    pixels fall off that grid (outside it, or between its voxels)."""
    segments, positions, (row_dir, col_dir), (row_spacing, col_spacing) = _frame_geometry(seg)
    pixels = np.asarray(seg.pixel_array).reshape(len(segments), int(seg.Rows), int(seg.Columns))
    frame, row, col = np.nonzero(pixels)
    # DICOM patient space (LPS): position + column index along the row direction, row index along columns
    lps = positions[frame] + np.outer(col * col_spacing, row_dir) + np.outer(row * row_spacing, col_dir)
    ras = lps * np.array([-1.0, -1.0, 1.0])  # NIfTI affines map to RAS
    ijk = (np.linalg.inv(affine) @ np.c_[ras, np.ones(len(ras))].T)[:3].T
    index = np.rint(ijk).astype(np.int64)
    on_grid = (np.abs(ijk - index) < ON_GRID_VOXELS).all(axis=1)
    on_grid &= ((index >= 0) & (index < np.array(shape))).all(axis=1)
    flat = np.ravel_multi_index(tuple(index[on_grid].T), shape)
    by_segment = {int(number): flat[segments[frame[on_grid]] == number] for number in np.unique(segments)}
    return by_segment, int((~on_grid).sum())


def _frame_sources(seg: Dataset) -> list[str | None]:
    """Per frame, the source image it says it derives from (DerivationImageSequence), if it says."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    sources: list[str | None] = []
    for frame in seg.PerFrameFunctionalGroupsSequence:
        derivation = getattr(frame, "DerivationImageSequence", None) or getattr(
            shared, "DerivationImageSequence", None
        )
        images = getattr(derivation[0], "SourceImageSequence", None) if derivation else None
        sources.append(str(images[0].ReferencedSOPInstanceUID) if images else None)
    return sources


def frames_off_their_source(seg: Dataset, grid: SeriesGrid) -> str:
    """Frames that lie away from the image of `grid` they say they derive from: a SEG moved (by a slice,
    say) after it was made. Empty when every frame that names a source of the grid lies on it."""
    _, positions, _, _ = _frame_geometry(seg)
    slice_of = {uid: k for k, uid in enumerate(grid.slice_instances)}
    moved = []
    for number, (source, position) in enumerate(zip(_frame_sources(seg), positions, strict=True), 1):
        if source not in slice_of:
            continue
        expected = (LPS_TO_RAS @ grid.affine @ np.array([0.0, 0.0, slice_of[source], 1.0]))[:3]
        distance = float(np.linalg.norm(position - expected))
        if distance > FRAME_ATOL_MM:
            moved.append((number, distance, source))
    if not moved:
        return ""
    number, distance, source = moved[0]
    return (
        f"{len(moved)} of {len(positions)} frames lie away from the image they derive from "
        f"(frame {number}: {distance:.2f} mm from instance {source})"
    )


@dataclass(frozen=True)
class PlacedSeg:
    """The SEG on one series' grid: the label map, or the problems that keep it from being one."""

    grid: SeriesGrid
    labels: np.ndarray | None
    problems: tuple[str, ...]
    pixels: int  # set pixels in the SEG, all segments

    def outcome(self) -> CheckOutcome:
        """`seg-grid`: every frame on its source image, every segment pixel on a voxel of the series, under
        a declared label, once."""
        reason = "; ".join(self.problems) or (
            f"all {self.pixels} segment pixels lie on voxels of {self.grid.label}"
        )
        return CheckOutcome("seg-grid", not self.problems, len(self.problems), 0, reason)

    def save(self, path: Path) -> Path:
        """The label map as NIfTI on the series' grid (what the comparisons and the report read)."""
        import nibabel as nib

        assert self.labels is not None, "only a placed SEG has a label map"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(self.labels, self.grid.affine), path)
        return path


def place(seg: Dataset, grid: SeriesGrid, names: Mapping[int, str]) -> PlacedSeg:
    """The SEG's segments as one label map on `grid`, valued by the contract's `names`."""
    value_of = {normalised(name): value for value, name in names.items()}
    voxels, off_grid = segment_voxels(seg, grid.affine, grid.shape)
    problems = [moved] if (moved := frames_off_their_source(seg, grid)) else []
    if off_grid:
        problems.append(f"{off_grid} segment pixels fall outside or between the voxels of {grid.label}")
    flat = np.zeros(int(np.prod(grid.shape)), dtype=np.uint16)
    for number, label in sorted(segment_labels(seg).items()):
        value = value_of.get(normalised(label))
        if value is None:
            declared = ", ".join(sorted(names.values()))
            problems.append(f"segment {number} '{label}' is not a label the contract declares ({declared})")
            continue
        here = np.unique(voxels.get(number, np.empty(0, dtype=np.int64)))
        taken = here[flat[here] != 0]
        if taken.size:
            problems.append(f"segment {number} '{label}' overlaps another segment in {taken.size} voxels")
        flat[here] = value
    pixels = sum(v.size for v in voxels.values()) + off_grid
    labels = flat.reshape(grid.shape).astype(np.min_scalar_type(max(names, default=0)))
    return PlacedSeg(grid, None if problems else labels, tuple(problems), pixels)
