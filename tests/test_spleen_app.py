"""The second app, fixtures/spleen: a spleen-only MONAI Deploy app with its own contract, model and cases.

On the host (no Docker): the app reproduces its goldens from a copy of its own folder, as the image runs
it; its masks meet the cases' measured ground-truth limits and a one-slice shift does not; it writes only
the mask its contract names; bad input is one line; `fixtures.generate --config` reproduces the tree.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from fixtures import generate, limits
from fixtures.phantom import FIXTURES_DIR, load_config
from validation import compare

SPLEEN = FIXTURES_DIR / "spleen"
CONFIG = SPLEEN / "phantoms.toml"
CONTRACT_FILE = SPLEEN / "app.toml"
CASES = sorted(load_config(CONFIG)["cases"])
TIMEOUT_S = 600


def _contract() -> dict:
    with CONTRACT_FILE.open("rb") as handle:
        return tomllib.load(handle)


def _case_dir(name: str) -> Path:
    return SPLEEN / "cases" / name


def _case_toml(name: str) -> dict:
    with (_case_dir(name) / "case.toml").open("rb") as handle:
        return tomllib.load(handle)


def _ground_truth_failures(mask: Path, name: str) -> list[str]:
    """The failed ground-truth checks of a mask under the case's own limits, by the gate's code."""
    case = _case_toml(name)
    truth = _case_dir(name) / "reference" / "ground_truth.nii.gz"
    _, outcomes = compare.gate(mask, truth, case["tolerances"]["ground_truth"], labels=case["labels"])
    return [f"{o.name}: {o.reason}" for o in outcomes if not o.passed]


def _run(input_dir: Path, model: Path, output_dir: Path, app_dir: Path = SPLEEN / "app",
         ) -> subprocess.CompletedProcess[str]:
    """`python3 ./__main__.py -i -m -o` in the app's folder, as the image runs it."""
    command = [sys.executable, "./__main__.py", "-i", str(input_dir), "-m", str(model), "-o", str(output_dir)]
    return subprocess.run(command, cwd=app_dir, capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=False)


def test_contract_describes_the_spleen_app() -> None:
    """The contract's facts are the app's and its fixtures': label set, mask name, default model and cases."""
    contract = _contract()
    assert contract["labels"] == {"names": {"1": "spleen"}}
    assert set(contract["outputs"]) == {"mask"} and contract["outputs"]["mask"] == "spleen_mask.nii.gz"
    assert (SPLEEN / contract["app"]["source"] / contract["app"]["main"]).is_file()
    assert (SPLEEN / contract["defaults"]["model"]).is_file()
    assert sorted(p.name for p in (SPLEEN / contract["defaults"]["cases"]).iterdir()) == CASES
    for name in CASES:
        case = _case_toml(name)
        assert case["labels"] == [1] and case["label_names"] == ["spleen"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_app_reproduces_its_golden_and_writes_only_its_mask(name: str, tmp_path: Path) -> None:
    """From a copy of its folder alone (so it needs nothing of app/ or the repo): only spleen_mask.nii.gz
    (no seg.dcm, no mask.nii.gz), equal to the golden, within the case's ground-truth limits."""
    app_dir = shutil.copytree(SPLEEN / "app", tmp_path / "spleen-seg",
                              ignore=shutil.ignore_patterns("__pycache__"))
    output = tmp_path / "out"
    result = _run(_case_dir(name) / "dicom", SPLEEN / "model" / "model.ts", output, app_dir)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert sorted(p.name for p in output.iterdir()) == [_contract()["outputs"]["mask"]]
    mask = output / "spleen_mask.nii.gz"
    assert generate.same_content(mask, _case_dir(name) / "reference" / "golden.nii.gz"), "golden is stale"
    assert _ground_truth_failures(mask, name) == []


@pytest.mark.parametrize("name", CASES)
def test_ground_truth_limits_are_measured_and_met(name: str) -> None:
    """case.toml's limits are the golden's measurement plus phantoms.toml's margins; Dice is high."""
    tolerances = _case_toml(name)["tolerances"]["ground_truth"]
    golden = _case_dir(name) / "reference" / "golden.nii.gz"
    truth = _case_dir(name) / "reference" / "ground_truth.nii.gz"
    measured = limits.measure(golden, truth, [1], tolerances["nsd_tolerance_mm"])
    assert {key: tolerances[key] for key in limits.LIMIT_RULES} == limits.derive(
        measured, load_config(CONFIG)["ground_truth_margins"])
    assert measured["dice_min"] >= 0.95 and measured["hd95_max_mm"] <= 1.5
    assert _ground_truth_failures(golden, name) == []


@pytest.mark.parametrize("direction", [1, -1], ids=["up", "down"])
@pytest.mark.parametrize("name", CASES)
def test_a_one_slice_shift_fails_dice_hd95_and_nsd(name: str, direction: int, tmp_path: Path) -> None:
    golden = nib.load(_case_dir(name) / "reference" / "golden.nii.gz")
    slice_axis = int(np.argmax(golden.header.get_zooms()[:3]))
    shifted = np.roll(np.asanyarray(golden.dataobj), direction, axis=slice_axis)
    moved = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(shifted, golden.affine, golden.header), moved)
    failed = {failure.split("[")[0] for failure in _ground_truth_failures(moved, name)}
    assert {"dice", "hd95", "nsd"} <= failed, failed


# ---- bad input: one line naming the file and the fix, exit 2, no mask, input untouched --------------


def _copy_case(tmp_path: Path) -> Path:
    return shutil.copytree(_case_dir(CASES[-1]) / "dicom", tmp_path / "in")


def _digest(folder: Path) -> str:
    if not folder.is_dir():
        return ""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()


def _middle_slice(folder: Path) -> Path:
    datasets = [(p, pydicom.dcmread(p, stop_before_pixels=True)) for p in sorted(folder.iterdir())]
    orientation = [float(v) for v in datasets[0][1].ImageOrientationPatient]
    normal = np.cross(orientation[:3], orientation[3:])
    ordered = sorted(datasets, key=lambda item: float(normal @ [float(v) for v in
                                                              item[1].ImagePositionPatient]))
    return ordered[len(ordered) // 2][0]


def _bad_input(kind: str, tmp_path: Path) -> tuple[Path, Path, Path, str]:
    """(input, model, output, the text the error line must hold) for one kind of bad input."""
    model, output = SPLEEN / "model" / "model.ts", tmp_path / "out"
    if kind == "missing input folder":
        return tmp_path / "absent", model, output, f"input folder {tmp_path / 'absent'} does not exist"
    if kind == "non-DICOM file":
        folder = _copy_case(tmp_path)
        (folder / "notes.txt").write_text("not an image")
        return folder, model, output, f"input file {folder / 'notes.txt'} is not a DICOM file"
    if kind == "truncated DICOM":
        folder = _copy_case(tmp_path)
        victim = sorted(folder.iterdir())[3]
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size - 4000])
        return folder, model, output, f"input file {victim} is a truncated DICOM image"
    if kind == "missing slice":
        folder = _copy_case(tmp_path)
        _middle_slice(folder).unlink()
        return folder, model, output, "has uneven slice spacing"
    if kind == "no CT axial series":
        folder = tmp_path / "in"
        folder.mkdir()
        for path in (FIXTURES_DIR / "cases" / "two-series" / "dicom").iterdir():
            if "LOCALIZER" in pydicom.dcmread(path, stop_before_pixels=True).ImageType:
                shutil.copy(path, folder)
        return folder, model, output, f"input folder {folder} has no CT series with ImageType AXIAL"
    if kind == "missing model":
        absent = tmp_path / "none.ts"
        return _copy_case(tmp_path), absent, output, f"model file {absent} does not exist"
    if kind == "not TorchScript":
        fake = tmp_path / "model.ts"
        fake.write_text("weights")
        return _copy_case(tmp_path), fake, output, f"model file {fake} is not a loadable TorchScript model"
    if kind == "the multi-organ model":
        other = FIXTURES_DIR / "model" / "model.ts"
        return _copy_case(tmp_path), other, output, f"model file {other} returned 14 channels, expected 2"
    if kind == "output is a file":
        output.write_text("")
        return _copy_case(tmp_path), model, output, f"output {output} is a file, not a folder"
    raise AssertionError(kind)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["missing input folder", "non-DICOM file", "truncated DICOM",
                                  "missing slice", "no CT axial series", "missing model",
                                  "not TorchScript", "the multi-organ model", "output is a file"])
def test_bad_input_is_one_line(kind: str, tmp_path: Path) -> None:
    input_dir, model, output, expected = _bad_input(kind, tmp_path)
    before = _digest(input_dir)
    result = _run(input_dir, model, output)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr
    assert len(lines) == 1 and lines[0].startswith("spleen-seg: error: "), result.stderr
    assert expected in lines[0] and "; fix: " in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (output.is_dir() and any(output.iterdir())), "a failed run left a result"
    assert _digest(input_dir) == before


# ---- regeneration ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_fixtures_check_reproduces_the_spleen_tree(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m fixtures.generate --config fixtures/spleen/phantoms.toml --check`: model, DICOM, ground
    truth, goldens (by running the spleen app again) and case.toml all match what is committed."""
    assert generate.main(["--check", "--config", str(CONFIG)]) == 0, capsys.readouterr().err
    assert "all fixtures match" in capsys.readouterr().err


def test_fixtures_check_names_each_changed_spleen_file(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A changed DICOM pixel, case.toml limit and model in a copy of the tree are each named."""
    root = tmp_path / "spleen"
    shutil.copytree(SPLEEN / "model", root / "model")
    shutil.copytree(_case_dir(CASES[0]), root / "cases" / CASES[0])
    dicom = sorted((root / "cases" / CASES[0] / "dicom").iterdir())[5]
    data = bytearray(dicom.read_bytes())
    data[-100] ^= 0x01
    dicom.write_bytes(bytes(data))
    case_toml = root / "cases" / CASES[0] / "case.toml"
    case_toml.write_text(case_toml.read_text().replace("dice_min = ", "dice_min = 0.0 # ", 1))
    shutil.copyfile(FIXTURES_DIR / "model" / "model.ts", root / "model" / "model.ts")

    argv = ["--check", "--config", str(CONFIG), "--root", str(root), "--case", CASES[0], "--no-goldens"]
    assert generate.main(argv) == 1
    err = capsys.readouterr().err
    for changed in (f"cases/{CASES[0]}/dicom/{dicom.name}", f"cases/{CASES[0]}/case.toml", "model/model.ts"):
        assert f"{changed} (differs)" in err, err
    assert "3 file(s) differ" in err
