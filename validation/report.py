"""The acceptance report: one self-contained report.html and a short console summary of the gate's metrics.

Both read the metrics dict that `nox -s acceptance` also writes to metrics.json, so the report shows
exactly what was measured. The HTML has inline CSS and base64 PNG overlays only, so it can be mailed,
attached to a ticket or opened offline. Fields may be null (a failed run has no mask, no comparisons);
the report shows a dash rather than failing, and an overlay that cannot be drawn becomes a note.

Overlays put the case's CT under the reference and output contours. The CT slice is found through the
mask's own affine (voxel (0, 0, k) -> ImagePositionPatient of the matching instance, RAS -> LPS), not by
re-implementing the app's slice sort, and its pixel array (rows, columns) is the mask's (j, i) plane
transposed, as app/volume_geometry.py defines the mask's axes.
"""

from __future__ import annotations

import base64
import io
import math
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from validation.metrics import METRICS

REPORT_FILE = "report.html"
PANEL_PX = 360  # longer side of one overlay panel, px
GRAY_LEVELS = 250  # palette entries for the CT; the contour colours follow
CONTOUR_COLOURS = {  # palette order matters: index GRAY_LEVELS + position
    "reference": (0, 200, 255),
    "output": (255, 40, 200),
    "both": (255, 220, 0),
}
# comparison key -> title; the first present with per-label metrics chooses the slice
REFERENCE_TITLES = {"golden": "golden (host)", "ground_truth": "ground truth", "host": "host run"}
OVERLAY_PANELS = 2  # at most this many references drawn per case
CONSOLE_LINES = 25
CONSOLE_REASON_CHARS = 160
DICOM_GEOMETRY_TAGS = ["SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient",
                       "PixelSpacing", "Rows", "Columns"]  # fmt: skip


# ---- small formatting helpers --------------------------------------------------------------------


def _number(value: Any, pattern: str = "{:.4g}") -> str:
    """A number for humans; missing or non-finite values become a dash or ∞."""
    if value is None or isinstance(value, bool):
        return "—" if value is None else str(value)
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    try:
        return pattern.format(value)
    except (TypeError, ValueError):
        return str(value)


def _bytes(value: int | None) -> str:
    if value is None:
        return "—"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value} B"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _checks(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [check for check in metrics.get("checks") or [] if check]


def _failed(checks: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [c for c in checks if not c.get("passed") and not c.get("skipped")]


def _cases(metrics: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [(name, case or {}) for name, case in (metrics.get("cases") or {}).items()]


def _verdict(metrics: Mapping[str, Any]) -> str:
    """PASS, PARTIAL, FAIL or INTERRUPTED; anything unknown reads as FAIL, never as PASS."""
    name = str(metrics.get("verdict") or "fail")
    return name.upper() if name in ("pass", "partial", "fail", "interrupted") else "FAIL"


def _scope_line(metrics: Mapping[str, Any]) -> str:
    """Why a verdict is not a release verdict: what was left out or could not be evaluated."""
    selection = metrics.get("selection") or {}
    deselected = selection.get("deselected") or []
    not_evaluated = sum(1 for c in _checks(metrics) if c.get("skipped"))
    parts = []
    if selection.get("shard"):
        shard = metrics.get("shard") or {}
        mine, every = shard.get("cases") or [], (shard.get("case_set") or {}).get("names") or []
        parts.append(
            f"shard {selection['shard']} of the cases only ({len(mine)} of {len(every)}: {', '.join(mine)}; "
            "merge every shard for a verdict)"
        )
    if deselected:
        options = " ".join(selection.get("options") or []) or "selection"
        parts.append(f"{len(deselected)} checks left out by {options}")
    if not_evaluated:
        parts.append(f"{not_evaluated} not evaluated")
    if metrics.get("verdict") == "interrupted":
        parts.append("interrupted")
    return "; ".join(parts) + ": not a release verdict" if parts else ""


def _group_state(checks: Sequence[Mapping[str, Any]], group: str) -> str:
    """pass/fail of one group of checks; '' when the gate recorded none for it."""
    mine = [c for c in checks if c.get("group") == group and not c.get("skipped")]
    if not mine:
        return ""
    return "fail" if _failed(mine) else "pass"


def _one_line(text: str | None, limit: int = CONSOLE_REASON_CHARS) -> str:
    """The first line of a (pytest) message, shortened: the console gets a hint, the report the rest."""
    first = (text or "").strip().split("\n", 1)[0]
    return first if len(first) <= limit else first[: limit - 1] + "…"


def _run_status(run: Mapping[str, Any]) -> tuple[str, str]:
    """(text, pass/fail) of one run of the app; run.py's own failure line when it gave one."""
    if run.get("failure"):
        return str(run["failure"]), "fail"
    if run.get("timed_out"):
        return "timed out", "fail"
    if run.get("oom_killed"):
        return "killed: out of memory", "fail"
    code = run.get("exit_code")
    return (f"exit {code}", "pass") if code == 0 else (f"exit {_number(code)}", "fail")


# ---- overlays -------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Focus:
    """Where an overlay looks: the worst label of the first comparison that measured labels."""

    comparison: str
    label: int | None
    name: str
    dice: float | None


def _load_labels(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A 3D label mask and its affine (NIfTI, as the app writes it)."""
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: shape {data.shape} is not a 3D mask")
    return data, np.asarray(image.affine, dtype=float)


def _worst_label(comparison: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The per-label entry with the lowest Dice (a missing Dice counts as perfect), None without any."""
    per_label = ((comparison or {}).get("result") or {}).get("per_label") or []
    if not per_label:
        return None
    return min(per_label, key=lambda entry: 1.0 if entry.get("dice") is None else entry["dice"])


def find_focus(comparisons: Mapping[str, Any]) -> Focus | None:
    """The lowest-Dice label against the golden, else the ground truth, else any reference.

    A reference the output matches perfectly (all Dice 1) has no worst label worth showing, so the next
    reference with an imperfect label wins; with none imperfect, the first reference's.
    """
    worst = {
        key: _worst_label(comparisons.get(key)) for key in dict.fromkeys((*REFERENCE_TITLES, *comparisons))
    }
    measured = [(key, entry) for key, entry in worst.items() if entry is not None]
    if not measured:
        return None
    key, entry = next(((k, e) for k, e in measured if (e.get("dice") or 0.0) < 1.0), measured[0])
    return Focus(key, int(entry["label"]), str(entry.get("name", entry["label"])), entry.get("dice"))


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


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _overlay_references(comparisons: Mapping[str, Any], focus: Focus | None) -> list[str]:
    """Comparison keys to draw: the focus comparison first, then the other named references."""
    keys = [key for key in REFERENCE_TITLES if (comparisons.get(key) or {}).get("reference")]
    if focus is not None and focus.comparison in keys:
        keys.remove(focus.comparison)
        keys.insert(0, focus.comparison)
    return keys[:OVERLAY_PANELS]


def _panel(
    key: str,
    comparison: Mapping[str, Any],
    output: np.ndarray,
    ct: CtSlice,
    k: int,
    window: Sequence[float] | None,
) -> dict[str, str]:
    """One overlay panel; a reference on another grid is drawn without its contour, with a note."""
    title = REFERENCE_TITLES.get(key, key)
    try:
        reference, _ = _load_labels(comparison["reference"])
    except (OSError, ValueError) as error:
        return {"title": title, "note": f"reference not readable: {error}", "src": ""}
    if reference.shape != output.shape:
        note = f"reference grid {reference.shape} differs from the output's: output only"
        png = render_overlay(ct, output[:, :, k].T, None, window)
        return {"title": title, "note": note, "src": _data_uri(png)}
    geometry = (comparison.get("result") or {}).get("geometry") or {}
    note = "" if geometry.get("matches", True) else "affines differ: contour placed by voxel index"
    png = render_overlay(ct, output[:, :, k].T, reference[:, :, k].T, window)
    return {"title": title, "note": note, "src": _data_uri(png)}


def case_overlay(case: Mapping[str, Any], window: Sequence[float] | None = None) -> dict[str, Any] | None:
    """The overlay figure of one case, None without an output mask.

    Any problem reading the inputs becomes the figure's error note: the report is the last step of
    the gate and must be written even when a case's data is broken.
    """
    output_path = case.get("output_mask")
    if not output_path:
        return None
    comparisons = case.get("comparisons") or {}
    focus = find_focus(comparisons)
    figure: dict[str, Any] = {"panels": [], "error": "", "caption": ""}
    try:
        output, affine = _load_labels(output_path)
        keys = _overlay_references(comparisons, focus)
        focus_reference = None
        if focus is not None and (comparisons.get(focus.comparison) or {}).get("reference"):
            candidate, _ = _load_labels(comparisons[focus.comparison]["reference"])
            focus_reference = candidate if candidate.shape == output.shape else None
        k = slice_index(output, focus_reference, focus.label if focus else None)
        ct = find_ct_slice(case.get("dicom_dir") or "", affine, output.shape, k)
        figure["panels"] = [_panel(key, comparisons[key], output, ct, k, window) for key in keys] or [
            {
                "title": "output",
                "note": "no reference to compare with",
                "src": _data_uri(render_overlay(ct, output[:, :, k].T, None, window)),
            }
        ]
    except Exception as error:  # see the docstring
        figure["error"] = f"overlay not drawn: {type(error).__name__}: {error}"
        return figure
    where = f"axial slice {k + 1} of {output.shape[2]}"
    if focus is not None:
        figure["caption"] = (
            f"{where}, where {focus.name} (lowest Dice {_number(focus.dice, '{:.4f}')} vs "
            f"{REFERENCE_TITLES.get(focus.comparison, focus.comparison)}) has the most reference voxels"
        )
    else:
        figure["caption"] = f"{where}, the one with the most labelled output voxels"
    return figure


# ---- view model -----------------------------------------------------------------------------------


def _metric_cells(
    entry: Mapping[str, Any], outcomes: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, str]]:
    """One table row's metric cells, each marked by the gate's own check of that metric and label."""
    cells = []
    for metric in METRICS:
        outcome = outcomes.get(f"{metric.name}[{entry.get('name', entry.get('label'))}]")
        state = "" if outcome is None else ("pass" if outcome.get("passed") else "fail")
        value = entry.get(metric.field)
        if value is None and not metric.at_least:
            value = math.inf  # compare.py writes inf as null: the label is missing from one mask
        cells.append({"text": _number(value, metric.number), "state": state})
    return cells


def _comparison_view(key: str, comparison: Mapping[str, Any]) -> dict[str, Any]:
    tolerances = comparison.get("tolerances") or {}
    result = comparison.get("result") or {}
    outcomes = [o for o in comparison.get("outcomes") or [] if o]
    by_name = {o.get("name"): o for o in outcomes}
    nsd_mm = result.get("nsd_tolerance_mm", tolerances.get("nsd_tolerance_mm"))
    headers = []
    for metric in METRICS:
        header = metric.title
        if metric.limit in tolerances:
            header += f" {metric.sign} {_number(tolerances[metric.limit])}"
        if metric.name == "nsd" and nsd_mm is not None:
            header += f" (@ {_number(nsd_mm)} mm)"
        headers.append(header)
    rows = [
        {
            "label": entry.get("label"),
            "name": entry.get("name", ""),
            "cells": _metric_cells(entry, by_name),
            "volumes": f"{_number(entry.get('output_volume_ml'), '{:.2f}')} / "
            f"{_number(entry.get('reference_volume_ml'), '{:.2f}')}",
        }
        for entry in result.get("per_label") or []
    ]
    return {
        "key": key,
        "title": REFERENCE_TITLES.get(key, key),
        "reference": comparison.get("reference") or "—",
        "headers": headers,
        "rows": rows,
        "general": [o for o in outcomes if o.get("name") in ("geometry", "labels")],
        "state": "fail" if _failed(outcomes) else ("pass" if outcomes else ""),
        "tolerances": ", ".join(f"{k} {_number(v)}" for k, v in tolerances.items()),
    }


def _run_view(run: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not run:
        return None
    status, state = _run_status(run)
    command = run.get("command") or []
    return {
        "where": run.get("where", "?"),
        "status": status,
        "state": state,
        "seconds": _seconds(run.get("seconds")),
        "memory": _bytes(run.get("peak_memory_bytes")),
        "command": shlex.join(str(part) for part in command) if command else "—",
        "log_tail": "\n".join(run.get("log_tail") or []),
    }


def _case_view(
    name: str, case: Mapping[str, Any], checks: Sequence[Mapping[str, Any]], window: Sequence[float] | None
) -> dict[str, Any]:
    comparisons = case.get("comparisons") or {}
    return {
        "name": name,
        "state": _group_state(checks, name),
        "dicom_dir": case.get("dicom_dir") or "—",
        "output_mask": case.get("output_mask") or "none: the run wrote no mask",
        "runs": [view for view in (_run_view(case.get("run")), _run_view(case.get("host_run"))) if view],
        "comparisons": [_comparison_view(key, value) for key, value in comparisons.items() if value],
        "seg": [o for o in (case.get("seg") or {}).get("outcomes") or [] if o],
        "failed": _failed(c for c in checks if c.get("group") == name),
        "overlay": case_overlay(case, window),
    }


def _image_view(image: Mapping[str, Any]) -> dict[str, Any]:
    labels = image.get("labels") or {}
    facts = [
        ("Profile", image.get("profile")),
        ("Reference", image.get("reference")),
        ("Digest", image.get("id")),
        ("Platform", image.get("platform")),
        ("Size", _bytes(image.get("size_bytes"))),
        ("Revision", labels.get("org.opencontainers.image.revision")),
    ]
    return {
        "facts": [(title, value if value not in (None, "") else "—") for title, value in facts],
        "labels": sorted(labels.items()),
        "pins": [p for p in image.get("pins") or [] if p],
    }


def view_model(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the template shows, pre-formatted, so the template has no logic beyond loops."""
    checks = _checks(metrics)
    failed = _failed(checks)
    return {
        "verdict": _verdict(metrics),
        "verdict_class": {"PASS": "pass", "PARTIAL": "partial"}.get(_verdict(metrics), "fail"),
        "scope": _scope_line(metrics),
        "started": metrics.get("started") or "—",
        "seconds": _seconds(metrics.get("seconds")),
        "counts": {
            "total": len(checks),
            "failed": len(failed),
            "skipped": sum(1 for c in checks if c.get("skipped")),
        },
        "failed": failed,
        "checks": checks,
        "image": _image_view(metrics.get("image") or {}),
        "cases": [
            _case_view(name, case, checks, (metrics.get("app") or {}).get("window_hu"))
            for name, case in _cases(metrics)
        ],
        "legend": [(name, "#{:02x}{:02x}{:02x}".format(*rgb)) for name, rgb in CONTOUR_COLOURS.items()],
    }


# ---- outputs --------------------------------------------------------------------------------------

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>armgate acceptance: {{ verdict }}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
  color:#1d2430;background:#f4f6f9}
main{max-width:1180px;margin:0 auto;padding:0 20px 40px}
h1{margin:0;font-size:30px;letter-spacing:.04em}
h2{margin:28px 0 10px;font-size:20px;border-bottom:2px solid #d5dbe4;padding-bottom:4px}
h3{margin:18px 0 6px;font-size:16px}
.banner{padding:22px 20px;margin-bottom:8px;color:#fff;background:#4a5568}
.banner .inner{max-width:1180px;margin:0 auto}.banner p{margin:4px 0 0}
.pass{color:#1e7d3b}.fail{color:#b3261e}
.banner.pass{background:#1e7d3b;color:#fff}.banner.fail{background:#b3261e;color:#fff}
.banner.partial{background:#f2c230;color:#1d2430}
table{border-collapse:collapse;background:#fff;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #d5dbe4;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#eaeef4;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.pass{background:#e5f4e9;color:#14532d}td.fail{background:#fbe4e2;color:#7f1d1d;font-weight:600}
td.num.pass::after{content:" ✓"}td.num.fail::after{content:" ✗"}
td.skip{background:#f1f1f1;color:#666}
.tag{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.tag.pass{background:#1e7d3b}.tag.fail{background:#b3261e}.tag.partial{background:#f2c230;color:#1d2430}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{white-space:pre-wrap;word-break:break-all;background:#fff;border:1px solid #d5dbe4;
  padding:6px 8px;margin:4px 0}
.case{background:#fff;border:1px solid #d5dbe4;border-radius:6px;padding:4px 16px 12px;margin:14px 0}
.muted{color:#5c6675}.failed li{margin:3px 0}.reason{white-space:pre-line}
figure{margin:8px 0}.panels{display:flex;flex-wrap:wrap;gap:12px}
.panel{margin:0}.panel img{display:block;border:1px solid #333}
.panel figcaption{font-size:12px;color:#5c6675}
.legend span{display:inline-block;width:14px;height:4px;margin:0 4px 3px 10px;vertical-align:middle}
details{margin:8px 0}summary{cursor:pointer;font-weight:600}
</style></head>
<body>
<header class="banner {{ verdict_class }}"><div class="inner">
<h1>{{ verdict }}</h1>
<p>armgate acceptance · started {{ started }} · {{ seconds }} ·
{{ counts.total - counts.failed - counts.skipped }} of {{ counts.total }} checks passed,
{{ counts.failed }} failed, {{ counts.skipped }} not evaluated</p>
{% if scope %}<p class="scope">{{ scope }}</p>{% endif %}
</div></header>
<main>
{% if failed %}
<h2>Failed checks</h2>
<ul class="failed">
{% for check in failed %}<li><span class="fail">✗</span> <b>{{ check.group }}</b> /
<code>{{ check.name }}</code>: <span class="reason">{{ check.reason or "no reason given" }}</span></li>
{% endfor %}</ul>
{% endif %}

<h2>Image</h2>
<table>{% for title, value in image.facts %}
<tr><th>{{ title }}</th><td><code>{{ value }}</code></td></tr>{% endfor %}
</table>
{% if image.pins %}
<h3>Pinned packages</h3>
<table><tr><th>Package</th><th>Expected</th><th>Found</th><th>Result</th></tr>
{% for pin in image.pins %}<tr><td>{{ pin.name }}</td><td><code>{{ pin.expected }}</code></td>
<td><code>{{ pin.found if pin.found is not none else "missing" }}</code></td>
<td class="{{ 'pass' if pin.passed else 'fail' }}">{{ 'pass' if pin.passed else 'fail' }}</td></tr>
{% endfor %}</table>
{% endif %}
{% if image.labels %}
<details><summary>Image labels ({{ image.labels|length }})</summary>
<table>{% for key, value in image.labels %}
<tr><th>{{ key }}</th><td><code>{{ value }}</code></td></tr>{% endfor %}
</table>
</details>
{% endif %}

<h2>Cases</h2>
{% for case in cases %}
<section class="case" id="case-{{ case.name }}">
<h3>{{ case.name }}
{% if case.state %}<span class="tag {{ case.state }}">{{ case.state|upper }}</span>{% endif %}</h3>
<p class="muted">DICOM <code>{{ case.dicom_dir }}</code><br>
output mask <code>{{ case.output_mask }}</code></p>
{% if case.failed %}<ul class="failed">{% for check in case.failed %}
<li><span class="fail">✗</span> <code>{{ check.name }}</code>:
<span class="reason">{{ check.reason or "no reason given" }}</span></li>
{% endfor %}</ul>{% endif %}
{% if case.runs %}
<table><tr><th>Run</th><th>Result</th><th>Wall time</th><th>Peak memory</th></tr>
{% for run in case.runs %}<tr><td>{{ run.where }}</td><td class="{{ run.state }}">{{ run.status }}</td>
<td class="num">{{ run.seconds }}</td><td class="num">{{ run.memory }}</td></tr>{% endfor %}
</table>
{% for run in case.runs %}
<div class="muted">{{ run.where }} command:</div><pre>{{ run.command }}</pre>
{% if run.log_tail %}<div class="muted">the app's last lines ({{ run.where }}):</div>
<pre>{{ run.log_tail }}</pre>{% endif %}
{% endfor %}
{% else %}<p class="fail">No run recorded.</p>{% endif %}

{% for comparison in case.comparisons %}
<h3>vs {{ comparison.title }}
{% if comparison.state %}<span class="tag {{ comparison.state }}">{{ comparison.state|upper }}</span>
{% endif %}</h3>
<p class="muted">reference <code>{{ comparison.reference }}</code>
{% if comparison.tolerances %}<br>tolerances: {{ comparison.tolerances }}{% endif %}</p>
{% for outcome in comparison.general %}
<div class="{{ 'pass' if outcome.passed else 'fail' }}">{{ '✓' if outcome.passed else '✗' }}
{{ outcome.name }}: {{ outcome.reason }}</div>{% endfor %}
{% if comparison.rows %}
<table><tr><th>Label</th>{% for header in comparison.headers %}<th>{{ header }}</th>{% endfor %}
<th>Volume out / ref ml</th></tr>
{% for row in comparison.rows %}<tr><td>{{ row.label }} {{ row.name }}</td>
{% for cell in row.cells %}<td class="num {{ cell.state }}">{{ cell.text }}</td>{% endfor %}
<td class="num">{{ row.volumes }}</td></tr>{% endfor %}
</table>
{% else %}<p class="muted">No per-label metrics.</p>{% endif %}
{% endfor %}

{% if case.seg %}
<h3>DICOM SEG</h3>
<table><tr><th>Check</th><th>Result</th><th>Reason</th></tr>
{% for outcome in case.seg %}<tr><td><code>{{ outcome.name }}</code></td>
<td class="{{ 'pass' if outcome.passed else 'fail' }}">{{ 'pass' if outcome.passed else 'fail' }}</td>
<td>{{ outcome.reason }}</td></tr>{% endfor %}</table>
{% endif %}

{% if case.overlay %}
<figure class="overlay">
{% if case.overlay.error %}<p class="muted">{{ case.overlay.error }}</p>{% else %}
<div class="panels">{% for panel in case.overlay.panels %}
<figure class="panel">
{% if panel.src %}<img src="{{ panel.src }}" alt="{{ case.name }}: output vs {{ panel.title }}">{% endif %}
<figcaption>reference: {{ panel.title }}{% if panel.note %} ({{ panel.note }}){% endif %}</figcaption>
</figure>
{% endfor %}</div>
<figcaption>{{ case.overlay.caption }}. <span class="legend">{% for name, colour in legend %}
<span style="background:{{ colour }}"></span>{{ name }}{% endfor %}</span></figcaption>
{% endif %}
</figure>
{% else %}<p class="muted">No overlay: the run wrote no mask.</p>{% endif %}
</section>
{% endfor %}

<h2>All checks</h2>
<details{% if failed %} open{% endif %}><summary>{{ counts.total }} checks</summary>
<table><tr><th>Group</th><th>Check</th><th>Result</th><th>Reason</th></tr>
{% for check in checks %}<tr><td>{{ check.group }}</td><td><code>{{ check.name }}</code></td>
{% if check.skipped %}<td class="skip">not evaluated</td>{% else %}
<td class="{{ 'pass' if check.passed else 'fail' }}">{{ 'pass' if check.passed else 'fail' }}</td>
{% endif %}<td>{{ check.reason }}</td></tr>{% endfor %}
</table></details>
</main></body></html>
"""


def render_html(metrics: Mapping[str, Any]) -> str:
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    return environment.from_string(TEMPLATE).render(**view_model(metrics))


def write_report(metrics: dict, out_dir: Path) -> Path:
    """Writes out_dir/report.html (self-contained) and returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILE
    path.write_text(render_html(metrics), encoding="utf-8")
    return path


def _case_line(name: str, case: Mapping[str, Any], checks: Sequence[Mapping[str, Any]]) -> str:
    state = _group_state(checks, name).upper() or "—"
    run = case.get("run")
    parts = [f"case {name}: {state}"]
    if run:
        status = _one_line(run.get("failure"), 80) or f"{run.get('where', 'run')} {_run_status(run)[0]}"
        parts.append(
            f"{status} in {_seconds(run.get('seconds'))}, peak {_bytes(run.get('peak_memory_bytes'))}"
        )
    else:
        parts.append("no run")
    for key, comparison in (case.get("comparisons") or {}).items():
        worst = _worst_label(comparison)
        if worst is not None:
            parts.append(f"{key} min Dice {_number(worst.get('dice'), '{:.4f}')} ({worst.get('name')})")
    return "; ".join(parts)


def console_summary(metrics: dict) -> str:
    """A few lines for the terminal: verdict, image, one line per case, failed checks with reasons."""
    checks = _checks(metrics)
    failed = _failed(checks)
    skipped = sum(1 for c in checks if c.get("skipped"))
    image = metrics.get("image") or {}
    lines = [
        f"acceptance {_verdict(metrics)}: {len(checks) - len(failed) - skipped} of {len(checks)} checks "
        f"passed, {len(failed)} failed, {skipped} not evaluated ({_seconds(metrics.get('seconds'))})",
        *([_scope_line(metrics)] if _scope_line(metrics) else []),
        f"image {image.get('reference') or '—'} ({image.get('platform') or '—'}, "
        f"{(image.get('id') or '—')[:19]}, {_bytes(image.get('size_bytes'))})",
    ]
    lines += [_case_line(name, case, checks) for name, case in _cases(metrics)]
    if failed:
        room = max(3, CONSOLE_LINES - len(lines) - 2)
        shown = failed if len(failed) <= room else failed[: room - 1]
        lines.append("failed checks:")
        lines += [
            f"  {c.get('group')} / {c.get('name')}: {_one_line(c.get('reason')) or 'no reason given'}"
            for c in shown
        ]
        if len(shown) < len(failed):
            lines.append(f"  … and {len(failed) - len(shown)} more (see report.html)")
    return "\n".join(lines)
