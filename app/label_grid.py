"""The model's label map put back on the input's voxel grid: nearest neighbour with one tie rule.

Resampling to the model's spacing keeps the input's axes (only their spacing changes, and orientation
flips or swaps them), so each input axis maps to one model axis by a scale and an offset, and the
nearest model voxel is found axis by axis. MONAI's Invertd does the same through a float64 coordinate
grid of the input's full size (4.4 GB for 512 x 512 x 300) and leaves an input voxel lying exactly
half-way between two model voxels to the rounding of that grid, which differs between MONAI and torch
versions. Here such a tie always goes to the higher model index.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

TIE_VOXELS = 1e-5  # a position this close to half-way between two model voxels is a tie
AXIS_ALIGNED = 1e-6  # relative size of an off-axis term still taken for zero


def nearest_indices(positions: np.ndarray) -> np.ndarray:
    """Nearest voxel index of each position; a tie (within TIE_VOXELS of half-way) goes up."""
    below = np.floor(positions)
    tie = np.abs(positions - below - 0.5) < TIE_VOXELS
    return np.where(tie, below + 1, np.floor(positions + 0.5)).astype(np.int64)


def axis_map(model_affine: np.ndarray, input_affine: np.ndarray, input_shape: Sequence[int]
             ) -> Tuple[List[int], List[np.ndarray]]:  # fmt: skip
    """For each input axis: the model axis it runs along, and the nearest model index of each voxel.
    Raises ValueError when the grids are not axis-aligned to each other."""
    to_model = np.linalg.solve(np.asarray(model_affine, float), np.asarray(input_affine, float))
    axes, indices = [], []
    for axis in range(3):
        column = to_model[:3, axis]
        target = int(np.argmax(np.abs(column)))
        if np.any(np.abs(np.delete(column, target)) > AXIS_ALIGNED * abs(column[target])):
            raise ValueError(f"input axis {axis} is not parallel to a model axis: {column}")
        axes.append(target)
        indices.append(nearest_indices(column[target] * np.arange(input_shape[axis]) + to_model[target, 3]))
    if sorted(axes) != [0, 1, 2]:
        raise ValueError(f"input axes map to model axes {axes}")
    return axes, indices


def labels_on_input_grid(labels: np.ndarray, model_affine: np.ndarray, input_affine: np.ndarray,
                         input_shape: Sequence[int]) -> np.ndarray:  # fmt: skip
    """labels (the model grid, uint8) sampled at each input voxel; 0 where a voxel maps outside it."""
    axes, indices = axis_map(model_affine, input_affine, input_shape)
    along_input = np.transpose(labels, axes)  # axis a now runs along input axis a
    inside = [(index >= 0) & (index < along_input.shape[a]) for a, index in enumerate(indices)]
    clipped = [np.clip(index, 0, along_input.shape[a] - 1) for a, index in enumerate(indices)]
    result = along_input[np.ix_(*clipped)]
    result[~inside[0]] = 0
    result[:, ~inside[1]] = 0
    result[:, :, ~inside[2]] = 0
    return result
