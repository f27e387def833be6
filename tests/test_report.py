"""The acceptance report: self-contained HTML, verdicts and reasons, overlays on the right CT slice."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from validation import report
from validation.overlays import CONTOUR_COLOURS, GRAY_LEVELS, compare_with_overlay, find_ct_slice
from validation.results import GateResults

COLUMNS, ROWS, SLICES = 24, 20, 6
SPACING = (1.5, 1.0, 2.0)  # column (i), row (j), slice (k) mm; non-square so a swap would show
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
NAMES = {1: "liver", 2: "spleen"}
TOLERANCES = {"dice_min": 0.99, "hd95_max_mm": 1.0, "nsd_min": 0.99, "volume_diff_max_pct": 1.0}


def _affine(row_cosine: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """The app's mask affine (app/volume_geometry.py): (column, row, slice) -> RAS mm."""
    column_cosine = np.array([0.0, 1.0, 0.0])
    lps = np.eye(4)
    lps[:3, 0] = row_cosine * SPACING[0]
    lps[:3, 1] = column_cosine * SPACING[1]
    lps[:3, 2] = np.cross(row_cosine, column_cosine) * SPACING[2]
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps


def _write_instance(folder: Path, pixels: np.ndarray, position: np.ndarray, row_cosine: np.ndarray) -> None:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.Modality = "CT"
    ds.ImageOrientationPatient = [*row_cosine.tolist(), 0.0, 1.0, 0.0]
    ds.ImagePositionPatient = position.tolist()
    ds.PixelSpacing = [SPACING[1], SPACING[0]]  # DICOM: row spacing, column spacing
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = (pixels + 1024).astype("<u2").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(folder / f"{ds.SOPInstanceUID[-12:]}.dcm", enforce_file_format=True)


def _write_series(folder: Path, hu: np.ndarray, affine: np.ndarray) -> None:
    """hu indexed (i, j, k) like the mask; each slice saved as a DICOM (rows, columns) pixel array."""
    folder.mkdir(parents=True, exist_ok=True)
    row_cosine = (LPS_TO_RAS @ affine)[:3, 0] / SPACING[0]
    for k in range(hu.shape[2]):
        position = (LPS_TO_RAS @ affine @ [0.0, 0.0, k, 1.0])[:3]
        _write_instance(folder, hu[:, :, k].T, position, row_cosine)
    # a localizer-like image of another size in the same folder must never be picked
    _write_instance(folder, np.zeros((8, 8)), np.zeros(3), row_cosine)


def _save_mask(path: Path, labels: np.ndarray, affine: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), path)
    return str(path)


def _labels(shift: int = 0) -> np.ndarray:
    labels = np.zeros((COLUMNS, ROWS, SLICES), np.uint8)
    labels[3 + shift : 11 + shift, 4:12, 1:5] = 1
    labels[15:20, 12:17, 2:4] = 2
    return labels


def _comparison(kind: str, output: str, reference: str, dicom_dir: str | Path) -> dict[str, Any]:
    """The comparison as metrics.json holds it, its overlay drawn (as the gate does) beside the output."""
    out_dir = Path(output).parent
    comparison = compare_with_overlay(
        kind, output, reference, TOLERANCES, dicom_dir=dicom_dir, out_dir=out_dir, names=NAMES
    )
    return comparison.to_dict()


def render_html(metrics: dict[str, Any]) -> str:
    return report.render_html(GateResults.from_dict(metrics))


def write_report(metrics: dict[str, Any], out_dir: Path) -> Path:
    return report.write_report(GateResults.from_dict(metrics), out_dir)


def console_summary(metrics: dict[str, Any]) -> str:
    return report.console_summary(GateResults.from_dict(metrics))


def _case(root: Path, name: str, shift: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A case whose output is the golden shifted by `shift` columns, and its checks."""
    affine = _affine(np.array([1.0, 0.0, 0.0]), np.array([-10.0, -8.0, 20.0]))
    hu = np.where(_labels() > 0, 60.0, -100.0)
    _write_series(root / name / "dicom", hu, affine)
    golden = _save_mask(root / name / "golden.nii.gz", _labels(), affine)
    output = _save_mask(root / name / "out" / "mask.nii.gz", _labels(shift), affine)
    dicom = root / name / "dicom"
    comparisons = {kind: _comparison(kind, output, golden, dicom) for kind in ("golden", "ground_truth")}
    checks = [
        {
            "name": f"{key}:{o['name']}",
            "group": name,
            "passed": o["passed"],
            "skipped": False,
            "reason": o["reason"],
        }
        for key, comparison in comparisons.items()
        for o in comparison["outcomes"]
    ]
    run = {
        "where": "container",
        "exit_code": 0,
        "seconds": 14.2,
        "peak_memory_bytes": 1_500_000_000,
        "timed_out": False,
        "oom_killed": False,
        "command": ["docker", "run", "--rm", "--network", "none", "armgate/multiorgan-seg:bookworm"],
    }
    case = {
        "dicom_dir": str(root / name / "dicom"),
        "output_mask": output,
        "run": run,
        "host_run": None,
        "comparisons": comparisons,
        "seg": {
            "outcomes": [{"name": "seg", "passed": True, "value": 2, "limit": None, "reason": "2 segments"}]
        },
    }
    return case, checks


def _metrics(cases: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]) -> dict[str, Any]:
    checks = [
        {"name": "test_architecture", "group": "image", "passed": True, "skipped": False, "reason": "aarch64"}
    ]
    for _, case_checks in cases.values():
        checks += case_checks
    return {
        "verdict": "pass" if all(c["passed"] or c["skipped"] for c in checks) else "fail",
        "started": "2026-11-24T22:30:00+00:00",
        "seconds": 123.4,
        "image": {
            "reference": "armgate/multiorgan-seg:bookworm",
            "id": "sha256:" + "0" * 64,
            "profile": "bookworm",
            "platform": "linux/arm64",
            "size_bytes": 1_090_000_000,
            "labels": {"org.opencontainers.image.revision": "c9484ae"},
            "pins": [{"name": "torch", "expected": "==2.10.0", "found": "2.10.0", "passed": True}],
        },
        "checks": checks,
        "cases": {name: case for name, (case, _) in cases.items()},
    }


def _failed_run_case(root: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    case = {
        "dicom_dir": str(root / "missing"),
        "output_mask": None,
        "run": {
            "where": "container",
            "exit_code": 137,
            "seconds": None,
            "peak_memory_bytes": None,
            "timed_out": False,
            "oom_killed": True,
            "command": None,
        },
        "host_run": None,
        "comparisons": None,
        "seg": None,
    }
    check = {
        "name": "run",
        "group": "broken",
        "passed": False,
        "skipped": False,
        "reason": "container run was killed by its memory limit",
    }
    return case, [check]


def _images(html: str) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(base64.b64decode(data)))
        for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    ]


def passing_metrics(root: Path) -> dict[str, Any]:
    """A gate's metrics.json with one passing case (the report, console and browser tests share it)."""
    return _metrics({"standard": _case(root, "standard", 0)})


def failing_metrics(root: Path) -> dict[str, Any]:
    """One passing case, one whose mask is shifted by two voxels, one whose container run failed."""
    return _metrics(
        {
            "standard": _case(root, "standard", 0),
            "shifted": _case(root, "shifted", 2),
            "broken": _failed_run_case(root),
        }
    )


def test_passing_report_is_written_and_self_contained(passing: dict[str, Any], tmp_path: Path) -> None:
    path = write_report(passing, tmp_path / "report")
    html = path.read_text()
    assert path == tmp_path / "report" / "report.html"
    assert '<header class="banner pass">' in html and "<h1>PASS</h1>" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html
    assert "armgate/multiorgan-seg:bookworm" in html and "c9484ae" in html and "1.09 GB" in html
    assert "docker run --rm --network none" in html
    assert len(html) < 2_000_000


def test_failing_report_shows_fail_reasons_and_marks_cells(failing: dict[str, Any]) -> None:
    html = render_html(failing)
    assert '<header class="banner fail">' in html and "<h1>FAIL</h1>" in html
    assert "container run was killed by its memory limit" in html
    reason = r"dice\[liver\]</code>:\s*<span class=\"reason\">dice 0\.\d+ below the minimum 0\.99"
    assert re.search(reason, html)
    assert re.search(r'<td class="num fail">0\.\d{4}</td>', html)  # the shifted liver's Dice cell
    assert '<td class="num pass">1.0000</td>' in html  # the spleen's, unchanged
    assert "killed: out of memory" in html and "No overlay: the run wrote no mask." in html


def test_run_failure_line_is_shown(failing: dict[str, Any]) -> None:
    """run.py's failure line (exit code and the last log line) beats the generic status."""
    failing["cases"]["broken"]["run"]["failure"] = (
        "container run exited with code 1: AppInputError: no CT\nmore"
    )
    assert (
        '<td class="fail">container run exited with code 1: AppInputError: no CT\nmore</td>'
        in render_html(failing)
    )
    assert "case broken: FAIL; container run exited with code 1: AppInputError: no CT in" in (
        console_summary(failing)
    )


def test_one_overlay_per_case_with_a_mask(failing: dict[str, Any]) -> None:
    html = render_html(failing)
    assert html.count('<figure class="overlay">') == 2  # standard and shifted; broken has no mask
    images = _images(html)
    assert len(images) == 4  # golden and ground truth panels per case
    assert "overlay not drawn" not in html
    for image in images:
        assert image.mode == "P" and max(image.size) == 360


def test_overlay_shows_reference_and_output_contours_where_they_differ(failing: dict[str, Any]) -> None:
    shifted = _images(render_html(failing))[2]
    counts = np.bincount(np.asarray(shifted).ravel(), minlength=GRAY_LEVELS + len(CONTOUR_COLOURS))
    reference_only, output_only, both = counts[GRAY_LEVELS : GRAY_LEVELS + 3]
    assert reference_only > 0 and output_only > 0 and both > 0


@pytest.mark.parametrize("row_x", [1.0, -1.0], ids=["head-first", "feet-first"])
def test_ct_slice_is_the_one_under_the_mask(tmp_path: Path, row_x: float) -> None:
    """Slice k of the mask, found through its affine; CT pixel (row r, column c) is mask voxel (c, r, k)."""
    affine = _affine(np.array([row_x, 0.0, 0.0]), np.array([5.0, -3.0, 40.0]))
    hu = np.zeros((COLUMNS, ROWS, SLICES))
    hu += np.arange(SLICES) * 100.0  # slice k holds 100 k HU ...
    hu[2, 7, :] += 7.0  # ... plus a marker at column 2, row 7
    _write_series(tmp_path / "dicom", hu, affine)
    for k in range(SLICES):
        ct = find_ct_slice(tmp_path / "dicom", affine, (COLUMNS, ROWS, SLICES), k)
        assert ct.hu.shape == (ROWS, COLUMNS) and ct.spacing_mm == (SPACING[1], SPACING[0])
        assert ct.hu[7, 2] == 100.0 * k + 7.0 and ct.hu[0, 0] == 100.0 * k
        assert ct.flip_columns == (row_x < 0) and not ct.flip_rows


def test_null_fields_are_tolerated(tmp_path: Path) -> None:
    metrics: dict[str, Any] = {
        "verdict": "fail",
        "started": None,
        "seconds": None,
        "image": None,
        "checks": None,
        "cases": {"empty": None, "broken": _failed_run_case(tmp_path)[0]},
    }
    html = write_report(metrics, tmp_path).read_text()
    assert "<h1>FAIL</h1>" in html
    assert "FAIL" in console_summary(metrics)


def test_a_reference_on_another_grid_is_noted(failing: dict[str, Any], tmp_path: Path) -> None:
    golden = failing["cases"]["shifted"]["comparisons"]["golden"]
    image = nib.load(golden["reference"])
    moved = image.affine.copy()
    moved[:3, 3] += 5.0
    golden["reference"] = _save_mask(tmp_path / "moved.nii.gz", np.asarray(image.dataobj), moved)
    shifted = failing["cases"]["shifted"]
    golden.update(_comparison("golden", shifted["output_mask"], golden["reference"], shifted["dicom_dir"]))
    html = render_html(failing)
    assert "(affines differ: contour placed by voxel index)" in html
    assert len(_images(html)) == 4


def test_a_broken_case_input_becomes_a_note(failing: dict[str, Any]) -> None:
    standard = failing["cases"]["standard"]
    golden = standard["comparisons"]["golden"]
    golden.update(_comparison("golden", standard["output_mask"], golden["reference"], "/nonexistent"))
    html = render_html(failing)
    assert "overlay not drawn: ValueError: no CT image in /nonexistent" in html


def test_text_is_escaped(passing: dict[str, Any]) -> None:
    passing["checks"].append(
        {
            "name": "x",
            "group": "image",
            "passed": False,
            "skipped": False,
            "reason": "<script>alert(1)</script>",
        }
    )
    passing["verdict"] = "fail"
    html = render_html(passing)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_console_summary(failing: dict[str, Any], passing: dict[str, Any]) -> None:
    summary = console_summary(failing)
    lines = summary.splitlines()
    assert lines[0].startswith("acceptance FAIL")
    assert any(line.startswith("case shifted: FAIL") and "golden min Dice" in line for line in lines)
    assert "broken / run: container run was killed by its memory limit" in summary
    assert re.search(r"shifted / golden:dice\[liver\]: dice 0\.\d+ below the minimum 0\.99", summary)
    assert len(lines) <= 25
    assert console_summary(passing).startswith("acceptance PASS") and "failed checks" not in console_summary(
        passing
    )


def test_console_summary_stays_short(failing: dict[str, Any]) -> None:
    failing["checks"] += [
        {"name": f"c{n}", "group": "image", "passed": False, "skipped": False, "reason": "r"}
        for n in range(60)
    ]
    lines = console_summary(failing).splitlines()
    assert len(lines) <= 25 and lines[-1].startswith("  … and ") and "more" in lines[-1]
