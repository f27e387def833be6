"""Determinism and concurrency: the same case gives the same bytes, and gates running side by side agree.

A run in the arm64 container is repeatable byte for byte (one BLAS thread, deterministic kernels), and two
gate invocations on one engine at once (different --reports, same image) reach the verdicts and the metrics
of a serial run: they share nothing but the image.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from validation import cases, contract, profiles, run
from validation.build import BuildRecord

pytestmark = [pytest.mark.docker, pytest.mark.slow]
APP = contract.load()
CONCURRENT_CASES = ("standard", "oblique")
SELECTION = "test_container_run or test_mask"


def copy_cases(tmp_path: Path, folder: str, *names: str) -> Path:
    """A cases folder with copies of fixture cases (the ground truth stands in for a golden not made yet)."""
    target = tmp_path / folder
    for name in names:
        shutil.copytree(APP.default_cases / name, target / name)
        golden = target / name / "reference" / "golden.nii.gz"
        if not golden.is_file():
            shutil.copy(target / name / "reference" / "ground_truth.nii.gz", golden)
    return target


def own_leftovers(before: set[str], tmp_path: Path) -> list[str]:
    """Gate containers created since `before` that mount tmp_path (others may share this engine)."""
    mine = []
    for name in set(run.leftover_containers()) - before:
        shown = subprocess.run(
            ["docker", "inspect", "--format", "{{range .Mounts}}{{.Source}} {{end}}", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if shown.returncode == 0 and str(tmp_path) in shown.stdout:
            mine.append(name)
    return mine


def test_same_case_twice_gives_identical_masks(built_image: BuildRecord, tmp_path: Path) -> None:
    """Two runs of one case, side by side (the engine is shared, the runs are not): identical masks."""
    case = cases.load_case(copy_cases(tmp_path, "cases", "standard") / "standard")
    before = set(run.leftover_containers())

    def one_run(name: str) -> run.RunResult:
        output = run.writable_output_dir(tmp_path, name)
        return run.run_container(
            built_image.image_id, APP, case.dicom_dir, APP.default_model, output, case.timeout_s, case.memory
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one_run, ("first", "second")))
    assert own_leftovers(before, tmp_path) == []
    for result in results:
        assert result.ok, result.failure()
    first, second = (result.output_dir / "mask.nii.gz" for result in results)
    assert first.read_bytes() == second.read_bytes(), "two runs of the same case wrote different masks"


def gate_command(image: str, cases_dir: Path, reports: Path) -> list[str]:
    return [
        sys.executable, "-m", "validation", "acceptance", "--image", image, "--cases", str(cases_dir),
        "--reports", str(reports), "--no-host", "-k", SELECTION,
    ]  # fmt: skip


def verdicts(reports: Path) -> tuple[dict[str, bool], dict[str, Any]]:
    """Each check's pass/fail, and each case's comparison metrics without the (run-specific) paths."""
    metrics = json.loads((reports / "metrics.json").read_text())
    checks = {check["name"]: check["passed"] for check in metrics["checks"]}
    measured = {
        name: {
            kind: {
                key: value
                for key, value in comparison["result"].items()
                if key not in ("output", "reference")
            }
            for kind, comparison in case["comparisons"].items()
        }
        for name, case in metrics["cases"].items()
    }
    return checks, measured


def test_concurrent_gates_agree_with_a_serial_run(built_image: BuildRecord, tmp_path: Path) -> None:
    image = built_image.image_id
    before = set(run.leftover_containers())
    serial_reports = tmp_path / "serial"
    serial = subprocess.run(
        gate_command(image, copy_cases(tmp_path, "serial-cases", *CONCURRENT_CASES), serial_reports),
        cwd=profiles.ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert serial.returncode in (1, 3) and "Traceback" not in serial.stderr, serial.stderr[-3000:]
    serial_checks, serial_measured = verdicts(serial_reports)

    running = {
        name: subprocess.Popen(
            gate_command(image, copy_cases(tmp_path, f"cases-{name}", name), tmp_path / f"reports-{name}"),
            cwd=profiles.ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in CONCURRENT_CASES
    }
    outputs = {name: process.communicate(timeout=1200) for name, process in running.items()}
    assert own_leftovers(before, tmp_path) == [], "a gate left containers behind"

    concurrent_checks: dict[str, bool] = {}
    concurrent_measured: dict[str, Any] = {}
    for name, process in running.items():
        _, stderr = outputs[name]
        assert process.returncode in (1, 3) and "Traceback" not in stderr, stderr[-3000:]
        checks, measured = verdicts(tmp_path / f"reports-{name}")
        image_checks = {check: passed for check, passed in checks.items() if "[" not in check}
        assert not image_checks, f"only case checks were selected: {image_checks}"
        concurrent_checks |= checks
        concurrent_measured |= measured
        mask = f"cases/{name}/container/mask.nii.gz"
        assert (tmp_path / f"reports-{name}" / mask).read_bytes() == (serial_reports / mask).read_bytes()

    assert {check for check in serial_checks if check.startswith("test_container_run[")} == {
        f"test_container_run[{name}]" for name in CONCURRENT_CASES
    }
    runs = [serial_checks[f"test_container_run[{name}]"] for name in CONCURRENT_CASES]
    assert all(runs), serial.stdout[-3000:]
    assert concurrent_checks == serial_checks
    assert concurrent_measured == serial_measured
    dice = [label["dice"] for case in serial_measured.values() for kind in case.values() for label in
            kind["per_label"]]  # fmt: skip
    assert dice and all(0.0 <= value <= 1.0 for value in dice)
