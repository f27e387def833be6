"""The third app (fixtures/bundle) gated end to end through its contract, as a team ships it: its own
requirements.txt (connected-components-3d, in no profile) installed from its lock, a MONAI Bundle model read
by the SDK's MonaiBundleInferenceOperator in the image, and one DICOM SEG named by its UID as its only
output, placed on the DICOM grid and compared with the goldens by the contract's label names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import BUNDLE_CONTRACT, run_gate
from validation import engine
from validation.build import BuildRecord

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_the_bundle_app_builds_and_passes_the_gate_through_its_contract(
    bundle_image: BuildRecord, tmp_path: Path
) -> None:
    assert bundle_image.app_name == "bundle-seg" and bundle_image.image.startswith("armgate/bundle-seg:")
    facts = engine.require_image(bundle_image.image_id, "the bundle image")
    assert facts.raw["Config"]["WorkingDir"] == "/opt/bundle-seg"
    reports = tmp_path / "acceptance"
    app = ["--app", str(BUNDLE_CONTRACT)]
    result = run_gate(["--image", bundle_image.image_id, *app, "--reports", str(reports)])
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # the model check ran the image's own SDK bundle operator on the Bundle before any case
    assert "the image's SDK bundle operator reads its configs" in result.stdout, result.stdout[-3000:]
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["verdict"] == "pass", metrics["verdict"]
    assert metrics["app"]["outputs"] == {"seg": "*.dcm"}, metrics["app"]
    assert set(metrics["cases"]) == {"bundle-oblique", "bundle-standard"}
    failed = [check["name"] for check in metrics["checks"] if check["status"] != "passed"]
    assert not failed, failed
    for case in metrics["cases"]:
        written = [p.name for p in (reports / "cases" / case / "container").iterdir() if p.suffix == ".dcm"]
        assert len(written) == 1 and written[0].startswith("1.2.826.0.1.3680043.10.511.3."), written
