"""A site's field of view under emulation: a 512 x 512 CT over 50 cm, gated whole in the arm64 image.

The fixture cases are 128 x 128 pixels; a clinical series has 512 x 512 over about 50 cm and the body
of an adult. The case is written at test time (about 30 MB of DICOM, not committed) with its golden
from a host run and its ground-truth limits measured, as `nox -s fixtures` writes the committed cases.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import stage_times
from tests.conftest import fixture_digest, run_gate
from validation.build import BuildRecord

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_a_clinical_field_of_view_passes_the_gate(built_image: BuildRecord, tmp_path: Path) -> None:
    """Every check passes on the 50 cm series (9 sliding windows after the body crop), each app stage
    is timed, and the run's peak memory stays within the case's limit."""
    case = stage_times.write_fov_case(tmp_path / "cases", rows=512, fov_mm=500.0, slices=64, slice_mm=2.0)
    before = fixture_digest()
    reports = tmp_path / "acceptance"
    result = run_gate(
        ["--image", built_image.image_id, "--cases", str(case.parent), "--reports", str(reports)]
    )
    assert fixture_digest() == before
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["verdict"] == "pass" and metrics["counts"]["failed"] == 0, metrics["counts"]
    run = metrics["cases"]["clinical-fov"]["run"]
    windows = [stage for stage in run["stage_seconds"] if stage.startswith("inference window")]
    assert windows and windows[-1].endswith("/9"), windows  # the adult body's 9 windows, not the fixtures' 4
    assert 0 < run["peak_memory_bytes"] <= 4 * 2**30  # the case's limit: [run] memory = "4g"
    assert "case clinical-fov: PASS" in result.stdout
