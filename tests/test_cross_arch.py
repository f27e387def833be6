"""`acceptance --cross-arch` (validation/cross_arch.py): the tier that finishes under emulation gates a
crop of each study in the image, the image's model on chosen windows of the full study, and the full
study on the host; its verdict names that scope, never PASS. An image whose numerics were changed on
purpose (one weight of every model it loads scaled by 1.01) fails it on the windows' logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import tier_time
from tests.conftest import run_gate
from validation import contract, engine, gate
from validation.build import BuildRecord
from validation.errors import GateError

APP = contract.load()

# The image side's numerics changed on purpose (bench/perturbed_numerics/): every model the image's Python
# loads has its last weight scaled by 1.01 (the host's model file is untouched). The fixture model's one
# weight (its smoothing kernel) moves its logits by 5e-4 of their largest then, 25 × logit_rtol.
PERTURBED, PERTURBATION = tier_time.perturbation(1.01)


def test_the_tier_asks_for_the_host_and_leaves_the_crops_reference_checks_out() -> None:
    for other in ("--no-host",):
        with pytest.raises(GateError, match="--cross-arch runs each full study on the host"):
            gate.parse_args(["--cross-arch", other, "--image", "x"])
    config, scope, pytest_args = gate.parse_args(["--cross-arch", "--image", "x", "-k", "standard"])
    assert config.cross_arch and "--cross-arch" in scope.options
    assert pytest_args[:2] == ["-k", "(standard) and not test_mask"]
    config, scope, pytest_args = gate.parse_args(["--image", "x"])
    assert not config.cross_arch and pytest_args[:1] != ["-k"]


def _one_case(tmp_path: Path) -> Path:
    cases_dir = tmp_path / "cases"
    shutil.copytree(APP.default_cases / "standard", cases_dir / "standard")
    return cases_dir


@pytest.mark.docker
@pytest.mark.slow
def test_a_perturbed_image_fails_the_tier_on_its_windows(built_image: BuildRecord, tmp_path: Path) -> None:
    context = tmp_path / "perturbed"
    with engine.derived_image(built_image.image, "linux/arm64", PERTURBED, context, PERTURBATION) as tag:
        reports = tmp_path / "acceptance"
        result = run_gate(["--cross-arch", "--image", tag, "--cases", str(_one_case(tmp_path)),
                           "--reports", str(reports), "-k", "not test_image"])  # fmt: skip
        assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
        checks = {c["name"]: c for c in json.loads((reports / "metrics.json").read_text())["checks"]}
        windows = checks["test_full_study_windows[standard]"]
        assert windows["status"] == "failed" and "past" in windows["reason"], windows
        for name in ("test_full_study_host_run[standard]", "test_full_study_mask[standard-golden]",
                     "test_container_run[standard]", "test_host_run[standard]"):  # fmt: skip
            assert checks[name]["status"] == "passed", checks[name]
        assert not [name for name in checks if name.startswith("test_mask[")]  # left out on crops
        assert "cross-arch tier, PARTIAL by design: in the arm64 image" in result.stdout
        assert "cross-arch: standard: crop columns" in result.stdout
        record = json.loads((reports / "cross-arch.json").read_text())["cases"]["standard"]
        assert record["chosen"] and record["compared"][0]["max_abs"] > 0
