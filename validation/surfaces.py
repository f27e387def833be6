"""Surface voxels and surface distances of label masks, sparse: the heavy part of HD95 and NSD.

The masks are scanned once for their labelled voxels; everything after (counts, overlap, edges,
distances) works on those sparse voxels, and distances on edge voxels only, through a dense near search
and then one KD-tree per label. No full-volume one-hot, erosion or distance transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class Surfaces:
    """One mask, sparse: voxel count per label and its edge voxels' flat indices grouped by label."""

    flat: np.ndarray
    labelled_index: np.ndarray  # flat indices of voxels with a label > 0, ascending
    labelled_values: np.ndarray
    counts: np.ndarray  # voxels per label id
    edge_index: np.ndarray  # flat indices of edge voxels, grouped by label, ascending within a label
    edge_starts: np.ndarray  # label l's edges are edge_index[edge_starts[l]:edge_starts[l + 1]]

    def edges(self, label: int) -> np.ndarray:
        if label + 1 >= self.edge_starts.size:
            return self.edge_index[:0]
        return self.edge_index[self.edge_starts[label] : self.edge_starts[label + 1]]


def surfaces(labels: np.ndarray, steps: Sequence[int], n_labels: int) -> Surfaces:
    """Find labelled voxels once, then their edges by comparing each with its 6 (2n) neighbours."""
    flat = labels.ravel(order="K")
    index = np.flatnonzero(flat != 0)
    values = flat[index]
    on_edge = np.zeros(index.size, dtype=bool)
    for axis, step in enumerate(steps):
        for offset in (step, -step):
            # clip keeps indices in range; only voxels on the image's faces read a wrong (wrapped)
            # neighbour, and those are edges anyway, flagged below
            on_edge |= flat.take(index + offset, mode="clip") != values
        size = labels.shape[axis]
        faces = [(slice(None),) * axis + (end,) for end in (0, size - 1)]  # views; np.take would copy
        if any(labels[face].any() for face in faces):
            coordinate = (index // step) % size
            on_edge |= (coordinate == 0) | (coordinate == size - 1)
    edge_index, edge_values = index[on_edge], values[on_edge]
    by_label = np.argsort(edge_values, kind="stable")
    edge_starts = np.concatenate(([0], np.cumsum(np.bincount(edge_values, minlength=n_labels))))
    return Surfaces(
        flat, index, values, np.bincount(values, minlength=n_labels), edge_index[by_label], edge_starts
    )


# The near search tries at most about this many voxel offsets (whole distance shells) before the KD-tree.
NEAR_SEARCH_OFFSETS = 64


@dataclass(frozen=True)
class Grid:
    """How a flat index maps to a voxel position, shared by both masks (same layout)."""

    shape: tuple[int, ...]
    steps: tuple[int, ...]  # flat-index distance between neighbours along each axis
    spacing: np.ndarray

    def voxel_coordinates(self, flat_index: np.ndarray) -> np.ndarray:
        return np.stack(
            [(flat_index // step) % size for size, step in zip(self.shape, self.steps, strict=True)], axis=1
        )

    @cached_property
    def near_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """Every integer offset up to a radius (whole shells, ~NEAR_SEARCH_OFFSETS of them), nearest first,
        with its length in mm: a search over them finds exact nearest distances up to that radius."""
        reach = np.ceil(2.0 * self.spacing.max() / self.spacing).astype(int)
        axes = [np.arange(-r, r + 1) for r in reach]
        offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(self.shape))
        lengths = np.sqrt(((offsets * self.spacing) ** 2).sum(axis=1))
        order = np.argsort(lengths, kind="stable")
        offsets, lengths = offsets[order], lengths[order]
        # all offsets within the generated box are complete only up to its inscribed radius
        radius = min(lengths[min(NEAR_SEARCH_OFFSETS, lengths.size) - 1], float((reach * self.spacing).min()))
        keep = lengths <= radius
        return offsets[keep], lengths[keep]


def _near_search(
    source: np.ndarray, target: np.ndarray, offsets: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact distances of source voxels whose nearest target voxel is within the offsets' radius.

    Source and target (voxel coordinates) go into one padded box; the target marks a dense lookup
    table; each offset, nearest first, settles the source voxels it lands on a target from. Returns
    the distances (NaN where unsettled) and the unsettled source rows."""
    pad = np.abs(offsets).max(axis=0)
    low = np.minimum(source.min(axis=0), target.min(axis=0)) - pad
    box = np.maximum(source.max(axis=0), target.max(axis=0)) + pad - low + 1
    box_steps = np.cumprod(np.concatenate(([1], box[:0:-1])))[::-1]  # C order within the box
    lookup = np.zeros(int(np.prod(box)), dtype=bool)
    lookup[(target - low) @ box_steps] = True
    distances = np.full(source.shape[0], np.nan, dtype=np.float32)
    pending = np.arange(source.shape[0])
    where = (source - low) @ box_steps
    for step, length in zip(offsets @ box_steps, lengths, strict=True):
        hit = lookup[where + step]
        if hit.any():
            distances[pending[hit]] = length
            pending, where = pending[~hit], where[~hit]
            if not pending.size:
                break
    return distances, pending


def directed_distances(source: np.ndarray, target: np.ndarray, grid: Grid) -> np.ndarray:
    """Distance (mm, float32 like MONAI) from each source edge voxel to the nearest target edge voxel:
    near ones by the dense near search, the rest through a KD-tree of the target voxels."""
    source_voxels, target_voxels = grid.voxel_coordinates(source), grid.voxel_coordinates(target)
    distances, pending = _near_search(source_voxels, target_voxels, *grid.near_offsets)
    if pending.size:
        # compact_nodes=False: 3-5x faster queries from far points (a missing slice, a hole) than the default
        tree = cKDTree(target_voxels * grid.spacing, leafsize=32, balanced_tree=False, compact_nodes=False)
        distances[pending] = tree.query(source_voxels[pending] * grid.spacing, k=1, workers=1)[0]
    return distances
