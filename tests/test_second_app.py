"""Any MONAI Deploy app behind the gate: the spleen app (fixtures/spleen) is built and gated by the same
commands as this repository's app, through its own contract, and nothing app-specific in validation/."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_gate
from validation import contract, engine
from validation.build import BuildRecord

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def acceptance(image: str, reports: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_gate(["--image", image, "--reports", str(reports), *args])
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    return result


def test_the_second_app_builds_and_passes_the_gate_through_its_contract(
    spleen_image: BuildRecord, tmp_path: Path
) -> None:
    assert spleen_image.app_name == "spleen-seg" and spleen_image.image.startswith("armgate/spleen-seg:")
    facts = engine.require_image(spleen_image.image_id, "the spleen image")
    assert facts.raw["Config"]["WorkingDir"] == "/opt/spleen-seg"
    reports = tmp_path / "acceptance"
    result = acceptance(spleen_image.image_id, reports, "--app", spleen_image.app_contract)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["verdict"] == "pass" and metrics["app"]["outputs"] == {"mask": "spleen_mask.nii.gz"}
    names = {check["name"] for check in metrics["checks"]}
    assert set(metrics["cases"]) == {"spleen-oblique", "spleen-standard"}
    assert not [name for name in names if name.startswith("test_dicom_seg")]  # it writes no SEG
    assert {"test_outputs[spleen-standard]", "test_host_run[spleen-oblique]"} <= names


def test_the_second_apps_image_under_the_first_apps_contract_fails_naming_why(
    spleen_image: BuildRecord, tmp_path: Path
) -> None:
    first_app = contract.load()
    shutil.copytree(first_app.default_cases / "standard", tmp_path / "cases" / "standard")
    reports = tmp_path / "acceptance"
    result = acceptance(spleen_image.image_id, reports, "--no-host", "--cases", str(tmp_path / "cases"))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    metrics = json.loads((reports / "metrics.json").read_text())
    failed = {check["name"]: check["reason"] for check in metrics["checks"] if check["status"] == "failed"}
    assert "/opt/spleen-seg" in failed["test_entrypoint_and_working_directory"], failed
    assert "missing" in failed["test_app_files_match_the_source"], failed
    # the spleen app refuses the first app's 14-channel model, or (with a model it takes) writes no
    # mask.nii.gz: either way the case fails, named
    run_failed = "channels" in failed.get("test_container_run[standard]", "")
    assert run_failed or "mask.nii.gz" in failed.get("test_outputs[standard]", ""), failed


def test_a_case_of_another_app_is_refused_before_anything_runs(
    spleen_image: BuildRecord, tmp_path: Path
) -> None:
    """The first app's cases (six BTCV organs) under the spleen contract: one line, exit 2."""
    reports, cases = tmp_path / "acceptance", contract.load().default_cases
    app = ["--app", spleen_image.app_contract]
    result = acceptance(spleen_image.image_id, reports, *app, "--cases", str(cases))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "case.toml: field 'labels'" in lines[0] and "--app" in lines[0]
