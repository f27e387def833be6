"""The report is drawn from typed results alone: overlays are drawn while the gate has the masks, then the
masks are dropped; report.html never reads a mask, and merge rebuilds the same results from metrics.json."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from test_report import NAMES, TOLERANCES, _case, _images, _metrics

from validation import compare, report
from validation.errors import GateError
from validation.overlays import compare_with_overlay
from validation.results import CaseResult, GateResults


def _refuse(*args: Any, **kwargs: Any) -> None:
    raise AssertionError(f"the report read a mask: nibabel.load{args}")


@pytest.fixture
def masks_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """After the comparisons: every NIfTI file under tmp_path deleted and nibabel.load refusing to run."""

    def remove() -> list[Path]:
        masks = sorted(tmp_path.rglob("*.nii.gz"))
        for mask in masks:
            mask.unlink()
        monkeypatch.setattr(nib, "load", _refuse)
        monkeypatch.setattr(nib.loadsave, "load", _refuse)
        return masks

    yield remove  # type: ignore[misc]


def test_the_report_never_reads_a_mask(failing: dict[str, Any], masks_gone: Any, tmp_path: Path) -> None:
    gated = GateResults.from_dict(failing)  # the gate's results: each comparison with its picture
    before = [np.asarray(image).tobytes() for image in _images(report.render_html(gated))]
    assert len(masks_gone()) == 4  # the golden and the output of the two cases with a mask
    html = report.render_html(gated)
    assert [np.asarray(image).tobytes() for image in _images(html)] == before and len(before) == 4
    assert "overlay not drawn" not in html and "not readable" not in html
    summary = report.console_summary(gated)
    assert "case shifted: FAIL" in summary
    # merge reads a shard's metrics.json: the same pictures, from the PNG files the gate wrote
    merged = GateResults.from_dict(json.loads(json.dumps(failing)))
    assert [np.asarray(image).tobytes() for image in _images(report.render_html(merged))] == before
    path = report.write_report(merged, tmp_path / "merged")
    assert path.is_file() and "<h1>FAIL</h1>" in path.read_text()


def test_the_guard_catches_a_report_that_reads_masks(failing: dict[str, Any], masks_gone: Any) -> None:
    """What the check above would catch: drawing from the masks after the comparison fails under it."""
    shifted = failing["cases"]["shifted"]
    golden = shifted["comparisons"]["golden"]["reference"]
    masks_gone()
    with pytest.raises(AssertionError, match="the report read a mask"):
        nib.load(shifted["output_mask"])
    with pytest.raises(GateError, match=r"mask\.nii\.gz: no such file"):
        compare_with_overlay(
            "golden", shifted["output_mask"], golden, TOLERANCES, dicom_dir=shifted["dicom_dir"],
            out_dir=Path(shifted["output_mask"]).parent,
        )  # fmt: skip


def _arrays(value: Any, where: str = "") -> list[str]:
    """Where `value` holds a numpy array: dataclass fields, mappings and sequences, walked."""
    if isinstance(value, np.ndarray):
        return [where]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [
            found
            for item in dataclasses.fields(value)
            for found in _arrays(getattr(value, item.name), f"{where}.{item.name}".lstrip("."))
        ]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _arrays(item, f"{where}[{key}]")]
    if isinstance(value, list | tuple):
        return [found for index, item in enumerate(value) for found in _arrays(item, f"{where}[{index}]")]
    return []


def test_a_comparison_keeps_no_mask_arrays(failing: dict[str, Any]) -> None:
    """A gate over hundreds of cases keeps each comparison's figures and picture, never its masks."""
    shifted = failing["cases"]["shifted"]
    output, golden = shifted["output_mask"], shifted["comparisons"]["golden"]["reference"]
    comparison = compare_with_overlay(
        "golden", output, golden, TOLERANCES, dicom_dir=shifted["dicom_dir"], out_dir=Path(output).parent,
        names=NAMES,
    )  # fmt: skip
    assert comparison.overlay is not None and comparison.overlay.png
    assert len(comparison.overlay.png) < 20_000  # a small palette PNG, not a volume
    assert _arrays(CaseResult("shifted", comparisons={"golden": comparison})) == []
    # the walk finds arrays where there are some: a loaded mask is one
    assert _arrays(compare.load_mask(output)) == ["labels", "affine"]


def test_a_missing_overlay_file_becomes_a_note(failing: dict[str, Any]) -> None:
    """A shard folder copied without its pictures: the merged report says so and still renders."""
    golden = failing["cases"]["shifted"]["comparisons"]["golden"]
    Path(golden["overlay"]["png"]).unlink()
    html = report.render_html(GateResults.from_dict(failing))
    assert "overlay image not readable: " in html and "overlay-golden.png" in html
    assert len(_images(html)) == 3


def test_metrics_json_round_trips(failing: dict[str, Any]) -> None:
    """What merge reads back is what the gate wrote: each case's dict rebuilt from its typed result."""
    for name, case in failing["cases"].items():
        assert CaseResult.from_dict(name, case).to_dict() == {
            key: case[key] if key != "comparisons" else (case[key] or {}) for key in case
        }


def _shard(root: Path, index: int, name: str, shift: int) -> Path:
    """A shard's report folder as `acceptance --shard K/2` leaves it: metrics.json, junit.xml and cases/
    holding the case's outputs and overlay PNGs."""
    folder = root / f"shard-{index}"
    case, checks = _case(folder / "cases", name, shift)
    metrics = _metrics({name: (case, checks)})
    metrics["verdict"] = "partial" if all(c["passed"] for c in checks) else "fail"
    metrics["counts"] = {"failed": sum(1 for c in metrics["checks"] if not c["passed"])}
    metrics["selection"] = {"options": [f"--shard {index}/2"], "deselected": [], "shard": f"{index}/2"}
    metrics["shard"] = {
        "index": index, "count": 2, "cases": [name], "reports": str(folder),
        "case_set": {"names": ["shifted", "standard"], "sha256": "f" * 64},
    }  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "junit.xml").write_text("<testsuites><testsuite/></testsuites>")
    return folder


def test_merge_shows_the_shards_overlays_without_their_masks(
    tmp_path: Path, masks_gone: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m validation merge` draws the merged report from the shards' results and PNGs alone."""
    from validation import merge

    shards = [_shard(tmp_path, 1, "standard", 0), _shard(tmp_path, 2, "shifted", 2)]
    masks_gone()
    out = tmp_path / "merged"
    assert merge.main([*map(str, shards), "--reports", str(out)]) == 1  # shifted fails its Dice checks
    html = (out / "report.html").read_text()
    assert len(_images(html)) == 4 and "not readable" not in html and "overlay not drawn" not in html
    merged = json.loads((out / "metrics.json").read_text())
    png = merged["cases"]["shifted"]["comparisons"]["golden"]["overlay"]["png"]
    assert png == str(out / "cases" / "shifted" / "out" / "overlay-golden.png") and Path(png).is_file()
    assert "case shifted: FAIL" in capsys.readouterr().out
