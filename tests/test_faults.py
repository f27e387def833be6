"""Bad input and faults through the public commands: one clear line (or a named failing check), no traceback.

Every case runs `python -m app`, `python -m validation compare|acceptance|build` as a subprocess from the
repo root and asserts: a non-zero exit; ONE line on stderr naming the file or resource and what to do (or,
for gate verdicts, exit 1 with the failing check and its reason on the console and in metrics.json); no
"Traceback"; no gate container left behind; the fixtures byte-identical afterwards. Fixture cases are
copied into tmp_path before anything is altered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from app import stages
from validation import build, cases, contract, engine, lock, profiles, run
from validation import stages as protocol
from validation.errors import GateError

ROOT = profiles.ROOT
APP = contract.load()
STANDARD = APP.default_cases / "standard"
MODEL = APP.default_model
GROUND_TRUTH = STANDARD / "reference" / "ground_truth.nii.gz"
# Only the case run in the container.
ONLY_THE_RUN = "test_container_run"


# ---------------------------------------------------------------------------------------------- helpers


def fixture_digest() -> dict[str, str]:
    """sha256 of every fixture file this suite reads (the standard case and the model).

    Not the whole fixtures/ folder: `python -m fixtures.generate` may rewrite other cases meanwhile.
    """
    roots = (STANDARD, MODEL.parent)
    return {
        str(path.relative_to(ROOT)): hashlib.sha256(path.read_bytes()).hexdigest()
        for root in roots
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def own_leftovers(before: set[str], tmp_path: Path, images: tuple[str, ...] = ()) -> list[str]:
    """Gate containers created since `before` that are this test's: they mount tmp_path or run its image.

    Others may run the gate on the same engine at the same time; their containers are not ours.
    """
    mine = []
    for name in set(run.leftover_containers()) - before:
        shown = subprocess.run(
            ["docker", "inspect", "--format", "{{range .Mounts}}{{.Source}} {{end}}|{{.Config.Image}}", name],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if shown.returncode != 0:  # removed meanwhile
            continue
        sources, _, image = shown.stdout.strip().partition("|")
        if str(tmp_path) in sources or image in images:
            mine.append(name)
    return mine


def invoke(
    args: list[str],
    tmp_path: Path,
    docker: bool = False,
    env: dict[str, str] | None = None,
    images: tuple[str, ...] = (),
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """`python ARGS` from the repo root; asserts no traceback, no leftover container, fixtures untouched."""
    fixtures = fixture_digest()
    containers = set(run.leftover_containers()) if docker else set()
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    if docker:
        assert own_leftovers(containers, tmp_path, images) == [], "containers left behind"
    assert fixture_digest() == fixtures, "the command changed the fixtures"
    return result


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """Exit `code` and exactly one stderr line that holds every needle (the resource and the fix)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, (result.returncode, result.stderr[-2000:], result.stdout[-2000:])
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def copy_case(tmp_path: Path, name: str = "standard") -> Path:
    """A cases folder holding a copy of one fixture case (a golden stands in until the fixtures have one)."""
    folder = tmp_path / "cases"
    shutil.copytree(APP.default_cases / name, folder / name)
    golden = folder / name / "reference" / "golden.nii.gz"
    if not golden.is_file():
        shutil.copy(folder / name / "reference" / "ground_truth.nii.gz", golden)
    return folder


def edit_case_toml(case_dir: Path, old: str, new: str) -> None:
    path = case_dir / "case.toml"
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def empty_series_folder(case_dir: Path) -> None:
    """The case's DICOM folder holds no DICOM file (the app refuses it, exit 2), and its case.toml states
    no facts about a series (stated facts are checked against the folder before anything runs)."""
    shutil.rmtree(case_dir / "dicom")
    (case_dir / "dicom").mkdir()
    (case_dir / "dicom" / "README.txt").write_text("the series was not exported\n")
    path = case_dir / "case.toml"
    path.write_text(re.sub(r"\[input\]\n(.+\n)+", '[input]\ndicom = "dicom"\n', path.read_text()))


def copy_series(tmp_path: Path) -> Path:
    target = tmp_path / "dicom"
    shutil.copytree(STANDARD / "dicom", target)
    return target


def failed_checks(reports: Path) -> dict[str, str]:
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["verdict"] == "fail"
    return {check["name"]: check["reason"] for check in metrics["checks"] if check["status"] == "failed"}


def gate_args(reports: Path, *args: str) -> list[str]:
    return ["-m", "validation", "acceptance", "--reports", str(reports), *args]


# ------------------------------------------------------------------------ the app's CLI, on the host


@dataclass
class AppFault:
    """argv for `python -m app` plus what its one stderr line must say."""

    args: list[str]
    needles: tuple[str, ...]
    output: Path


def _app(input_dir: Path, model: Path, output: Path, *needles: str) -> AppFault:
    return AppFault(["-i", str(input_dir), "-m", str(model), "-o", str(output)], needles, output)


def empty_folder(tmp_path: Path) -> AppFault:
    folder = tmp_path / "empty"
    folder.mkdir()
    return _app(folder, MODEL, tmp_path / "out", str(folder), "holds no DICOM files", "fix:")


def non_dicom_files(tmp_path: Path) -> AppFault:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return _app(folder, MODEL, tmp_path / "out", str(folder), "2 files, none DICOM", "fix:")


def corrupt_header(tmp_path: Path) -> AppFault:
    folder = copy_series(tmp_path)
    bad = sorted(folder.iterdir())[3]
    data = bytearray(bad.read_bytes())
    data[128:132] = b"XXXX"  # the DICM magic after the preamble
    bad.write_bytes(bytes(data))
    return _app(folder, MODEL, tmp_path / "out", str(bad), "not a DICOM file", "fix: remove or replace it")


def truncated_pixels(tmp_path: Path) -> AppFault:
    folder = copy_series(tmp_path)
    bad = sorted(folder.iterdir())[5]
    bad.write_bytes(bad.read_bytes()[:-4000])
    return _app(folder, MODEL, tmp_path / "out", str(bad), "truncated", "fix: remove or replace it")


def no_ct_series(tmp_path: Path) -> AppFault:
    folder = copy_series(tmp_path)
    for path in folder.iterdir():
        dataset = pydicom.dcmread(path)
        dataset.Modality = "MR"
        dataset.save_as(path)
    return _app(folder, MODEL, tmp_path / "out", str(folder), "no CT axial series", "fix:")


def missing_model(tmp_path: Path) -> AppFault:
    model = tmp_path / "nowhere" / "model.ts"
    return _app(STANDARD / "dicom", model, tmp_path / "out", str(model), "does not exist", "fix:")


def not_torchscript(tmp_path: Path) -> AppFault:
    import torch

    model = tmp_path / "model.ts"
    torch.save({"weight": torch.zeros(2)}, model)  # a state dict: torch.save, not torch.jit.save
    return _app(STANDARD / "dicom", model, tmp_path / "out", str(model), "not a loadable TorchScript", "fix:")


def output_is_a_file(tmp_path: Path) -> AppFault:
    output = tmp_path / "out.nii.gz"
    output.write_bytes(b"")
    return _app(STANDARD / "dicom", MODEL, output, str(output), "is a file, not a folder", "fix:")


APP_FAULTS: dict[str, Callable[[Path], AppFault]] = {
    "empty-input-folder": empty_folder,
    "non-dicom-files": non_dicom_files,
    "corrupt-dicom-header": corrupt_header,
    "truncated-pixel-data": truncated_pixels,
    "no-ct-series": no_ct_series,
    "missing-model": missing_model,
    "model-not-torchscript": not_torchscript,
    "output-is-a-file": output_is_a_file,
}


@pytest.mark.slow
@pytest.mark.parametrize("make", list(APP_FAULTS.values()), ids=list(APP_FAULTS))
def test_app_refuses_bad_input(tmp_path: Path, make: Callable[[Path], AppFault]) -> None:
    fault = make(tmp_path)
    result = invoke(["-m", "app", *fault.args], tmp_path)
    assert_one_line(result, 2, "multiorgan-seg: error:", *fault.needles)
    assert not (fault.output.is_dir() and (fault.output / "mask.nii.gz").exists()), "a mask was written"


@pytest.fixture
def unwritable_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody can write into: immutable for root (who ignores modes), mode 0555 otherwise."""
    folder = tmp_path / "readonly-out"
    folder.mkdir()
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True, check=False)
        if made.returncode != 0:
            pytest.skip(f"cannot make {folder} unwritable for root: {made.stderr.strip()}")
    else:
        folder.chmod(0o555)
    yield folder
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=False)
    folder.chmod(0o755)


@pytest.mark.slow
def test_app_refuses_an_unwritable_output_folder(tmp_path: Path, unwritable_folder: Path) -> None:
    args = ["-m", "app", "-i", str(STANDARD / "dicom"), "-m", str(MODEL), "-o", str(unwritable_folder)]
    result = invoke(args, tmp_path)
    assert_one_line(result, 2, str(unwritable_folder), "is not writable", "fix: pass -o")
    assert list(unwritable_folder.iterdir()) == []


# ------------------------------------------------------------------------------ `validation compare`


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _truth() -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(GROUND_TRUTH)
    return np.asarray(image.dataobj).astype(np.uint8), image.affine.copy()


def missing_reference(tmp_path: Path) -> tuple[Path, Path, tuple[str, ...]]:
    reference = tmp_path / "reference" / "golden.nii.gz"
    return GROUND_TRUTH, reference, (str(reference), "no such file", "pass a NIfTI label mask")


def reference_of_another_shape(tmp_path: Path) -> tuple[Path, Path, tuple[str, ...]]:
    data, affine = _truth()
    reference = _save(tmp_path / "shape.nii.gz", data[:-2], affine)
    return GROUND_TRUTH, reference, (str(reference), "shape", "resample the output onto the reference grid")


def reference_with_another_affine(tmp_path: Path) -> tuple[Path, Path, tuple[str, ...]]:
    data, affine = _truth()
    affine[:3, 3] += 5.0
    reference = _save(tmp_path / "affine.nii.gz", data, affine)
    return GROUND_TRUTH, reference, (str(reference), "affine differs", "resample the output")


def float_mask(tmp_path: Path) -> tuple[Path, Path, tuple[str, ...]]:
    data, affine = _truth()
    output = _save(tmp_path / "float.nii.gz", data.astype(np.float32) * 0.5, affine)
    return output, GROUND_TRUTH, (str(output), "non-integer values", "save it with an integer dtype")


def nan_mask(tmp_path: Path) -> tuple[Path, Path, tuple[str, ...]]:
    data, affine = _truth()
    values = data.astype(np.float32)
    values[0, 0, 0] = np.nan
    output = _save(tmp_path / "nan.nii.gz", values, affine)
    return output, GROUND_TRUTH, (str(output), "NaN", "integer label ids only")


COMPARE_FAULTS = {
    "missing-reference": missing_reference,
    "reference-other-shape": reference_of_another_shape,
    "reference-other-affine": reference_with_another_affine,
    "float-mask": float_mask,
    "nan-mask": nan_mask,
}


@pytest.mark.parametrize("make", list(COMPARE_FAULTS.values()), ids=list(COMPARE_FAULTS))
def test_compare_refuses_bad_masks(tmp_path: Path, make) -> None:
    output, reference, needles = make(tmp_path)
    result = invoke(["-m", "validation", "compare", str(output), str(reference)], tmp_path)
    assert_one_line(result, 2, "armgate:", *needles)


def test_compare_fails_on_a_reference_with_another_label_set(tmp_path: Path) -> None:
    data, affine = _truth()
    data[data == 6] = 0  # the reference lacks the liver
    reference = _save(tmp_path / "labels.nii.gz", data, affine)
    args = ["-m", "validation", "compare", str(GROUND_TRUTH), str(reference), "--labels", "1,2,3,6,7,8"]
    result = invoke([*args, "--dice-min", "0.9"], tmp_path)
    assert result.returncode == 1 and result.stderr == "", result.stderr
    assert "FAIL labels: extra in the output: 6" in result.stdout, result.stdout[-2000:]


def test_gate_refuses_a_case_without_its_reference(tmp_path: Path) -> None:
    folder = copy_case(tmp_path)
    golden = folder / "standard" / "reference" / "golden.nii.gz"
    golden.unlink()
    result = invoke(gate_args(tmp_path / "acceptance", "--cases", str(folder), "--image", "any:0"), tmp_path)
    assert_one_line(result, 2, "armgate:", str(golden), "reference mask missing", "regenerate")


def test_gate_refuses_an_unknown_case_toml_key(tmp_path: Path) -> None:
    folder = copy_case(tmp_path)
    edit_case_toml(folder / "standard", "[run]\n", "[run]\ntimeout = 5\n")  # meant timeout_s
    result = invoke(gate_args(tmp_path / "acceptance", "--cases", str(folder), "--image", "any:0"), tmp_path)
    case_toml = str(folder / "standard" / "case.toml")
    assert_one_line(result, 2, "armgate:", case_toml, "unknown field 'run.timeout'")


def test_gate_refuses_a_case_timeout_that_is_not_seconds(tmp_path: Path) -> None:
    folder = copy_case(tmp_path)
    edit_case_toml(folder / "standard", "timeout_s = 900", 'timeout_s = "15 min"')
    result = invoke(gate_args(tmp_path / "acceptance", "--cases", str(folder), "--image", "any:0"), tmp_path)
    case_toml = str(folder / "standard" / "case.toml")
    assert_one_line(result, 2, "armgate:", case_toml, "field 'run.timeout_s' must be seconds > 0")


@pytest.mark.parametrize("memory", ['"lots"', '"0g"', '"4 GiB"', "4"])
def test_gate_refuses_a_case_memory_limit_docker_would_not_take(tmp_path: Path, memory: str) -> None:
    folder = copy_case(tmp_path)
    edit_case_toml(folder / "standard", 'memory = "4g"', f"memory = {memory}")
    result = invoke(gate_args(tmp_path / "acceptance", "--cases", str(folder), "--image", "any:0"), tmp_path)
    case_toml = str(folder / "standard" / "case.toml")
    assert_one_line(result, 2, "armgate:", case_toml, "field 'run.memory' must be a size", '"4g"')


def test_memory_sizes_read_as_docker_reads_them() -> None:
    sizes = {"4g": 4 * 2**30, "4G": 4 * 2**30, "512m": 512 * 2**20, "1.5g": 3 * 2**29, "2048": 2048}
    assert {text: cases.memory_bytes(text) for text in sizes} == sizes


# ------------------------------------------------------------------ case timeouts and where runs stop


def test_a_case_without_timeout_gets_one_scaled_with_its_windows(tmp_path: Path) -> None:
    """The contract's [run] model sizes the timeout from the series' extent; timeout_s overrides it."""
    model = cases.run_time(APP)
    assert model is not None, "container/app.toml has a [run] table"
    folder = copy_case(tmp_path)
    explicit = cases.discover(folder, APP)[0]
    assert explicit.timeout_s == 900 and "case.toml" in explicit.timeout_basis
    edit_case_toml(folder / "standard", "timeout_s = 900\n", "")
    scaled = cases.discover(folder, APP)[0]
    windows = cases.estimated_windows(cases.series_extent_mm(scaled.dicom_dir), model)
    assert windows == 4  # 128 x 128 pixels of 1.5 mm, 64 slices of 2 mm: 2 x 2 x 1 windows of 96^3
    assert scaled.timeout_s == model.timeout_s(windows) and f"{windows} windows" in scaled.timeout_basis
    # a clinical field of view (512 x 512 over 50 cm, 20 slices of 2 mm) has 25 windows: a longer limit
    assert cases.estimated_windows((500.0, 500.0, 40.0), model) == 25
    assert model.timeout_s(25) > model.timeout_s(windows) > model.margin * model.start_s


def test_a_broken_run_time_model_is_one_line_naming_the_contract(tmp_path: Path) -> None:
    broken = dataclasses.replace(APP, run_time={**APP.run_time, "seconds_per_window": "slow"})
    with pytest.raises(GateError, match=r"app\.toml: field 'run\.seconds_per_window' must be a number"):
        cases.run_time(broken)


@pytest.mark.parametrize(
    ("log", "where"),
    [
        ("[INFO] (stages) - stage 'inference window 7/15' started\n", "in stage 'inference window 7/15'"),
        (
            "stage 'pre-transforms' started\nstage 'pre-transforms' took 12.50 s\n",
            "after stage 'pre-transforms'",
        ),
        ("Going to initiate execution of operator\n", "before any stage line in its log"),
        ("", "before any stage line in its log"),
    ],
    ids=["inside-a-window", "between-stages", "before-any-stage", "no-output"],
)
def test_a_timed_out_run_names_the_stage_it_reached(log: str, where: str) -> None:
    result = run.RunResult("container", Path("out"), None, 900.4, timed_out=True, logs=log)
    assert result.failure().startswith(f"container run timed out after 900 s {where}; "), result.failure()


@pytest.mark.slow
def test_a_host_run_that_times_out_keeps_what_the_app_logged(tmp_path: Path) -> None:
    """The host run's log, cut by its timeout, still says where the app was (a stand-in app that
    starts a stage and hangs)."""
    (tmp_path / "__main__.py").write_text(
        "import sys, time\n"
        f'print({stages.DICOM_LOAD!r}.join(("stage \'", "\' started")), flush=True)\n'
        "time.sleep(120)\n"
    )
    hanging = dataclasses.replace(APP, source=tmp_path, main="__main__.py")
    result = run.run_host(hanging, STANDARD / "dicom", MODEL, tmp_path / "out", timeout_s=10)
    assert result.timed_out and "stage 'DICOM load' started" in result.logs, result.logs
    assert "timed out after 10 s in stage 'DICOM load'" in result.failure(), result.failure()


def test_only_a_measurement_mounts_an_app_over_the_image(tmp_path: Path) -> None:
    """The gate's command runs the image's own app; stage_times may mount an edited one, read-only."""
    args = ("img", "armgate-run-x", APP.mounts, STANDARD / "dicom", MODEL, tmp_path)
    gated = run.docker_run_command(*args)
    assert not any(APP.install_dir in part for part in gated), gated
    measured = run.docker_run_command(*args, app_overlay=(APP.source, APP.install_dir))
    assert measured[: len(gated) - 1] == gated[:-1] and measured[-1] == "img"
    assert f"{APP.source}:{APP.install_dir}:ro" in measured


# ------------------------------------------------------------------- profiles, the lock, the engine


@pytest.mark.parametrize("command", ["acceptance", "build"])
def test_invalid_profile_toml(tmp_path: Path, command: str) -> None:
    profile = tmp_path / "broken.toml"
    profile.write_text('[profile\nplatform = "linux/arm64"\n')
    result = invoke(["-m", "validation", command, "--profile", str(profile)], tmp_path)
    assert_one_line(result, 2, "armgate:", str(profile), "not valid TOML", "fix the syntax")


@pytest.mark.parametrize("command", ["acceptance", "build"])
def test_docker_engine_unreachable(tmp_path: Path, command: str) -> None:
    args = ["-m", "validation", command]
    if command == "acceptance":
        args += ["--cases", str(copy_case(tmp_path)), "--image", "armgate/multiorgan-seg:bookworm"]
        args += ["--reports", str(tmp_path / "acceptance")]
    env = {"DOCKER_HOST": "unix:///nonexistent.sock", "ARMGATE_REPORTS": str(tmp_path / "reports")}
    result = invoke(args, tmp_path, env=env, timeout=120)
    assert_one_line(result, 2, "armgate:", "docker engine", "nox -s prepare")


@pytest.mark.docker
def test_image_missing(docker_host: None, tmp_path: Path) -> None:
    reports = tmp_path / "acceptance"
    args = gate_args(reports, "--cases", str(copy_case(tmp_path)), "--image", "armgate/does-not-exist:0")
    result = invoke(args, tmp_path, docker=True)
    assert_one_line(result, 2, "armgate:", "armgate/does-not-exist:0", "not found", "nox -s build")


@pytest.mark.docker
@pytest.mark.slow
def test_build_refuses_a_wheel_not_in_the_lock(built_image: build.BuildRecord, tmp_path: Path) -> None:
    """The base image exists (built_image made it), so the build reaches the wheelhouse check at once."""
    profile = profiles.load()
    real = lock.wheelhouse_dir(profile)
    wheels = sorted(real.glob("*.whl"), key=lambda path: path.stat().st_size) if real.is_dir() else []
    cache = tmp_path / ".cache"
    house = cache / "wheelhouse" / f"{profile.name}-{profile.arch}"
    house.mkdir(parents=True)
    tampered = house / (
        wheels[0].name if wheels else "markupsafe-3.0.4-cp311-cp311-manylinux_2_28_aarch64.whl"
    )
    tampered.write_bytes((wheels[0].read_bytes() if wheels else b"PK\x03\x04") + b"tampered")
    env = {
        "ARMGATE_CACHE": str(cache),
        "ARMGATE_REPORTS": str(tmp_path / "reports"),
        # should it ever try, pip finds no index: the test fails fast instead of downloading
        "PIP_NO_INDEX": "1",
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    }
    result = invoke(["-m", "validation", "build"], tmp_path, docker=True, env=env, timeout=120)
    assert_one_line(
        result, 2, "armgate:", str(tampered), f"not in {profile.lock_path.name}", "delete the file"
    )
    assert sorted(path.name for path in house.iterdir()) == [tampered.name], "the build downloaded wheels"
    assert "buildx" not in result.stdout and not (tmp_path / "reports" / "build.json").exists()


# -------------------------------------------------------------- the gate's verdicts on container faults


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (('memory = "4g"', 'memory = "64m"'), "container run was killed by its memory limit"),
        # the wall time includes the container's start: on a loaded machine 4 s for a 3 s limit
        (("timeout_s = 900", "timeout_s = 3"), "container run timed out after "),
        (None, "container run exited with code 2: multiorgan-seg: error: input folder /input holds no DICOM"),
    ],
    ids=["killed-by-memory-limit", "hangs-past-timeout", "exits-non-zero"],
)
def test_gate_fails_a_container_fault(
    built_image: build.BuildRecord, tmp_path: Path, edit: tuple[str, str] | None, reason: str
) -> None:
    folder = copy_case(tmp_path)
    case = folder / "standard"
    if edit is None:  # the app refuses a folder with no DICOM files: exit code 2
        empty_series_folder(case)
    else:
        edit_case_toml(case, *edit)
    reports = tmp_path / "acceptance"
    args = gate_args(reports, "--image", built_image.image_id, "--cases", str(folder), "--no-host")
    if edit is not None and "timeout_s" in edit[1]:
        args += ["--app", str(contract_without_run_model(tmp_path))]  # or the plan refuses the case first
    result = invoke([*args, "-k", "standard"], tmp_path, docker=True)  # every check of the case
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    assert result.stderr.strip() == "", result.stderr
    failed = failed_checks(reports)
    assert list(failed) == ["test_container_run[standard]"], failed  # one cause, one failure
    assert reason in failed["test_container_run[standard]"], failed
    metrics = json.loads((reports / "metrics.json").read_text())
    not_evaluated = [c for c in metrics["checks"] if c["status"] == "not_evaluated"]
    assert len(not_evaluated) == len(metrics["checks"]) - 1, metrics["checks"]
    assert all(c["reason"].startswith("not evaluated: the container run failed") for c in not_evaluated)
    assert reason in metrics["cases"]["standard"]["run"]["failure"]
    log_tail = metrics["cases"]["standard"]["run"]["log_tail"]  # the app's last words, if it said any
    assert edit is not None or any("holds no DICOM" in line for line in log_tail), log_tail
    kept = reports / "cases" / "standard" / "container.log"
    assert kept.is_file()  # kept, a timeout included
    if edit is not None and "timeout_s" in edit[1]:  # where the app was, from the kept log's stage lines
        where = rf"timed out after \d+ s {re.escape(protocol.stage_reached(kept.read_text()))}; "
        assert re.search(where, metrics["cases"]["standard"]["run"]["failure"]), metrics["cases"]["standard"]
    assert "test_container_run[standard]" in result.stdout, result.stdout[-3000:]
    assert reason[:40] in result.stdout, result.stdout[-3000:]


def contract_without_run_model(folder: Path) -> Path:
    """The default contract without its [run] table: nothing predicts the case's time, so a timeout
    shorter than the app's start reaches the run (with the table, the plan refuses it before any run)."""
    text = APP.path.read_text().replace('"../', f'"{APP.path.parent.parent}/')
    start, end = text.index("\n[run]\n"), text.index("\n[defaults]\n")
    (folder / "app.toml").write_text(text[:start] + text[end:])
    return folder / "app.toml"


def _host_tools_rootfs(rootfs: Path, tools: tuple[str, ...]) -> None:
    """The host's own executables and the libraries ldd names for them, at the same paths."""
    for tool in tools:
        binary = Path(shutil.which(tool) or f"/bin/{tool}").resolve()
        listed = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
        libraries = [part for part in listed.split() if part.startswith("/")]
        for source in (binary, *map(Path, libraries)):
            target = rootfs / source.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source.resolve(), target)
        (rootfs / "bin").mkdir(exist_ok=True)
        if not (rootfs / "bin" / tool).exists():
            shutil.copy(binary, rootfs / "bin" / tool)


@pytest.fixture(scope="module")
def amd64_image(docker_host: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real linux/amd64 image made of the host's sh, sleep and uname (x86-64 on an x86 host), built
    FROM scratch locally: it starts and answers the image checks, no registry involved."""
    context = tmp_path_factory.mktemp("amd64")
    _host_tools_rootfs(context / "rootfs", ("sh", "sleep", "uname"))
    (context / "Dockerfile").write_text("FROM scratch\nCOPY rootfs/ /\n")
    tag = f"armgate/faults-foreign:{uuid.uuid4().hex[:8]}"
    command = ["docker", "buildx", "build", "--platform", "linux/amd64", "--load", "--tag", tag, str(context)]
    made = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    assert engine.require_image(tag, "the foreign image").platform == "linux/amd64"
    yield tag
    subprocess.run(["docker", "image", "rm", "--force", tag], capture_output=True, check=False)


def _gate_on_amd64(
    amd64_image: str, tmp_path: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    reports = tmp_path / "acceptance"
    args = gate_args(reports, "--image", amd64_image, "--cases", str(copy_case(tmp_path)), "--no-host")
    selection = f"test_architecture or test_machine or ({ONLY_THE_RUN})"
    result = invoke([*args, "-k", selection], tmp_path, docker=True, images=(amd64_image,))
    return result, failed_checks(reports)


@pytest.mark.docker
@pytest.mark.slow
def test_gate_fails_an_image_of_the_wrong_architecture(amd64_image: str, tmp_path: Path) -> None:
    result, failed = _gate_on_amd64(amd64_image, tmp_path)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    expected = {"test_architecture_is_arm64", "test_container_run[standard]"}
    if platform.machine() == "x86_64":  # the host's tools are x86-64 there: the running image says so too
        expected.add("test_machine_is_aarch64")
        assert "uname -m inside the running image says x86_64" in failed["test_machine_is_aarch64"], failed
    assert set(failed) == expected, failed
    assert "linux/amd64, not linux/arm64" in failed["test_container_run[standard]"]
    assert "test_architecture_is_arm64" in result.stdout and "linux/amd64" in result.stdout


@pytest.mark.docker
@pytest.mark.slow
def test_wrong_architecture_check_says_which_architecture(amd64_image: str, tmp_path: Path) -> None:
    _, failed = _gate_on_amd64(amd64_image, tmp_path)
    assert "linux/amd64" in failed["test_architecture_is_arm64"], failed["test_architecture_is_arm64"]
