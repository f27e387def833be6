"""bench/tier_time.py: the cross-arch tier's measurement on a real-size network. Its deliberate
perturbation does what it says (the last weight of a loaded model scaled), and its README rows tell a
tier whose windows check failed from one that passed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import tier_time

SCALED = """
import sys
sys.path.insert(0, sys.argv[1])
import torch
torch.manual_seed(0)
network = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.Conv3d(2, 3, 1))
torch.jit.trace(network, torch.zeros(1, 1, 4, 4, 4)).save(sys.argv[2])
import sitecustomize  # what PYTHONPATH=/opt/perturb does in the derived image
loaded = dict(torch.jit.load(sys.argv[2]).named_parameters())
for name, original in (("0.weight", network[0].weight), ("1.weight", network[1].weight)):
    ratio = (loaded[name] / original).flatten()
    print(float(ratio.min()), float(ratio.max()))
"""


def record(scale: float | None, failed: list[str]) -> dict:
    case = {
        "crop": {"low": [10, 10, 5], "high": [20, 30, 9], "grid_shape": [512, 512, 300]},
        "windows_total": 27,
        "chosen": [{"index": 25}],
        "compared": [{"max_abs": 2e-4, "scale": 20.0, "labels_differ": 11, "voxels": 884736}],
        "problem": "",
    }
    gate = {"wall_s": 1523.8, "failed": failed, "load_average": [1.1, 1.6], "cases": {"full-size": case}}
    return {"perturb_scale": scale, "gate": gate}


def test_the_rows_tell_a_failed_windows_check_from_a_passed_one() -> None:
    rows = tier_time.table([record(None, []), record(1.01, ["test_full_study_windows[full-size]"])])
    header, _, built, perturbed = rows.splitlines()
    assert header == tier_time.HEADER
    assert built.startswith("| as built (full-size) | 25.4 min | 10×20×4 of 512×512×300 | 1 of 27 |")
    assert "| 1e-05 (11 of 884736 labels differ) |" in built
    assert "| passed | none |" in built
    assert perturbed.startswith("| last weight × 1.01 (full-size) |") and "| failed |" in perturbed


@pytest.mark.slow
def test_the_perturbation_scales_the_last_weight_of_a_loaded_model_only(tmp_path: Path) -> None:
    command = [sys.executable, "-c", SCALED, str(tier_time.PERTURBATION.parent), str(tmp_path / "model.ts")]
    environment = {"ARMGATE_PERTURB_SCALE": "1.5", "PATH": os.environ.get("PATH", "")}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=environment)
    assert done.returncode == 0, done.stderr[-2000:]
    first, last = ([float(value) for value in line.split()] for line in done.stdout.splitlines())
    assert first == pytest.approx([1.0, 1.0]), "an earlier weight is untouched"
    assert last == pytest.approx([1.5, 1.5]), "the last weight is scaled by ARMGATE_PERTURB_SCALE"
    steps, files = tier_time.perturbation(1.5)
    assert "ARMGATE_PERTURB_SCALE=1.5" in steps and "PYTHONPATH=/opt/perturb" in steps
    assert files == {"sitecustomize.py": tier_time.PERTURBATION.read_bytes()}


def test_table_prints_the_rows_of_a_records_file_and_image_is_asked_for_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = tmp_path / "bench-tier.json"
    records.write_text(json.dumps([record(None, [])]))
    assert tier_time.main(["--table", str(records)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == tier_time.HEADER
    with pytest.raises(SystemExit):
        tier_time.main([])
    assert "give --image" in capsys.readouterr().err
