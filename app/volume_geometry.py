"""Voxel-to-world geometry of the segmented volume, shared by the model's reader and the NIfTI writer.

Conventions (the one place they are defined):
- Array axis order of mask.nii.gz is (i, j, k) = (column within a slice, row within a slice, slice), slices
  sorted by ascending position along the slice normal (row cosine x column cosine), as the SDK stacks them.
- The affine maps (i, j, k) to patient RAS millimetres (NIfTI/nibabel convention): it is the DICOM LPS
  affine built from ImageOrientationPatient, PixelSpacing and the first/last ImagePositionPatient, left-
  multiplied by diag(-1, -1, 1, 1). Column i steps by PixelSpacing[1] along the row cosine, row j steps by
  PixelSpacing[0] along the column cosine. (The SDK's own nifti_affine_transform swaps the two in-plane
  spacings, which only matters for non-square pixels, so it is not used.)
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np
from input_checks import AppInputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# A missing slice shows up as a gap: spacing deviating from the median by more than this fraction.
SLICE_SPACING_TOLERANCE = 0.1


def slice_normal(image_orientation: Sequence[float]) -> np.ndarray:
    row_cosine = np.asarray(image_orientation[:3], dtype=float)
    column_cosine = np.asarray(image_orientation[3:6], dtype=float)
    return np.cross(row_cosine, column_cosine)


def is_axial(image_orientation: Sequence[float]) -> bool:
    """Axial means the slice normal is closest to the patient's head-foot (z) axis."""
    return int(np.argmax(np.abs(slice_normal(image_orientation)))) == 2


def check_series_geometry(datasets: Sequence[Any], series_name: str) -> None:
    """Raises AppInputError unless the instances stack into one regular 3D volume."""
    if len(datasets) < 2:
        raise AppInputError(
            f"{series_name} has {len(datasets)} image; fix: supply a CT series with 2+ slices"
        )
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns"):
        if any(keyword not in dataset for dataset in datasets):
            raise AppInputError(f"{series_name} has images without {keyword}; fix: supply an axial CT series")
    first = datasets[0]
    for dataset in datasets[1:]:
        same_plane = np.allclose(
            [float(v) for v in dataset.ImageOrientationPatient],
            [float(v) for v in first.ImageOrientationPatient],
            atol=1e-4,
        )
        same_size = (dataset.Rows, dataset.Columns) == (first.Rows, first.Columns)
        same_spacing = np.allclose(
            [float(v) for v in dataset.PixelSpacing], [float(v) for v in first.PixelSpacing]
        )
        if not (same_plane and same_size and same_spacing):
            raise AppInputError(
                f"{series_name} mixes image orientations, sizes or pixel spacings; "
                "fix: supply a single CT series"
            )
    normal = slice_normal([float(v) for v in first.ImageOrientationPatient])
    positions = np.sort(
        [float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])) for ds in datasets]
    )
    steps = np.diff(positions)
    median_step = float(np.median(steps))
    if median_step <= 1e-3:
        raise AppInputError(f"{series_name} has slices at the same position; fix: supply a single CT series")
    if np.max(np.abs(steps - median_step)) > SLICE_SPACING_TOLERANCE * median_step:
        raise AppInputError(
            f"{series_name} has uneven slice spacing ({steps.min():.3f} to {steps.max():.3f} mm), "
            "e.g. a missing slice; fix: supply the complete series"
        )


def ras_affine_from_metadata(metadata: Dict[str, Any]) -> np.ndarray:
    """RAS affine of the volume from the metadata the SDK's DICOMSeriesToVolumeOperator attaches."""
    lps = np.eye(4)
    lps[:3, 0] = np.asarray(metadata["row_direction_cosine"], dtype=float) * float(
        metadata["col_pixel_spacing"]
    )
    lps[:3, 1] = np.asarray(metadata["col_direction_cosine"], dtype=float) * float(
        metadata["row_pixel_spacing"]
    )
    # Columns 2 and 3 of the SDK's LPS affine: (last - first position) / (n - 1) and the first position.
    lps[:3, 2:4] = np.asarray(metadata["dicom_affine_transform"], dtype=float)[:3, 2:4]
    return LPS_TO_RAS @ lps
