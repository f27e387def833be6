"""The segmentation app (app/) run on the host in a subprocess, exactly as sites run it.

Uses the committed fixtures: fixtures/cases/<case>/dicom/ (+ reference/ground_truth.nii.gz) and
fixtures/model/model.ts; ARMGATE_FIXTURES_DIR points elsewhere (same layout). Missing fixtures skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from app import stages
from validation import stages as protocol  # the gate's parser of the app's stage lines

REPO = Path(__file__).resolve().parents[1]
APP_DIR = REPO / "app"
FIXTURES = Path(os.environ.get("ARMGATE_FIXTURES_DIR", REPO / "fixtures"))
MODEL = FIXTURES / "model" / "model.ts"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
RUN_TIMEOUT_S = 300
# Organ names in label order (mask value - 1); the SEG's segment labels are these, capitalized.
ORGANS = [label["name"] for label in json.loads((APP_DIR / "config" / "labels.json").read_text())["labels"]]


def case_dicom(case: str) -> Path:
    folder = FIXTURES / "cases" / case / "dicom"
    if not MODEL.is_file() or not folder.is_dir():
        pytest.skip(
            f"fixture {folder} or {MODEL} missing: generate the fixtures first (python -m fixtures.generate)"
        )
    return folder


@dataclass
class AppRun:
    returncode: int
    stdout: str
    stderr: str
    output: Path


def run_app(
    input_dir: Path,
    output_dir: Path,
    model: Path = MODEL,
    form: str = "module",
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> AppRun:
    """Runs the app in one of the three command forms sites use; cwd is only used by the app-folder form."""
    args = ["-i", str(input_dir), "-m", str(model), "-o", str(output_dir)]
    if form == "module":  # python -m app, from the repo root
        command, cwd = [sys.executable, "-m", "app", *args], REPO
    elif form == "path":  # python3 app/__main__.py, from the repo root
        command, cwd = [sys.executable, "app/__main__.py", *args], REPO
    else:  # python3 ./__main__.py, from the app folder (the image's entry point)
        command, cwd = [sys.executable, "./__main__.py", *args], cwd or APP_DIR
    run_env = {key: value for key, value in os.environ.items() if not key.startswith(("MONAI_", "ARMGATE_"))}
    run_env.update(env or {})
    done = subprocess.run(
        command, cwd=cwd, env=run_env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    return AppRun(done.returncode, done.stdout, done.stderr, output_dir)


def tree_snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Content hash and mode of every file under folder: proves the app never writes to its input."""
    return {
        str(path.relative_to(folder)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@dataclass
class Grid:
    """The CT axial series as the app must see it: (columns, rows, slices) and voxel -> RAS mm."""

    series_uid: str
    sop_uids: list[str]
    shape: tuple[int, int, int]
    affine: np.ndarray


def ct_axial_grid(folder: Path) -> Grid:
    """Computed from the DICOM headers alone, independently of the app's code."""
    datasets = [
        pydicom.dcmread(path, stop_before_pixels=True) for path in folder.rglob("*") if path.is_file()
    ]
    axial = [ds for ds in datasets if ds.Modality == "CT" and "AXIAL" in list(ds.ImageType)]
    assert len({ds.SeriesInstanceUID for ds in axial}) == 1, "a fixture case holds one CT axial series"
    orientation = np.array(axial[0].ImageOrientationPatient, dtype=float)
    row_cosine, column_cosine = orientation[:3], orientation[3:]
    normal = np.cross(row_cosine, column_cosine)
    axial.sort(key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float))))
    first, last = (np.array(ds.ImagePositionPatient, dtype=float) for ds in (axial[0], axial[-1]))
    row_spacing, column_spacing = (float(v) for v in axial[0].PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = row_cosine * column_spacing
    lps[:3, 1] = column_cosine * row_spacing
    lps[:3, 2] = (last - first) / (len(axial) - 1)
    lps[:3, 3] = first
    return Grid(
        series_uid=str(axial[0].SeriesInstanceUID),
        sop_uids=[str(ds.SOPInstanceUID) for ds in axial],
        shape=(int(axial[0].Columns), int(axial[0].Rows), len(axial)),
        affine=LPS_TO_RAS @ lps,
    )


def assert_succeeded(run: AppRun) -> None:
    assert run.returncode == 0, f"app failed:\n{run.stderr}\n{run.stdout[-3000:]}"
    assert run.stderr == "", "stderr is reserved for the one error line"
    assert (run.output / "mask.nii.gz").is_file()


def assert_one_line_failure(run: AppRun, *expected: str) -> None:
    assert run.returncode != 0
    lines = run.stderr.splitlines()
    assert len(lines) == 1, f"want exactly one stderr line, got:\n{run.stderr}"
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert not (run.output / "mask.nii.gz").exists() and not (run.output / "seg.dcm").exists()


def check_mask_on_input_grid(run: AppRun, grid: Grid) -> np.ndarray:
    image = nib.load(run.output / "mask.nii.gz")
    assert image.shape == grid.shape
    assert image.get_data_dtype() == np.uint8
    np.testing.assert_allclose(image.affine, grid.affine, atol=1e-3)
    mask = np.asarray(image.dataobj)
    assert set(np.unique(mask).tolist()) <= set(range(len(ORGANS) + 1))
    return mask


def check_seg(run: AppRun, grid: Grid, mask: np.ndarray) -> None:
    """seg.dcm references the input series and every instance, names the organs present, matches the mask."""
    seg = hd.seg.segread(run.output / "seg.dcm")
    referenced = seg.get_source_image_uids()
    assert {series for _, series, _ in referenced} == {grid.series_uid}
    assert {sop for _, _, sop in referenced} == set(grid.sop_uids)
    present = [int(v) for v in np.unique(mask) if v != 0]
    labels = [seg.get_segment_description(n).segment_label for n in seg.segment_numbers]
    assert labels == [ORGANS[v - 1].capitalize() for v in present]
    from_seg = seg.get_pixels_by_source_instance(grid.sop_uids, combine_segments=True, relabel=False)
    renumbered = np.zeros(len(ORGANS) + 1, dtype=np.uint8)
    renumbered[np.arange(1, len(present) + 1)] = present
    # SEG frames are (slice, row, column); the mask is (column, row, slice).
    np.testing.assert_array_equal(renumbered[from_seg].transpose(2, 1, 0), mask)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(a, b).sum() / total


@pytest.fixture(scope="module")
def standard_run(tmp_path_factory: pytest.TempPathFactory) -> AppRun:
    """The image's form: ./__main__.py from the app folder; no HOME, and a scratch cwd it must leave clean."""
    dicom = case_dicom("standard")
    before = tree_snapshot(dicom)
    root = tmp_path_factory.mktemp("standard")
    scratch_cwd = root / "cwd"
    scratch_cwd.mkdir()
    shutil.copytree(APP_DIR, scratch_cwd / "app", ignore=shutil.ignore_patterns("__pycache__"))
    env = {key: value for key, value in os.environ.items() if key != "HOME"}
    run = run_app(dicom, root / "out", form="app-folder", cwd=scratch_cwd / "app", env=env)
    assert tree_snapshot(dicom) == before
    assert not (scratch_cwd / "app" / ".monai_workdir").exists(), (
        "the SDK work folder must not land in the cwd"
    )
    return run


@pytest.mark.slow
def test_standard_case_writes_mask_on_input_grid_and_seg(standard_run: AppRun) -> None:
    assert_succeeded(standard_run)
    grid = ct_axial_grid(case_dicom("standard"))
    mask = check_mask_on_input_grid(standard_run, grid)
    assert mask.any(), "the fixture model finds organs in the standard phantom"
    check_seg(standard_run, grid, mask)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["standard", "oblique"])
def test_mask_matches_ground_truth(case: str, standard_run: AppRun, tmp_path: Path) -> None:
    """Every organ lands where the phantom has it: catches flips and shifts between the grids."""
    truth_file = FIXTURES / "cases" / case / "reference" / "ground_truth.nii.gz"
    dicom = case_dicom(case)
    if not truth_file.is_file():
        pytest.skip(f"{truth_file} missing")
    run = standard_run if case == "standard" else run_app(dicom, tmp_path / "out", form="path")
    assert_succeeded(run)
    mask = check_mask_on_input_grid(run, ct_axial_grid(dicom))
    truth = nib.load(truth_file)
    np.testing.assert_allclose(truth.affine, nib.load(run.output / "mask.nii.gz").affine, atol=1e-3)
    truth_labels = np.asarray(truth.dataobj)
    for value in (int(v) for v in np.unique(truth_labels) if v != 0):
        score = dice(mask == value, truth_labels == value)
        assert score > 0.7, f"{ORGANS[value - 1]}: Dice {score:.3f}"


@pytest.mark.slow
def test_two_series_study_selects_the_ct_axial_series(tmp_path: Path) -> None:
    dicom = case_dicom("two-series")
    run = run_app(dicom, tmp_path / "out", form="path")
    assert_succeeded(run)
    grid = ct_axial_grid(dicom)
    mask = check_mask_on_input_grid(run, grid)
    if mask.any():
        check_seg(run, grid, mask)


def _copy_as_sagittal_series(source: Path, target: Path) -> None:
    """A CT series whose ImageType still says AXIAL but whose slices are sagittal: it must not be picked."""
    target.mkdir(parents=True)
    series_uid = pydicom.uid.generate_uid()
    for index, path in enumerate(sorted(p for p in source.rglob("*") if p.is_file())):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
        ds.ImagePositionPatient = [float(index) * 2.0, 0.0, 0.0]
        ds.SeriesNumber = 99
        ds.save_as(target / f"sag{index:04d}.dcm")


@pytest.mark.slow
def test_non_axial_ct_series_is_not_selected(tmp_path: Path) -> None:
    dicom = case_dicom("standard")
    mixed = tmp_path / "mixed"
    shutil.copytree(dicom, mixed / "axial")
    _copy_as_sagittal_series(dicom, mixed / "sagittal")
    run = run_app(mixed, tmp_path / "out", form="module")
    assert_succeeded(run)
    grid = ct_axial_grid(mixed / "axial")
    check_seg(run, grid, check_mask_on_input_grid(run, grid))


def _without_times(log: str) -> list[tuple[str, bool]]:
    return [(name, seconds is None) for name, seconds in protocol.parse(log)]


@pytest.mark.slow
def test_each_stage_logs_its_start_and_wall_time(standard_run: AppRun) -> None:
    """One 'started' and one 'took' line per stage, in pipeline order; every window call counted."""
    assert_succeeded(standard_run)
    found = protocol.parse(standard_run.stdout)
    names = list(dict.fromkeys(name for name, _ in found))
    for name in names:
        lines = [seconds for stage, seconds in found if stage == name]
        assert len(lines) == 2 and lines[0] is None and lines[1] is not None and lines[1] >= 0, (name, lines)
    windows = [name for name in names if name.startswith("inference window ")]
    expected = [
        stages.IMPORTS,
        stages.INPUT_CHECKS,
        stages.APP_SET_UP,
        stages.DICOM_LOAD,
        stages.SERIES_SELECTION,
        stages.SERIES_TO_VOLUME,
        stages.PRE_TRANSFORMS,
        *windows,
        stages.POST_TRANSFORMS,
        stages.WRITE_OUTPUT.format(output="mask.nii.gz"),
        stages.WRITE_OUTPUT.format(output="seg.dcm"),
    ]
    assert names == expected
    size = re.search(r"Model input (\d+)x(\d+)x(\d+) voxels", standard_run.stdout)
    assert size, "the app logs the size its windows slide over"
    total = stages.window_count([int(n) for n in size.groups()], (96, 96, 96), 0.25)
    covered = []
    for name in windows:  # "inference window k/n" or "k-l/n": consecutive, ending at n
        span, of = name.removeprefix("inference window ").split("/")
        first, _, last = span.partition("-")
        covered += list(range(int(first), int(last or first) + 1))
        assert int(of) == total, name
    assert covered == list(range(1, total + 1)), windows
    assert protocol.stage_reached(standard_run.stdout) == "after stage 'write seg.dcm'"


@pytest.mark.slow
def test_a_log_cut_during_a_window_names_that_window(standard_run: AppRun) -> None:
    """The parser the gate uses on a timed-out run's log, on this app's real log cut short."""
    lines = standard_run.stdout.splitlines()
    started = next(i for i, line in enumerate(lines) if "stage 'inference window 1" in line)
    window = protocol.parse(lines[started])[0][0]
    assert protocol.stage_reached("\n".join(lines[: started + 1])) == f"in stage '{window}'"
    assert protocol.stage_reached("\n".join(lines[:started])) == f"after stage '{stages.PRE_TRANSFORMS}'"
    before_any = [line for line in lines if "stage '" not in line][:3]
    assert protocol.stage_reached("\n".join(before_any)) == "before any stage line in its log"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("size", "overlap"),
    [
        ((112, 88, 64), 0.25),
        ((234, 174, 20), 0.25),
        ((96, 97, 95), 0.25),
        ((333, 333, 200), 0.5),
        ((50, 50, 50), 0.0),
        ((241, 168, 97), 0.25),  # one voxel past 3 steps of 72: a fourth window; exactly 1 step: two
        ((145, 96, 40), 0.5),
    ],
)
def test_window_count_is_monai_sliding_window_count(size: tuple[int, int, int], overlap: float) -> None:
    """What the app logs as n, and what the gate sizes timeouts with, is what MONAI runs."""
    import torch
    from monai.inferers import sliding_window_inference

    calls = []

    def count(batch: torch.Tensor) -> torch.Tensor:
        calls.append(int(batch.shape[0]))
        return batch

    sliding_window_inference(torch.zeros(1, 1, *size), (96, 96, 96), 64, count, overlap=overlap)
    assert stages.window_count(size, (96, 96, 96), overlap) == sum(calls)
    assert protocol.window_count(size, (96, 96, 96), overlap) == sum(calls)


@pytest.mark.slow
def test_same_input_gives_byte_identical_mask(standard_run: AppRun, tmp_path: Path) -> None:
    """Also the locked-down set-up: SDK work files under MONAI_WORKDIR (a tmpfs in the image), none left."""
    assert_succeeded(standard_run)
    workdir = tmp_path / "monai_workdir"
    second = run_app(
        case_dicom("standard"), tmp_path / "out", form="module", env={"MONAI_WORKDIR": str(workdir)}
    )
    assert_succeeded(second)
    assert workdir.is_dir() and not any(workdir.iterdir()), "the run must clean up its work folder"
    assert _without_times(second.stdout) == _without_times(standard_run.stdout), "stage lines differ"
    first_bytes = (standard_run.output / "mask.nii.gz").read_bytes()
    assert first_bytes == (second.output / "mask.nii.gz").read_bytes()
    assert first_bytes[4:8] == b"\0\0\0\0", "gzip header mtime must be 0"


@pytest.mark.slow
def test_empty_mask_writes_nifti_and_skips_seg(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class AllBackground(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.ones_like(x), torch.zeros_like(x).repeat(1, len(ORGANS), 1, 1, 1)], dim=1)

    model = tmp_path / "background.ts"
    torch.jit.save(torch.jit.trace(AllBackground(), torch.zeros(1, 1, 8, 8, 8)), str(model))
    dicom = case_dicom("standard")
    run = run_app(dicom, tmp_path / "out", model=model)
    assert_succeeded(run)
    assert not check_mask_on_input_grid(run, ct_axial_grid(dicom)).any()
    assert not (run.output / "seg.dcm").exists()
    assert "mask is empty" in run.stdout


# ---- Bad inputs: non-zero exit, one stderr line naming the problem, no traceback, input untouched ----


def _corrupt_copy(source: Path, target: Path, how: str) -> Path:
    shutil.copytree(source, target)
    victim = sorted(p for p in target.rglob("*") if p.is_file())[3]
    if how == "garbage":
        victim = victim.with_name("zz-garbage.dcm")
        victim.write_bytes(os.urandom(4096))
    else:  # truncated
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return victim


def _localizer_only(source: Path, target: Path) -> None:
    target.mkdir()
    for path in source.rglob("*"):
        if path.is_file() and "LOCALIZER" in list(pydicom.dcmread(path, stop_before_pixels=True).ImageType):
            shutil.copy(path, target / path.name)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_corrupt_file_among_good_ones_fails_naming_it(how: str, tmp_path: Path) -> None:
    """Policy: fail rather than skip, since a dropped slice would silently change the geometry."""
    victim = _corrupt_copy(case_dicom("standard"), tmp_path / "in", how)
    before = tree_snapshot(tmp_path / "in")
    run = run_app(tmp_path / "in", tmp_path / "out")
    assert_one_line_failure(run, str(victim), "fix:")
    assert tree_snapshot(tmp_path / "in") == before


@pytest.mark.slow
@pytest.mark.parametrize(
    "problem, expected",
    [
        ("input missing", "does not exist"),
        ("input empty", "holds no DICOM files"),
        ("input not DICOM", "holds no DICOM files"),
        ("no CT axial series", "has no CT axial series"),
        ("model missing", "does not exist"),
        ("model not TorchScript", "not a loadable TorchScript model"),
        ("model with another contract", "returned 3 channels"),
        ("output is a file", "not a folder"),
    ],
)
def test_bad_input_fails_with_one_clear_line(problem: str, expected: str, tmp_path: Path) -> None:
    dicom, model, output = case_dicom("standard"), MODEL, tmp_path / "out"
    named = dicom
    if problem == "input missing":
        dicom = named = tmp_path / "no-such-folder"
    elif problem == "input empty":
        dicom = named = tmp_path / "empty"
        dicom.mkdir()
    elif problem == "input not DICOM":
        dicom = named = tmp_path / "notes"
        dicom.mkdir()
        (dicom / "README.txt").write_text("not an image\n")
    elif problem == "no CT axial series":
        dicom = named = tmp_path / "localizer"
        _localizer_only(case_dicom("two-series"), dicom)
    elif problem == "model missing":
        model = named = tmp_path / "missing" / "model.ts"
    elif problem == "model not TorchScript":
        model = named = tmp_path / "model.ts"
        model.write_bytes(b"PK\x03\x04 not really a TorchScript archive")
    elif problem == "model with another contract":
        torch = pytest.importorskip("torch")
        model = named = tmp_path / "three-classes.ts"
        torch.jit.save(torch.jit.trace(torch.nn.Conv3d(1, 3, 1), torch.zeros(1, 1, 8, 8, 8)), str(model))
    elif problem == "output is a file":
        output = named = tmp_path / "taken"
        output.write_text("a file where the output folder should be\n")
    before = tree_snapshot(dicom) if dicom.is_dir() else {}
    run = run_app(dicom, output, model=model, form="path")
    assert_one_line_failure(run, str(named), expected, "fix:")
    if dicom.is_dir():
        assert tree_snapshot(dicom) == before


CONFIGURE_TORCH = """
import sys
sys.path.insert(0, sys.argv[1])
import torch
from entrypoint import configure_torch
print(configure_torch(1))
print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
print("torch._inductor" in sys.modules)
"""


@pytest.mark.slow
def test_deterministic_kernels_without_importing_the_compiler() -> None:
    """The app turns on torch's deterministic kernels (warn only) without the public call's import of
    torch._inductor, which the app never uses and which costs seconds of every emulated start."""
    done = subprocess.run(
        [sys.executable, "-c", CONFIGURE_TORCH, str(APP_DIR)], capture_output=True, text=True, check=True
    )
    how, flags, compiler = done.stdout.strip().splitlines()[-3:]
    assert how.endswith("1 thread(s), deterministic algorithms (warn only)"), how
    assert flags == "True True", flags
    assert compiler == "False", "the compiler was imported"
