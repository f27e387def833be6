"""The third app, fixtures/bundle: an SDK 0.5.1 app built on the SDK's MonaiBundleInferenceOperator, with a
MONAI Bundle model, one DICOM SEG named by its SOPInstanceUID as its only output, and a requirement of its
own (connected-components-3d) that no profile carries.

On the host (no Docker): twenty runs two at a time from one checkout, each in its own working folder as the
gate runs them, write one SEG each (a new UID every run) that, placed on the DICOM grid, equals the case's
golden and meets its ground-truth limits; no run touches another's work folder or the checkout. Bad input is
one line; `fixtures.generate --config` reproduces the tree. The tests that run the app (torch) are `slow`.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from fixtures import generate
from fixtures.phantom import FIXTURES_DIR, load_config
from validation import compare, contract, golden, run
from validation.profiles import ROOT

BUNDLE = FIXTURES_DIR / "bundle"
CONFIG = BUNDLE / "phantoms.toml"
APP = contract.load(BUNDLE / "app.toml")
CASES = sorted(load_config(CONFIG)["cases"])
TIMEOUT_S = 600
RUNS = 20
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
EXTRA_PACKAGE = "connected-components-3d"


def _case_dir(name: str) -> Path:
    return BUNDLE / "cases" / name


def _case_toml(name: str) -> dict:
    with (_case_dir(name) / "case.toml").open("rb") as handle:
        return tomllib.load(handle)


def _ground_truth_failures(mask: Path, name: str) -> list[str]:
    case = _case_toml(name)
    truth = _case_dir(name) / "reference" / "ground_truth.nii.gz"
    _, outcomes = compare.gate(mask, truth, case["tolerances"]["ground_truth"], labels=case["labels"])
    return [f"{o.name}: {o.reason}" for o in outcomes if not o.passed]


def test_contract_declares_a_seg_only_app_with_non_consecutive_labels() -> None:
    assert APP.outputs == {"seg": "*.dcm"} and APP.mask is None
    assert APP.labels == {1: "spleen", 6: "liver"}
    assert sorted(p.name for p in APP.default_cases.iterdir()) == CASES
    for name in CASES:
        assert _case_toml(name)["labels"] == [1, 6] and _case_toml(name)["label_names"] == ["spleen", "liver"]
    assert EXTRA_PACKAGE in APP.host_requirements[-1]


def test_its_own_requirement_is_in_no_profile_and_used_for_real() -> None:
    """connected-components-3d: named in the app's requirements.txt, locked by no profile, imported by the
    app's post-processing (the tests below show it removing the bowel loop the network calls spleen)."""
    requirements = (APP.source / "requirements.txt").read_text()
    assert re.search(rf"^{EXTRA_PACKAGE}\b", requirements, re.M)
    for lock_file in sorted((ROOT / "container" / "locks").glob("*.txt")):
        assert not re.search(rf"^{EXTRA_PACKAGE}==", lock_file.read_text(), re.M), lock_file
    assert "import cc3d" in (APP.source / "largest_component.py").read_text()


@dataclass(frozen=True)
class HostRun:
    case: str
    result: run.RunResult
    work_dir: Path


@pytest.fixture(scope="module")
def host_runs(tmp_path_factory: pytest.TempPathFactory) -> list[HostRun]:
    """RUNS host runs of the app from this checkout, two at a time, alternating cases, each in its own
    working folder (run.run_host, as the gate's host runs): SDK apps write `.monai_workdir` into the
    current folder unless MONAI_WORKDIR is set, and two runs sharing one folder collide."""
    root = tmp_path_factory.mktemp("bundle-host-runs")

    def one(index: int) -> HostRun:
        name = CASES[index % len(CASES)]
        output = root / f"run-{index:02d}" / "output"
        output.mkdir(parents=True)
        work = root / f"run-{index:02d}" / "work"
        result = run.run_host(APP, _case_dir(name) / "dicom", APP.default_model, output, TIMEOUT_S, work)
        return HostRun(name, result, work)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, range(RUNS)))


def _seg(run_: HostRun) -> Path:
    written = sorted(run_.result.output_dir.iterdir())
    assert len(written) == 1, [p.name for p in written]
    return written[0]


@pytest.mark.slow
def test_twenty_runs_two_at_a_time_all_succeed(host_runs: list[HostRun]) -> None:
    failed = [(r.case, r.result.failure(), r.result.log_tail(5)) for r in host_runs if not r.result.ok]
    assert not failed, failed
    assert len(host_runs) == RUNS


@pytest.mark.slow
def test_each_run_writes_only_a_seg_named_by_a_fresh_uid(host_runs: list[HostRun]) -> None:
    uids = []
    for host_run in host_runs:
        seg = _seg(host_run)
        dataset = pydicom.dcmread(seg, stop_before_pixels=True)
        assert seg.name == f"{dataset.SOPInstanceUID}.dcm" and dataset.SOPClassUID == SEG_STORAGE
        assert [item.SegmentLabel for item in dataset.SegmentSequence] == ["Spleen", "Liver"]
        uids.append(str(dataset.SOPInstanceUID))
    assert len(set(uids)) == RUNS, "a SEG's SOPInstanceUID was reused"


@pytest.mark.slow
def test_each_seg_on_the_grid_is_the_golden_and_meets_the_ground_truth(
    host_runs: list[HostRun], tmp_path: Path
) -> None:
    """Segments 1 (Spleen) and 2 (Liver) become the contract's 1 and 6 by name; every run is the golden
    voxel for voxel, and the golden meets the case's measured limits."""
    for index, host_run in enumerate(host_runs):
        dicom = _case_dir(host_run.case) / "dicom"
        out = tmp_path / f"placed-{index}.nii.gz"
        placed = golden.seg_to_label_map(_seg(host_run), dicom, APP.labels, out)
        assert generate.same_content(placed, _case_dir(host_run.case) / "reference" / "golden.nii.gz"), index
    for name in CASES:
        labels = np.asanyarray(nib.load(_case_dir(name) / "reference" / "golden.nii.gz").dataobj)
        assert sorted(int(v) for v in np.unique(labels)) == [0, 1, 6]
        assert _ground_truth_failures(_case_dir(name) / "reference" / "golden.nii.gz", name) == []


@pytest.mark.slow
def test_the_post_processing_removes_what_the_network_mislabels(
    host_runs: list[HostRun], tmp_path: Path
) -> None:
    """The bowel loop, as bright as the spleen, comes out of the Bundle as spleen; cc3d's largest component
    per organ removes it in every run, and a golden with the loop put back fails the ground truth."""
    for host_run in host_runs:
        removed = re.findall(r"label 1: kept \d+ voxels, removed (\d+) in 1 other", host_run.result.logs)
        assert removed and int(removed[0]) > 100, host_run.result.log_tail(20)
    name = CASES[0]
    golden_image = nib.load(_case_dir(name) / "reference" / "golden.nii.gz")
    labels = np.asanyarray(golden_image.dataobj).copy()
    loop = next(s for s in load_config(CONFIG)["structures"] if s["name"] == "bowel loop")
    ijk = np.indices(labels.shape).reshape(3, -1)
    ras = golden_image.affine @ np.vstack([ijk, np.ones(ijk.shape[1])])
    lps = (np.diag([-1.0, -1.0, 1.0]) @ ras[:3]).T
    inside = (((lps - loop["center"]) / loop["semi_axes"]) ** 2).sum(axis=1) < 1.0
    assert inside.sum() > 100
    labels.reshape(-1)[inside] = 1
    with_loop = tmp_path / "with-loop.nii.gz"
    nib.save(nib.Nifti1Image(labels, golden_image.affine), with_loop)
    failed = {failure.split("[")[0] for failure in _ground_truth_failures(with_loop, name)}
    assert {"dice", "volume"} & failed, failed


@pytest.mark.slow
def test_no_run_shared_a_work_folder_or_wrote_into_the_checkout(host_runs: list[HostRun]) -> None:
    for host_run in host_runs:
        assert (host_run.work_dir / "monai_workdir").is_dir(), host_run.work_dir
    for folder in (ROOT, APP.source, BUNDLE):
        assert not (folder / ".monai_workdir").exists(), folder


# ---- bad input: one line naming the file and the fix, exit 2, no SEG, input untouched --------------


def _run(input_dir: Path, model: Path, output_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(APP.source / APP.main), "-i", str(input_dir), "-m", str(model),
               "-o", str(output_dir)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def _digest(folder: Path) -> str:
    if not folder.is_dir():
        return ""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()


def _bad_input(kind: str, tmp_path: Path) -> tuple[Path, Path, Path, str]:
    """(input, model, output, the text the error line must hold) for one kind of bad input."""
    model, output = APP.default_model, tmp_path / "out"

    def copy() -> Path:
        return shutil.copytree(_case_dir(CASES[0]) / "dicom", tmp_path / "in")

    if kind == "missing input folder":
        return tmp_path / "absent", model, output, f"input folder {tmp_path / 'absent'} does not exist"
    if kind == "non-DICOM file":
        folder = copy()
        (folder / "notes.txt").write_text("not an image")
        return folder, model, output, f"input file {folder / 'notes.txt'} is not a DICOM file"
    if kind == "no CT axial series":
        folder = tmp_path / "in"
        folder.mkdir()
        for path in (FIXTURES_DIR / "cases" / "two-series" / "dicom").iterdir():
            if "LOCALIZER" in pydicom.dcmread(path, stop_before_pixels=True).ImageType:
                shutil.copy(path, folder)
        return folder, model, output, f"input folder {folder} has no CT series with ImageType AXIAL"
    if kind == "plain TorchScript model":
        plain = FIXTURES_DIR / "model" / "model.ts"
        return copy(), plain, output, f"model file {plain} is not a MONAI Bundle"
    if kind == "Bundle under another name":
        renamed = tmp_path / "spleen_liver.ts"
        renamed.write_bytes(model.read_bytes())
        return copy(), renamed, output, f"model file {renamed} holds its Bundle under model/, not spleen_"
    if kind == "output is a file":
        output.write_text("")
        return copy(), model, output, f"output {output} is a file, not a folder"
    raise AssertionError(kind)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["missing input folder", "non-DICOM file", "no CT axial series",
                                  "plain TorchScript model", "Bundle under another name", "output is a file"])
def test_bad_input_is_one_line(kind: str, tmp_path: Path) -> None:
    input_dir, model, output, expected = _bad_input(kind, tmp_path)
    before = _digest(input_dir)
    work = tmp_path / "work"
    work.mkdir()
    result = _run(input_dir, model, output, work)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr
    assert len(lines) == 1 and lines[0].startswith("bundle-seg: error: "), result.stderr
    assert expected in lines[0] and "; fix: " in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (output.is_dir() and any(output.iterdir())), "a failed run left a result"
    assert _digest(input_dir) == before


# ---- regeneration ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_fixtures_check_reproduces_the_bundle_tree(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m fixtures.generate --config fixtures/bundle/phantoms.toml --check`: the Bundle model, DICOM,
    ground truth, goldens (the app run again, its SEG placed on the grid) and case.toml all match."""
    assert generate.main(["--check", "--config", str(CONFIG)]) == 0, capsys.readouterr().err
    assert "all fixtures match" in capsys.readouterr().err
