"""The app's label map back on the input's grid (app/label_grid.py): nearest voxel, one tie rule."""

from __future__ import annotations

import numpy as np
import pytest

from app import label_grid

# An input of 1.25 mm slices whose x axis runs the other way (LPS-style), against a model grid of
# 2 mm along RAS: input slice k lies at model slice 0.625 k, exactly half-way for k = 4, 12, 20...
INPUT_AFFINE = np.array([[-1.0, 0, 0, 20.0], [0, 1.0, 0, 0.0], [0, 0, 1.25, 0.0], [0, 0, 0, 1]])
MODEL_AFFINE = np.array([[1.5, 0, 0, 0.0], [0, 1.5, 0, 0.0], [0, 0, 2.0, 0.0], [0, 0, 0, 1]])
INPUT_SHAPE = (21, 16, 40)


def model_labels(shape: tuple[int, int, int] = (14, 11, 25)) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 14, size=shape, dtype=np.uint8)


def brute_force(labels: np.ndarray, model_affine: np.ndarray) -> np.ndarray:
    """Each input voxel's model position, rounded half up, looked up one voxel at a time."""
    to_model = np.linalg.solve(model_affine, INPUT_AFFINE)
    result = np.zeros(INPUT_SHAPE, np.uint8)
    for index in np.ndindex(*INPUT_SHAPE):
        position = to_model[:3] @ np.array([*index, 1.0])
        nearest = np.floor(np.round(position, 6) + 0.5).astype(int)
        if all(0 <= n < size for n, size in zip(nearest, labels.shape, strict=True)):
            result[index] = labels[tuple(nearest)]
    return result


def test_a_tie_goes_up_and_a_near_tie_is_rounded() -> None:
    positions = np.array([0.5, 1.5, 2.5 - 1e-7, 2.5 + 1e-7, 2.5 - 1e-3, 2.5 + 1e-3, -0.4])
    assert label_grid.nearest_indices(positions).tolist() == [1, 2, 3, 3, 2, 3, 0]


def test_labels_are_each_input_voxels_nearest_model_voxel() -> None:
    labels = model_labels()
    result = label_grid.labels_on_input_grid(labels, MODEL_AFFINE, INPUT_AFFINE, INPUT_SHAPE)
    assert result.shape == INPUT_SHAPE and result.dtype == np.uint8
    np.testing.assert_array_equal(result, brute_force(labels, MODEL_AFFINE))


def test_voxels_beyond_the_model_grid_are_background() -> None:
    labels = np.ones((14, 11, 10), np.uint8)  # the model grid ends at z = 18 mm, the input at 48.75
    result = label_grid.labels_on_input_grid(labels, MODEL_AFFINE, INPUT_AFFINE, INPUT_SHAPE)
    beyond = [k for k in range(INPUT_SHAPE[2]) if 1.25 * k / 2.0 >= 9.5]
    assert beyond and not result[:, :, beyond].any() and result[:, :, 0].all()


def test_an_affine_that_differs_in_the_last_bits_gives_the_same_labels() -> None:
    """Two stacks compute the model grid's origin a few 1e-7 mm apart; rounding each exact tie by
    its float noise would put those slices' labels one voxel apart on one of them."""
    labels = model_labels()
    nudged = MODEL_AFFINE.copy()
    nudged[:3, 3] += 6e-7
    for affine in (nudged, MODEL_AFFINE - (nudged - MODEL_AFFINE)):
        np.testing.assert_array_equal(
            label_grid.labels_on_input_grid(labels, affine, INPUT_AFFINE, INPUT_SHAPE),
            label_grid.labels_on_input_grid(labels, MODEL_AFFINE, INPUT_AFFINE, INPUT_SHAPE),
        )


def test_axes_that_are_not_parallel_are_refused() -> None:
    turned = MODEL_AFFINE.copy()
    turned[:2, :2] = 1.5 * np.array([[np.cos(0.1), -np.sin(0.1)], [np.sin(0.1), np.cos(0.1)]])
    with pytest.raises(ValueError, match="not parallel"):
        label_grid.labels_on_input_grid(model_labels(), turned, INPUT_AFFINE, INPUT_SHAPE)
