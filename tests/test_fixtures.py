"""The fixture cases and model: deterministic, valid CT DICOM, consistent geometry, and segmentable.

The Dice tests run the real app CLI on the host (~10 s per case); they skip only when app/ is absent.
The model is exported inside the torch-1.8 image (the session's `torch18_image`): those tests are
marked docker and slow (about a minute of emulated torch each).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tomllib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import IN_CI

from fixtures import generate, limits
from fixtures.make_model import build_network, model_constants
from fixtures.phantom import FIXTURES_DIR, check_layout, extent, inside, load_config
from fixtures.segmenter import NeighbourhoodExtreme, network
from validation import compare, model_check
from validation.build import BuildRecord

CASES = sorted(load_config()["cases"])
MODEL_FILE = FIXTURES_DIR / "model" / "model.ts"
APP_PRESENT = (generate.REPO_ROOT / "app" / "__main__.py").is_file()

# CT Image IOD (PS3.3 A.3): Type 1 attributes must hold a value, Type 2 ones must be present.
TYPE_1 = {
    "SOP Common": ["SOPClassUID", "SOPInstanceUID"],
    "General Study": ["StudyInstanceUID"],
    "General Series": ["Modality", "SeriesInstanceUID"],
    "Frame of Reference": ["FrameOfReferenceUID"],
    "Image Plane": ["PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient"],
    "Image Pixel": ["SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
                    "BitsStored", "HighBit", "PixelRepresentation", "PixelData"],
    "CT Image": ["ImageType", "RescaleIntercept", "RescaleSlope"],
}
TYPE_2 = {
    "Patient": ["PatientName", "PatientID", "PatientBirthDate", "PatientSex"],
    "General Study": ["StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"],
    "General Series": ["SeriesNumber"],
    "Frame of Reference": ["PositionReferenceIndicator"],
    "General Equipment": ["Manufacturer"],
    "General Image": ["InstanceNumber"],
    "Image Plane": ["SliceThickness"],
    "CT Image": ["KVP", "AcquisitionNumber"],
}


def _case_dir(name: str) -> Path:
    return FIXTURES_DIR / "cases" / name


def _case_toml(name: str) -> dict:
    with (_case_dir(name) / "case.toml").open("rb") as handle:
        return tomllib.load(handle)


def _series(name: str) -> dict[str, list[tuple[Path, pydicom.Dataset]]]:
    """The case's DICOM files grouped by SeriesInstanceUID, in directory listing order."""
    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    for path in sorted((_case_dir(name) / "dicom").iterdir()):
        dataset = pydicom.dcmread(path)
        groups.setdefault(dataset.SeriesInstanceUID, []).append((path, dataset))
    return groups


def _axial(name: str) -> list[tuple[Path, pydicom.Dataset]]:
    return _series(name)[_case_toml(name)["input"]["expected_series_instance_uid"]]


def test_layout_keeps_tissues_apart() -> None:
    assert check_layout(load_config()) == []


@pytest.mark.slow
def test_every_structure_lies_within_its_extent() -> None:
    """Rendering tests a point against a structure only within the structure's extent, so no voxel of
    it may lie outside: sampled every 0.25 mm from 0.001 mm to 3 mm past each bound, across the body."""
    past = np.array([1e-3, *np.arange(0.25, 3.0, 0.25)])
    across = (np.arange(-180.0, 180.0, 0.5), np.arange(-140.0, 140.0, 0.5))
    for structure in load_config()["structures"]:
        bounds = extent(structure)
        (z_low, z_high) = bounds[2]
        # every height the structure has (an elliptic cylinder is the same at each)
        heights = np.arange(z_low, z_high, 1.0) if math.isfinite(z_low) else np.array([0.0])
        for axis, (low, high) in enumerate(bounds):
            if not math.isfinite(low):
                continue
            grids = [*across, heights]
            grids[axis] = np.concatenate([high + past, low - past])
            points = np.stack(np.meshgrid(*grids, indexing="ij"), axis=-1)
            assert not inside(structure, points).any(), (structure["name"], "xyz"[axis])


def test_generation_is_byte_identical(tmp_path: Path) -> None:
    """Two generations of a case give the same bytes (goldens are carried over); the model's export
    gives the committed bytes (test_check_names_each_modified_file)."""
    config = load_config()
    model, digest = MODEL_FILE, _case_toml("two-series")["provenance"]["model_sha256"]
    for run in ("a", "b"):
        generate.generate_case(config, "two-series", tmp_path / run / "case", model, digest,
                               golden_from=_case_dir("two-series"))
    first = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    second = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert first == second
    for relative in first:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes(), relative
    committed = sorted(p.name for p in (_case_dir("two-series") / "dicom").iterdir())
    assert sorted(p.name for p in (tmp_path / "a" / "case" / "dicom").iterdir()) == committed


@pytest.mark.slow
def test_committed_model_is_the_network_written_by_torch_18() -> None:
    """model.ts computes exactly what the nn.Module of fixtures/segmenter.py computes with
    phantoms.toml's constants, is made of standard layers, and carries no record of a newer torch."""
    config = load_config()
    scripted = torch.jit.load(str(MODEL_FILE), map_location="cpu").eval()
    other = dict(model_constants(config), snap=0.3)  # another snap split: the comparison can fail
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((1, 1, 24, 40, 32), generator=generator) * 1.2 - 0.1
    with torch.no_grad():
        expected, output = build_network(config)(x), scripted(x)
        assert torch.equal(output, expected)
        assert not torch.equal(network(other)(x).argmax(1), expected.argmax(1))
    kinds = {type(module).__name__ for module in build_network(config).modules()}
    assert {"Conv3d", "ReplicationPad3d", "NeighbourhoodExtreme"} <= kinds, kinds
    facts = model_check.archive_facts(MODEL_FILE)
    assert facts.file_format == "5" and facts.writer == "no newer-torch records", facts.describe()


@pytest.mark.slow
def test_neighbourhood_extreme_is_max_pooling_bit_for_bit() -> None:
    """The model's axis-by-axis neighbourhood max and min give what nn.MaxPool3d gives on the cube
    (and on the negation, for the min), ties, window borders and odd shapes included; a 3-wide
    neighbourhood is a different function, so the comparison can fail."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(0, 7, (2, 1, 11, 14, 9), generator=generator).float() / 7  # many ties
    x[0, 0, 0, 0, 0] = float("-inf")
    pool = torch.nn.MaxPool3d(5, stride=1, padding=2)
    with torch.no_grad():
        assert torch.equal(NeighbourhoodExtreme(5)(x), pool(x))
        assert torch.equal(NeighbourhoodExtreme(5, minimum=True)(x), -pool(-x))
        assert not torch.equal(NeighbourhoodExtreme(3)(x), pool(x))


@pytest.mark.docker
def test_a_missing_export_image_is_one_line_naming_the_build(
    docker_host: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--check without the torch-1.8 image: exit 2, one line naming the image and the build that makes it."""
    root = tmp_path / "fixtures"
    shutil.copytree(FIXTURES_DIR / "model", root / "model")
    before = (root / "model" / "model.ts").read_bytes()
    absent = "armgate/multiorgan-seg:never-built-by-any-test"
    code = generate.main(["--check", "--no-goldens", "--root", str(root), "--case", "standard",
                          "--export-image", absent])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert absent in lines[0] and "nox -s build -- --profile bullseye-torch1.8" in lines[0], lines[0]
    assert (root / "model" / "model.ts").read_bytes() == before


@pytest.mark.parametrize("name", CASES)
def test_dicom_has_ct_image_iod_attributes(name: str) -> None:
    for series in _series(name).values():
        for path, ds in series:
            assert ds.SOPClassUID == pydicom.uid.CTImageStorage, path
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID, path
            for module, keywords in TYPE_1.items():
                for keyword in keywords:
                    present = keyword in ds and ds[keyword].value not in (None, "")
                    assert present, f"{path}: {module} {keyword}"
            for module, keywords in TYPE_2.items():
                for keyword in keywords:
                    assert keyword in ds, f"{path}: {module} {keyword}"
            assert ds.Modality == "CT" and ds.PhotometricInterpretation == "MONOCHROME2", path
            assert len(ds.PixelData) == ds.Rows * ds.Columns * 2, path


@pytest.mark.skipif(shutil.which("dciodvfy") is None and not IN_CI, reason="dciodvfy missing: nox -s prepare")
@pytest.mark.parametrize("name", CASES)
def test_dciodvfy_reports_no_error(name: str) -> None:
    files = [path for series in _series(name).values() for path, _ in series]
    for path in files[:3] + files[-3:]:
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        problems = [line for line in (result.stdout + result.stderr).splitlines()
                    if line.startswith(("Error", "Warning"))]
        assert problems == [], f"{path}: {problems}"


@pytest.mark.parametrize("name", CASES)
def test_axial_series_geometry_is_consistent(name: str) -> None:
    series = _axial(name)
    case = _case_toml(name)["input"]
    assert len(series) == case["slices"] >= 64
    first = series[0][1]
    orientation = np.array([float(v) for v in first.ImageOrientationPatient])
    row, col = orientation[:3], orientation[3:]
    assert np.allclose([np.linalg.norm(row), np.linalg.norm(col)], 1.0, atol=1e-5)
    assert abs(float(row @ col)) < 1e-5
    normal = np.cross(row, col)
    distances = []
    for _, ds in series:
        assert np.allclose([float(v) for v in ds.ImageOrientationPatient], orientation), ds.InstanceNumber
        assert [float(v) for v in ds.PixelSpacing] == [case["pixel_spacing_mm"]] * 2
        assert float(ds.SliceThickness) == case["slice_spacing_mm"]
        assert (ds.Rows, ds.Columns) == (first.Rows, first.Columns) and min(ds.Rows, ds.Columns) >= 128
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
        distances.append(float(normal @ np.array([float(v) for v in ds.ImagePositionPatient])))
    steps = np.diff(np.sort(distances))
    assert np.allclose(steps, case["slice_spacing_mm"], atol=1e-4)
    in_slice_order = sorted(series, key=lambda item: float(normal @ np.array(
        [float(v) for v in item[1].ImagePositionPatient])))
    assert [p.name for p, _ in series] != [p.name for p, _ in in_slice_order], "file names follow slice order"
    assert len({ds.StudyInstanceUID for _, ds in series}) == 1


def test_two_series_case_has_a_localizer_beside_the_axial_series() -> None:
    groups = _series("two-series")
    assert len(groups) == 2
    axial_uid = _case_toml("two-series")["input"]["expected_series_instance_uid"]
    (localizer,) = [items for uid, items in groups.items() if uid != axial_uid]
    assert all(list(ds.ImageType)[2] == "LOCALIZER" for _, ds in localizer)
    assert all(list(ds.ImageType)[2] == "AXIAL" for _, ds in groups[axial_uid])
    assert len({ds.StudyInstanceUID for items in groups.values() for _, ds in items}) == 1


@pytest.mark.parametrize("name", CASES)
def test_ground_truth_lies_on_the_dicom_grid(name: str) -> None:
    """Axis order (column, row, slice) with slices by ascending normal position; RAS affine from DICOM."""
    series = _axial(name)
    orientation = np.array([float(v) for v in series[0][1].ImageOrientationPatient])
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    ordered = sorted((ds for _, ds in series), key=lambda ds: float(normal @ np.array(
        [float(v) for v in ds.ImagePositionPatient])))
    first, last = (np.array([float(v) for v in ds.ImagePositionPatient]) for ds in (ordered[0], ordered[-1]))
    spacing = [float(v) for v in ordered[0].PixelSpacing]
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = row * spacing[1], col * spacing[0]
    lps[:3, 2], lps[:3, 3] = (last - first) / (len(ordered) - 1), first
    truth = nib.load(_case_dir(name) / "reference" / "ground_truth.nii.gz")
    assert truth.shape == (ordered[0].Columns, ordered[0].Rows, len(ordered))
    assert truth.get_data_dtype() == np.uint8
    assert np.allclose(truth.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, atol=1e-4)
    labels = sorted(int(v) for v in np.unique(np.asanyarray(truth.dataobj)) if v)
    assert labels == _case_toml(name)["labels"] and len(labels) >= 5


# Each app's fixture tree stays a few MB: the repository's own app with its three 128x128x64 cases (6.4 MiB
# as committed), every other app with two small cases (about 1.2 MiB each as committed).
MAIN_APP_MIB, OTHER_APP_MIB = 7.0, 1.5


def _mib(folder: Path) -> float:
    caches = {"__pycache__", ".ruff_cache"}
    files = (p for p in folder.rglob("*") if p.is_file() and not caches & set(p.parts))
    return sum(p.stat().st_size for p in files) / 2**20


def test_committed_fixtures_are_small() -> None:
    """A budget per app, so that adding an app to the fixtures is a decision, not a drift."""
    assert _mib(FIXTURES_DIR / "cases") + _mib(FIXTURES_DIR / "model") < MAIN_APP_MIB
    others = [folder for folder in FIXTURES_DIR.iterdir() if (folder / "app.toml").is_file()]
    assert others, "no app fixture found beside the repository's own"
    over = {folder.name: round(_mib(folder), 2) for folder in others if _mib(folder) >= OTHER_APP_MIB}
    assert not over, f"app fixtures over {OTHER_APP_MIB} MiB: {over}"
    assert (FIXTURES_DIR / "model" / "model.ts").stat().st_size < 5 * 2**20


def _within_ground_truth_limits(mask: Path, name: str) -> list[str]:
    """The failed ground-truth checks of a mask, under the case's own limits, by the gate's code."""
    case = _case_toml(name)
    tolerances = case["tolerances"]["ground_truth"]
    truth = _case_dir(name) / "reference" / "ground_truth.nii.gz"
    _, outcomes = compare.gate(mask, truth, tolerances, labels=case["labels"])
    return [f"{o.name}: {o.reason}" for o in outcomes if not o.passed]


@pytest.mark.parametrize("name", CASES)
def test_golden_is_within_its_measured_ground_truth_limits(name: str) -> None:
    """The limits in case.toml are the golden's measurement plus the margins, and it meets them."""
    case = _case_toml(name)
    tolerances = case["tolerances"]["ground_truth"]
    golden = _case_dir(name) / "reference" / "golden.nii.gz"
    truth = _case_dir(name) / "reference" / "ground_truth.nii.gz"
    measured = limits.measure(golden, truth, case["labels"], tolerances["nsd_tolerance_mm"])
    margins = load_config()["ground_truth_margins"]
    assert {key: tolerances[key] for key in limits.LIMIT_RULES} == limits.derive(measured, margins)
    assert _within_ground_truth_limits(golden, name) == []


@pytest.mark.parametrize("direction", [1, -1], ids=["up", "down"])
@pytest.mark.parametrize("name", CASES)
def test_a_one_slice_shift_fails_dice_hd95_and_nsd_each(name: str, direction: int, tmp_path: Path) -> None:
    """The ground-truth limits are tight enough that a mask one slice off fails on each metric alone."""
    golden = nib.load(_case_dir(name) / "reference" / "golden.nii.gz")
    slice_axis = int(np.argmax(golden.header.get_zooms()[:3]))
    shifted = np.roll(np.asanyarray(golden.dataobj), direction, axis=slice_axis)
    moved = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(shifted, golden.affine, golden.header), moved)
    failed = {failure.split("[")[0] for failure in _within_ground_truth_limits(moved, name)}
    assert {"dice", "hd95", "nsd"} <= failed, failed


@pytest.mark.slow
@pytest.mark.skipif(not APP_PRESENT, reason="app/ not present")
@pytest.mark.parametrize("name", CASES)
def test_app_segments_every_organ(name: str, tmp_path: Path) -> None:
    """Runs the app CLI on the host: within the case's ground-truth limits, and the golden reproduces."""
    case_dir = _case_dir(name)
    mask = generate.run_app(case_dir / "dicom", FIXTURES_DIR / "model" / "model.ts", tmp_path, 600)
    assert _within_ground_truth_limits(mask, name) == []
    assert generate.same_content(mask, case_dir / "reference" / "golden.nii.gz"), "golden is stale"


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.skipif(not APP_PRESENT, reason="app/ not present")
def test_check_names_each_modified_file(
    torch18_image: BuildRecord,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--check regenerates (the model's export in the torch-1.8 image and the app included): the export
    is byte-identical to the committed model.ts, and it names a model that is not that export, a
    corrupted golden and an altered DICOM file."""
    exported: list[bytes] = []

    def write_model(config: dict, path: Path, export_image: str | None = None) -> str:
        digest = real_write_model(config, path, export_image)
        exported.append(path.read_bytes())
        return digest

    real_write_model = generate.write_model
    monkeypatch.setattr(generate, "write_model", write_model)
    root = tmp_path / "fixtures"
    shutil.copytree(FIXTURES_DIR / "model", root / "model")
    shutil.copytree(_case_dir("standard"), root / "cases" / "standard")
    golden = root / "cases" / "standard" / "reference" / "golden.nii.gz"
    data = bytearray(golden.read_bytes())
    data[len(data) // 2] ^= 0xFF
    golden.write_bytes(bytes(data))
    dicom = sorted((root / "cases" / "standard" / "dicom").iterdir())[5]
    data = bytearray(dicom.read_bytes())
    data[-100] ^= 0x01  # one pixel value
    dicom.write_bytes(bytes(data))
    # the same network scripted by the host's torch: it computes the same, but is not the torch-1.8 export
    torch.jit.script(build_network(load_config())).save(str(root / "model" / "model.ts"))

    args = ["--check", "--root", str(root), "--case", "standard", "--export-image", torch18_image.image_id]
    assert generate.main(args) == 1
    err = capsys.readouterr().err
    assert "model/model.ts (differs)" in err
    assert "cases/standard/reference/golden.nii.gz (differs)" in err
    assert f"cases/standard/dicom/{dicom.name} (differs)" in err
    assert "3 file(s) differ" in err
    assert exported == [MODEL_FILE.read_bytes()], "the export is not the committed model.ts, byte for byte"


def test_content_comparison_ignores_meaningless_differences(tmp_path: Path) -> None:
    """Same DICOM dataset written with another implementation version, same NIfTI recompressed: equal."""
    source = sorted((_case_dir("standard") / "dicom").iterdir())[0]
    dataset = pydicom.dcmread(source)
    dataset.file_meta.ImplementationVersionName = "OTHER"
    copy = tmp_path / source.name
    dataset.save_as(copy, enforce_file_format=True)
    assert copy.read_bytes() != source.read_bytes() and generate.same_content(source, copy)
    truth = _case_dir("standard") / "reference" / "ground_truth.nii.gz"
    image = nib.load(truth)
    again = tmp_path / "truth.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine, image.header), again)
    assert generate.same_content(truth, again)
    labels = np.asanyarray(image.dataobj).copy()
    labels[labels == 6] = 7
    nib.save(nib.Nifti1Image(labels, image.affine, image.header), again)
    assert not generate.same_content(truth, again)
