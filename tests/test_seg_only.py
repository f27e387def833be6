"""Apps that write only a DICOM SEG (named by its UID), gated through the real arm64 image and the gate.

The repository's app writes a mask and a SEG; a contract that declares only `seg = "*.dcm"` makes the gate
treat it as a SEG-only app: the SEG is placed on the series' grid and held to the same goldens. The
must-fail cases run a *replay* image (the built image plus a script that writes prepared outputs instead
of running the app), so each bad output costs seconds under emulation: a SEG shifted by one slice, a
segment label the contract does not declare, two files matching the SEG pattern, and a mask on the
localizer's grid instead of the expected series'. Each fails with its own check and reason, and the
checks that depend on it are not evaluated.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest

from tests.conftest import run_gate
from validation import contract, dicom_grid, engine, run
from validation.build import BuildRecord

APP = contract.load()
CASE = "two-series"
REPLAY = """
import shutil, sys
from pathlib import Path
variant = Path("/opt/replay") / (Path("/input") / "REPLAY").read_text().strip()
for source in sorted(variant.rglob("*")):  # files only: /output's own metadata is not ours to copy
    if source.is_file():
        target = Path("/output") / source.relative_to(variant)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
print(f"replayed {variant.name}", flush=True)
"""


def write_contract(folder: Path, outputs_table: str) -> Path:
    """The default app's contract with another [outputs] table, its paths made absolute."""
    text = APP.path.read_text()
    text = text[: text.index("[outputs]")] + outputs_table + "\n\n" + text[text.index("[labels]") :]
    relatives = ("../app", "../app/config/labels.json", "../fixtures/model/model.ts", "../fixtures/cases")
    for relative in relatives:
        absolute = json.dumps(str((APP.path.parent / relative).resolve()))
        text = text.replace(json.dumps(relative), absolute)
    path = folder / f"contract-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(text)
    return path


def cases_with(tmp_path: Path, marker: str | None = None, host_limits: str = "") -> Path:
    """A cases folder with a copy of the two-series case; `marker` names the replay variant (a text file
    beside the DICOM, which every DICOM reader skips; the case then states no file count)."""
    folder = tmp_path / "cases"
    shutil.copytree(APP.default_cases / CASE, folder / CASE)
    toml = folder / CASE / "case.toml"
    text = re.sub(r"\nfiles = \d+\n", "\n", toml.read_text())
    toml.write_text(text + (f"\n[tolerances.host]\n{host_limits}\n" if host_limits else ""))
    if marker is not None:
        (folder / CASE / "dicom" / "REPLAY").write_text(marker + "\n")
    return folder


def gate(image: str, app: Path, cases: Path, reports: Path, *args: str) -> subprocess.CompletedProcess[str]:
    paths = ["--app", str(app), "--cases", str(cases), "--reports", str(reports)]
    result = run_gate(["--image", image, *paths, *args])
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    return result


def checks(reports: Path) -> dict[str, dict]:
    return {check["name"]: check for check in json.loads((reports / "metrics.json").read_text())["checks"]}


# ------------------------------------------------------------------ the real app, gated by its SEG alone


@pytest.mark.docker
@pytest.mark.slow
def test_the_app_gated_by_its_seg_alone_passes(built_image: BuildRecord, tmp_path: Path) -> None:
    """A full gate (host run included) of the real image on the two-series case with a SEG-only contract;
    the case's [host] table adds an HD95 limit, which adds its own host-agreement check."""
    app = write_contract(tmp_path, '[outputs]\nseg = "*.dcm"')
    cases = cases_with(tmp_path, host_limits="hd95_max_mm = 0.5")
    reports = tmp_path / "acceptance"
    result = gate(built_image.image_id, app, cases, reports)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    found = checks(reports)
    assert all(check["status"] == "passed" for check in found.values()), found
    expected = {f"test_series[{CASE}]", f"test_dicom_seg[{CASE}]", f"test_host_agreement[{CASE}-hd95]"}
    assert expected <= set(found), sorted(found)
    assert not any(name.startswith("test_host_agreement") and name.endswith("-volume]") for name in found)
    metrics = json.loads((reports / "metrics.json").read_text())
    seg_checks = {o["name"]: o for o in metrics["cases"][CASE]["seg"]["outcomes"]}
    assert seg_checks["seg-grid"]["passed"] and "seg-pixels" not in seg_checks
    label_map = Path(metrics["cases"][CASE]["output_mask"])
    assert label_map.name == "container-seg-labels.nii.gz" and label_map.is_file()
    golden = nib.load(cases / CASE / "reference" / "golden.nii.gz")
    assert np.array_equal(np.asarray(nib.load(label_map).dataobj), np.asarray(golden.dataobj))


# ------------------------------------------------------------ must-fail outputs, replayed in the image


@pytest.fixture(scope="module")
def host_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app's own outputs on the host for the two-series case: mask.nii.gz and seg.dcm."""
    out = tmp_path_factory.mktemp("host-outputs")
    result = run.run_host(APP, APP.default_cases / CASE / "dicom", APP.default_model, out, 600)
    assert result.ok, result.failure()
    return out


def _variants(host_outputs: Path, folder: Path) -> None:
    seg = hd.seg.segread(host_outputs / APP.seg)
    (folder / "good").mkdir(parents=True)
    seg.save_as(folder / "good" / f"{seg.SOPInstanceUID}.dcm")

    grid = dicom_grid.read_grids(APP.default_cases / CASE / "dicom").series
    (expected,) = grid.values()
    step_lps = dicom_grid.LPS_TO_RAS[:3, :3] @ expected.affine[:3, 2]
    shifted = hd.seg.segread(host_outputs / APP.seg)
    for frame in shifted.PerFrameFunctionalGroupsSequence:
        position = frame.PlanePositionSequence[0]
        moved = [float(v) + d for v, d in zip(position.ImagePositionPatient, step_lps, strict=True)]
        position.ImagePositionPatient = moved
    (folder / "shifted").mkdir()
    shifted.save_as(folder / "shifted" / f"{shifted.SOPInstanceUID}.dcm")

    renamed = hd.seg.segread(host_outputs / APP.seg)
    renamed.SegmentSequence[0].SegmentLabel = "Kidney stone"
    (folder / "unknown-label").mkdir()
    renamed.save_as(folder / "unknown-label" / f"{renamed.SOPInstanceUID}.dcm")

    shutil.copytree(folder / "good", folder / "two-segs")
    seg.save_as(folder / "two-segs" / "1.2.826.0.1.3680043.10.511.3.2.dcm")

    localizer = dicom_grid.read_grids(APP.default_cases / CASE / "dicom").single_images[0]
    labels = np.zeros(localizer.shape, dtype=np.uint8)
    labels[40:80, 40:80, 0] = 6
    (folder / "localizer").mkdir()
    nib.save(nib.Nifti1Image(labels, localizer.affine), folder / "localizer" / "mask.nii.gz")


@pytest.fixture(scope="module")
def replay_image(
    built_image: BuildRecord, host_outputs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The built image with a script that writes one prepared output set, chosen by /input/REPLAY."""
    context = tmp_path_factory.mktemp("replay")
    _variants(host_outputs, context / "replay")
    (context / "replay" / "replay.py").write_text(REPLAY)
    entrypoint = json.dumps(["python3", "/opt/replay/replay.py"])
    (context / "Dockerfile").write_text(
        f"FROM {built_image.image}\nCOPY replay/ /opt/replay/\nENTRYPOINT {entrypoint}\n"
    )
    tag = f"armgate/seg-replay:{uuid.uuid4().hex[:8]}"
    command = ["docker", "buildx", "build", "--platform", "linux/arm64", "--network", "none", "--load"]
    command += ["--tag", tag, str(context)]
    made = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    assert made.returncode == 0, made.stderr[-2000:]
    facts = engine.require_image(tag, "the replay image")
    with run.holding(facts.id, facts.platform, {"org.armgate.test-session": str(uuid.uuid4())}):
        yield tag
    subprocess.run(["docker", "image", "rm", "--force", tag], capture_output=True, check=False)


SEG_ONLY = '[outputs]\nseg = "*.dcm"'
MASK_ONLY = '[outputs]\nmask = "mask.nii.gz"'


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize(
    ("variant", "outputs_table", "failing", "reason"),
    [
        ("good", SEG_ONLY, None, ""),
        ("shifted", SEG_ONLY, f"test_dicom_seg[{CASE}]", "frames lie away from the image they derive from"),
        ("unknown-label", SEG_ONLY, f"test_dicom_seg[{CASE}]", "segment 1 'Kidney stone' is not a label the"),
        ("two-segs", SEG_ONLY, f"test_outputs[{CASE}]", "seg: 2 files match '*.dcm' ("),
        ("localizer", MASK_ONLY, f"test_series[{CASE}]", "the mask lies on series "),
    ],
)
def test_each_bad_output_fails_for_its_own_reason(
    replay_image: str, tmp_path: Path, variant: str, outputs_table: str, failing: str | None, reason: str
) -> None:
    reports = tmp_path / "acceptance"
    app = write_contract(tmp_path, outputs_table)
    result = gate(replay_image, app, cases_with(tmp_path, variant), reports, "--no-host", "-k", CASE)
    found = checks(reports)
    failed = {name: check["reason"] for name, check in found.items() if check["status"] == "failed"}
    assert found[f"test_container_run[{CASE}]"]["status"] == "passed", found
    if failing is None:  # the replayed real SEG: every case check passes (PARTIAL: -k and --no-host)
        assert result.returncode == 3 and failed == {}, failed
        return
    assert result.returncode == 1, result.stdout[-3000:]
    assert failing in failed and reason in failed[failing], failed
    assert list(failed) == [failing], failed  # one cause, one failure; what depends on it is not evaluated
    assert "\n" not in failed[failing] and " where " not in result.stdout, result.stdout  # its own words only
    masks = [c for name, c in found.items() if name.startswith("test_mask[")]
    assert masks and all(c["status"] == "not_evaluated" for c in masks), masks
    if variant == "localizer":
        assert "('Topogram', 1 images); the case expects series " in failed[failing], failed
