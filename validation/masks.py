"""Label masks as the gate reads them: a 3D integer label map with its affine, and whether two share a grid.

A mask that is not one (missing, not NIfTI, float with fractions, NaN, negative, 4D) is refused in one
line naming the file and the fix, before any metric is computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from validation.errors import GateError

DEFAULT_AFFINE_ATOL_MM = 1e-3


@dataclass(frozen=True)
class LabelMask:
    """A label map with the affine that places its voxels in scanner space (mm)."""

    path: str
    labels: np.ndarray
    affine: np.ndarray

    @property
    def spacing_mm(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, : self.labels.ndim], axis=0))



def integer_labels(data: np.ndarray, source: str) -> np.ndarray:
    """Labels as a non-negative integer array; a float or negative map is a user error naming `source`."""
    if data.dtype == bool:
        return data.view(np.uint8)
    if np.issubdtype(data.dtype, np.floating):
        if np.isnan(data).any():
            raise GateError(f"{source}: the mask contains NaN; a label mask holds integer label ids only")
        fractional = data[data != np.round(data)]
        if fractional.size:
            raise GateError(
                f"{source}: the mask holds non-integer values (e.g. {fractional.flat[0]:g}), not label ids; "
                "threshold/argmax it and save it with an integer dtype such as uint8"
            )
        data = data.astype(np.min_scalar_type(int(data.max())) if data.size and data.min() >= 0 else np.int64)
    elif not np.issubdtype(data.dtype, np.integer):
        raise GateError(f"{source}: voxel type {data.dtype} is not an integer label type")
    if np.issubdtype(data.dtype, np.signedinteger) and data.size and data.min() < 0:
        raise GateError(f"{source}: the mask holds negative values ({data.min()}); label ids must be >= 0")
    return data


def load_mask(path: str | Path) -> LabelMask:
    """Read a 3D NIfTI label mask, rejecting what is not one (missing, not NIfTI, float, NaN, 4D)."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise GateError(f"{path}: no such file; pass a NIfTI label mask (.nii or .nii.gz)")
    try:
        image = nib.load(path)
    except Exception as error:  # nibabel raises many types for unreadable input
        raise GateError(
            f"{path}: not a readable NIfTI image ({error}); pass a .nii or .nii.gz label mask"
        ) from None
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise GateError(f"{path}: a {type(image).__name__}, not NIfTI; convert it to .nii.gz")
    data = np.asanyarray(image.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise GateError(f"{path}: shape {data.shape} is not a 3D label map; save one volume of label ids")
    return LabelMask(str(path), integer_labels(data, str(path)), np.asarray(image.affine, dtype=np.float64))


@dataclass(frozen=True)
class Geometry:
    """Whether the two masks share one voxel grid, without which no voxelwise metric means anything."""

    output_shape: tuple[int, ...]
    reference_shape: tuple[int, ...]
    max_affine_diff_mm: float | None  # None when the shapes already differ
    affine_atol_mm: float

    @property
    def matches(self) -> bool:
        return (
            self.output_shape == self.reference_shape
            and (self.max_affine_diff_mm or 0.0) <= self.affine_atol_mm
        )

    @property
    def reason(self) -> str:
        if self.output_shape != self.reference_shape:
            return (
                f"output shape {'x'.join(map(str, self.output_shape))} differs from the reference's "
                f"{'x'.join(map(str, self.reference_shape))}: resample the output onto the reference grid"
            )
        if not self.matches:
            return (
                f"output affine differs from the reference's by up to {self.max_affine_diff_mm:.4g} mm "
                f"(> {self.affine_atol_mm:g} mm): resample the output onto the reference grid"
            )
        shape = "x".join(map(str, self.output_shape))
        return f"same grid: shape {shape}, affines within {self.affine_atol_mm:g} mm"

    def to_dict(self) -> dict[str, Any]:
        return {
            "matches": self.matches,
            "output_shape": list(self.output_shape),
            "reference_shape": list(self.reference_shape),
            "max_affine_diff_mm": self.max_affine_diff_mm,
            "affine_atol_mm": self.affine_atol_mm,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Geometry:
        """Back from metrics.json (a shard's report read by merge)."""
        return cls(
            tuple(data["output_shape"]),
            tuple(data["reference_shape"]),
            data.get("max_affine_diff_mm"),
            float(data["affine_atol_mm"]),
        )


def compare_geometry(output: LabelMask, reference: LabelMask, affine_atol_mm: float) -> Geometry:
    shapes_equal = output.labels.shape == reference.labels.shape
    diff = float(np.max(np.abs(output.affine - reference.affine))) if shapes_equal else None
    return Geometry(output.labels.shape, reference.labels.shape, diff, affine_atol_mm)
