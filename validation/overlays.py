"""Overlays: the case's CT under the reference and output contours, drawn while the masks are in memory.

The gate compares each output mask with a reference and, with both arrays still loaded, draws one
small PNG of the slice that shows the comparison's worst label; then the arrays are dropped, so a gate
over hundreds of cases never holds more than the masks of the comparisons running. The report only
embeds these images: it never reads a mask.

The CT slice is found through the mask's own affine (voxel (0, 0, k) -> ImagePositionPatient of the
matching instance, RAS -> LPS), not by re-implementing the app's slice sort, and its pixel array
(rows, columns) is the mask's (j, i) plane transposed, as app/volume_geometry.py defines the mask's axes.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from validation import compare
from validation.results import REFERENCE_TITLES, Comparison, OverlayPanel

PANEL_PX = 360  # longer side of one overlay panel, px
GRAY_LEVELS = 250  # palette entries for the CT; the contour colours follow
CONTOUR_COLOURS = {  # palette order matters: index GRAY_LEVELS + position
    "reference": (0, 200, 255),
    "output": (255, 40, 200),
    "both": (255, 220, 0),
}
DICOM_GEOMETRY_TAGS = ["SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient",
                       "PixelSpacing", "Rows", "Columns"]  # fmt: skip


@dataclass(frozen=True)
class CtSlice:
    """One CT image in Hounsfield units as stored (rows, columns), its pixel spacing (row, column) mm, and
    which axes to flip for the radiological view (patient right on the left, anterior up)."""

    hu: np.ndarray
    spacing_mm: tuple[float, float]
    flip_rows: bool = False
    flip_columns: bool = False

    def view(self, image: np.ndarray) -> np.ndarray:
        """An image on this slice's (row, column) grid, oriented for display."""
        return image[:: -1 if self.flip_rows else 1, :: -1 if self.flip_columns else 1]


def slice_index(output: np.ndarray, reference: np.ndarray | None, label: int | None) -> int:
    """Axial slice (last axis) with the most voxels of `label` in the reference, else in the output;
    without a label, the slice with the most labelled output voxels."""
    for mask in (reference, output):
        if mask is None:
            continue
        counts = np.count_nonzero(mask == label if label is not None else mask != 0, axis=(0, 1))
        if counts.any():
            return int(np.argmax(counts))
    return output.shape[2] // 2


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def find_ct_slice(dicom_dir: str | Path, affine: np.ndarray, shape: Sequence[int], k: int) -> CtSlice:
    """The CT instance under slice k of a mask with this affine and shape (i, j, k) = (column, row, slice).

    Matches ImagePositionPatient and the row direction against the mask's voxel (0, 0, k), so a
    localizer or another series in the folder is never picked and the slice order need not be known.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    ras_to_lps = np.array([-1.0, -1.0, 1.0])
    target = ras_to_lps * (affine @ np.array([0.0, 0.0, float(k), 1.0]))[:3]
    row_direction = ras_to_lps * affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    tolerance_mm = 0.25 * min(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    for path in _dicom_files(Path(dicom_dir)):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=DICOM_GEOMETRY_TAGS)
        except (InvalidDicomError, OSError):
            continue
        if any(tag not in header for tag in DICOM_GEOMETRY_TAGS[1:]):
            continue
        if (int(header.Columns), int(header.Rows)) != tuple(shape[:2]):
            continue
        position = np.array([float(v) for v in header.ImagePositionPatient])
        orientation = np.array([float(v) for v in header.ImageOrientationPatient])
        if np.linalg.norm(position - target) <= tolerance_mm and np.allclose(
            orientation[:3], row_direction, atol=1e-3
        ):
            dataset = pydicom.dcmread(path)
            hu = np.asarray(apply_modality_lut(dataset.pixel_array, dataset), dtype=np.float32)
            row_mm, column_mm = (float(v) for v in dataset.PixelSpacing)
            return CtSlice(hu, (row_mm, column_mm), *_flips(orientation))
    raise ValueError(
        f"no CT image in {dicom_dir} lies at the mask's slice {k} (LPS {np.round(target, 2)} mm)"
    )


def _flips(orientation: np.ndarray) -> tuple[bool, bool]:
    """(flip rows, flip columns) so rows run anterior->posterior and columns patient right->left."""
    row_cosine, column_cosine = orientation[:3], orientation[3:6]
    return (
        bool(column_cosine[np.argmax(np.abs(column_cosine))] < 0),
        bool(row_cosine[np.argmax(np.abs(row_cosine))] < 0),
    )


def _display_size(shape: Sequence[int], spacing_mm: Sequence[float]) -> tuple[int, int]:
    """(width, height) px keeping the physical aspect, longer side PANEL_PX."""
    height_mm, width_mm = shape[0] * spacing_mm[0], shape[1] * spacing_mm[1]
    scale = PANEL_PX / max(height_mm, width_mm)
    return max(1, round(width_mm * scale)), max(1, round(height_mm * scale))


def _nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2D label image of any integer type to (width, height)."""
    width, height = size
    rows = (np.arange(height) * labels.shape[0] // height).clip(0, labels.shape[0] - 1)
    columns = (np.arange(width) * labels.shape[1] // width).clip(0, labels.shape[1] - 1)
    return labels[rows[:, None], columns[None, :]]


def _edges(labels: np.ndarray) -> np.ndarray:
    """Pixels whose label differs from a 4-neighbour's: a 2 px contour along every label border."""
    edge = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:, :] != labels[:-1, :]
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


def _palette() -> list[int]:
    grays = np.repeat(np.linspace(0, 255, GRAY_LEVELS).round().astype(int), 3).tolist()
    return grays + [channel for colour in CONTOUR_COLOURS.values() for channel in colour]


def render_overlay(
    ct: CtSlice, output: np.ndarray, reference: np.ndarray | None, window: Sequence[float] | None = None
) -> bytes:
    """PNG of the windowed CT with output and reference contours, as a palette image to stay small.

    `output` and `reference` are label slices in the CT's (row, column) order; `window` is the app
    contract's HU window (without one, the slice's 1st to 99th percentile).
    """
    from PIL import Image

    size = _display_size(ct.hu.shape, ct.spacing_mm)
    hu = np.asarray(Image.fromarray(ct.view(ct.hu), "F").resize(size, Image.Resampling.BILINEAR))
    low, high = window if window is not None else np.percentile(hu, (1, 99))
    high = max(high, low + 1.0)
    pixels = (np.clip((hu - low) / (high - low), 0.0, 1.0) * (GRAY_LEVELS - 1)).round().astype(np.uint8)
    output_edges = _edges(_nearest(ct.view(output), size))
    reference_edges = np.zeros_like(output_edges)
    if reference is not None:
        reference_edges = _edges(_nearest(ct.view(reference), size))
    for index, where in enumerate(
        (reference_edges & ~output_edges, output_edges & ~reference_edges, output_edges & reference_edges)
    ):
        pixels[where] = GRAY_LEVELS + index
    image = Image.fromarray(pixels, "P")
    image.putpalette(_palette())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def draw_panel(
    kind: str,
    output: compare.LabelMask,
    reference: compare.LabelMask,
    result: compare.ComparisonResult,
    dicom_dir: str | Path,
    window: Sequence[float] | None,
) -> tuple[bytes, str, str]:
    """(PNG, caption, note) of one comparison: the axial slice where its lowest-Dice label has the most
    reference voxels (without per-label metrics, the slice with the most labelled output voxels).
    A reference on another grid is drawn without its contour, with a note."""
    worst = min(result.per_label, key=lambda metrics: metrics.dice, default=None)
    same_grid = reference.labels.shape == output.labels.shape
    k = slice_index(output.labels, reference.labels if same_grid else None, worst.label if worst else None)
    ct = find_ct_slice(dicom_dir, output.affine, output.labels.shape, k)
    reference_slice = reference.labels[:, :, k].T if same_grid else None
    png = render_overlay(ct, output.labels[:, :, k].T, reference_slice, window)
    where = f"axial slice {k + 1} of {output.labels.shape[2]}"
    if worst is not None:
        title = REFERENCE_TITLES.get(kind, kind)
        caption = (
            f"{where}, where {worst.name} (lowest Dice {worst.dice:.4f} vs {title}) "
            "has the most reference voxels"
        )
    else:
        caption = f"{where}, the one with the most labelled output voxels"
    if not same_grid:
        note = f"reference grid {reference.labels.shape} differs from the output's: output only"
    else:
        note = "" if result.geometry.matches else "affines differ: contour placed by voxel index"
    return png, caption, note


def compare_with_overlay(
    kind: str,
    output_path: str | Path,
    reference_path: str | Path,
    tolerances: Mapping[str, float],
    *,
    dicom_dir: str | Path,
    out_dir: Path,
    labels: Iterable[int] | None = None,
    names: Mapping[int, str] | None = None,
    window: Sequence[float] | None = None,
) -> Comparison:
    """The gate's comparison of one case with one reference (GateError on bad input), with its overlay
    rendered from the masks already loaded for it and written to out_dir/overlay-<kind>.png.

    A problem drawing it (a CT folder that does not match the mask) becomes the panel's note: the
    comparison and the report stand without the picture."""
    output, reference = compare.load_masks(output_path, reference_path)
    result, outcomes = compare.gate_images(output, reference, tolerances, labels=labels, names=names)
    title = REFERENCE_TITLES.get(kind, kind)
    try:
        png, caption, note = draw_panel(kind, output, reference, result, dicom_dir, window)
    except Exception as error:  # see the docstring
        panel = OverlayPanel(title, "", f"overlay not drawn: {type(error).__name__}: {error}")
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"overlay-{kind}.png"
        path.write_bytes(png)
        panel = OverlayPanel(title, caption, note, png, str(path))
    return Comparison(str(reference_path), dict(tolerances), result, tuple(outcomes), panel)
