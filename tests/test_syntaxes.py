"""Every transfer syntax of fixtures/syntaxes.toml decodes on the host and in both profiles' arm64 images
(bookworm: pydicom 3; bullseye-torch1.8: pydicom 2.4 and its pixel data handlers), with the same masks.

The series are written at test time (fixtures/syntaxes.py) from a small copy of the committed standard
phantom (every second row, column and slice), by pydicom's encoders or by dcmtk, an encoder independent of
the decoders under test. dcmtk missing skips the syntaxes it writes on a laptop, and fails them in CI.

Lossless syntaxes must give exactly the mask of the uncompressed series. Lossy syntaxes (JPEG baseline and
extended, JPEG-LS near-lossless, JPEG 2000 lossy) change pixel values, so their masks need not equal the
uncompressed one: for them "identical" means the image's mask equals the host's mask for the same lossy
input, which proves both decode the same pixels.

A syntax the installation cannot decode must end the run before any pixel is decoded, with one line naming
the file, the syntax and the missing decoder; the pydicom 2 form of that check runs in the torch-1.8 image.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from fixtures.header_suite import dicom_files, small_series
from fixtures.syntaxes import EncoderMissing, Syntax, eight_bit_copy, load_syntaxes, write_series
from tests.conftest import IN_CI
from tests.test_app import MODEL, AppRun, assert_one_line_failure, assert_succeeded, case_dicom, run_app
from validation import contract, engine, run
from validation.build import BuildRecord

APP = contract.load()

SYNTAXES = load_syntaxes()
BY_NAME = {syntax.name: syntax for syntax in SYNTAXES}
REFERENCE = "explicit-vr-little-endian"
CONTAINER_TIMEOUT_S = 900  # a bound against hangs only; a small case takes about 30 s under QEMU
PRIVATE_SYNTAX = "1.2.826.0.1.3680043.9.9999.1"
# Each profile's image, by the session fixture that builds it (tests/conftest.py): bookworm has pydicom 3,
# bullseye-torch1.8 pydicom 2.4 with its pixel data handlers.
PROFILE_IMAGES = {"bookworm": "built_image", "bullseye-torch1.8": "torch18_image"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("syntaxes")


@pytest.fixture(scope="module")
def sources(workspace: Path) -> dict[str, Path]:
    small_series(case_dicom("standard"), workspace / "source-ct12")
    eight_bit_copy(workspace / "source-ct12", workspace / "source-ct8")
    return {"ct12": workspace / "source-ct12", "ct8": workspace / "source-ct8"}


@pytest.fixture(scope="module")
def encoded(sources: dict[str, Path], workspace: Path) -> Callable[[Syntax], Path]:
    """The series in a syntax, written once; a missing encoder skips (fails under CI=true)."""
    done: dict[str, Path | str] = {}

    def get(syntax: Syntax) -> Path:
        if syntax.name not in done:
            try:
                write_series(syntax, sources, workspace / "input" / syntax.name)
                done[syntax.name] = workspace / "input" / syntax.name
            except EncoderMissing as error:
                done[syntax.name] = str(error)
        found = done[syntax.name]
        if isinstance(found, str):
            if IN_CI:
                pytest.fail(f"CI=true and the encoder for {syntax.name} is missing: {found}", pytrace=False)
            pytest.skip(found)
        return found

    return get


@pytest.fixture(scope="module")
def host_runs(encoded: Callable[[Syntax], Path], workspace: Path) -> Callable[[Syntax], AppRun]:
    done: dict[str, AppRun] = {}

    def get(syntax: Syntax) -> AppRun:
        if syntax.name not in done:
            done[syntax.name] = run_app(encoded(syntax), workspace / "host" / syntax.name, form="path")
        return done[syntax.name]

    return get


def _mask(output: Path) -> nib.Nifti1Image:
    return nib.load(output / "mask.nii.gz")


def test_series_are_written_in_their_syntax(encoded: Callable[[Syntax], Path]) -> None:
    """The fixtures really are what they claim: each file's transfer syntax, lossy ones really lossy."""
    reference = [pydicom.dcmread(path).pixel_array for path in dicom_files(encoded(BY_NAME[REFERENCE]))]
    for syntax in SYNTAXES:
        files = dicom_files(encoded(syntax))
        assert len(files) == len(reference)
        assert {pydicom.dcmread(path).file_meta.TransferSyntaxUID for path in files} == {syntax.uid}
        if syntax.source == "ct12":
            pixels = [pydicom.dcmread(path).pixel_array for path in files]
            identical = all(np.array_equal(a, b) for a, b in zip(pixels, reference, strict=True))
            assert identical != syntax.lossy, f"{syntax.name}: lossy={syntax.lossy} but identical={identical}"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BY_NAME))
def test_host_decodes(name: str, host_runs: Callable[[Syntax], AppRun]) -> None:
    result = host_runs(BY_NAME[name])
    assert_succeeded(result)
    mask = np.asarray(_mask(result.output).dataobj)
    assert mask.any()
    if not BY_NAME[name].lossy:
        reference = np.asarray(_mask(host_runs(BY_NAME[REFERENCE]).output).dataobj)
        np.testing.assert_array_equal(mask, reference, err_msg=f"{name} is lossless: same mask required")


@pytest.fixture(scope="module")
def all_encoded(encoded: Callable[[Syntax], Path]) -> dict[str, Path | str]:
    """Every syntax's series, or why it is missing (a skip on a laptop without dcmtk)."""
    inputs: dict[str, Path | str] = {}
    for syntax in SYNTAXES:
        try:
            inputs[syntax.name] = encoded(syntax)
        except pytest.skip.Exception as skipped:
            inputs[syntax.name] = str(skipped)
    return inputs


@pytest.fixture(scope="module", params=list(PROFILE_IMAGES))
def image_runs(
    request: pytest.FixtureRequest, all_encoded: dict[str, Path | str], workspace: Path
) -> dict[str, run.RunResult | str]:
    """Every syntax's series through one profile's arm64 image, two at a time (the engine is shared)."""
    image: BuildRecord = request.getfixturevalue(PROFILE_IMAGES[request.param])
    (workspace / request.param).mkdir(exist_ok=True)

    def one(name: str) -> run.RunResult | str:
        source = all_encoded[name]
        if isinstance(source, str):
            return source
        output = run.writable_output_dir(workspace / request.param, name)
        return run.run_container(image.image_id, APP, source, MODEL, output, CONTAINER_TIMEOUT_S)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(all_encoded, pool.map(one, all_encoded), strict=True))


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("name", list(BY_NAME))
def test_image_mask_equals_host_mask(
    name: str, image_runs: dict[str, run.RunResult | str], host_runs: Callable[[Syntax], AppRun]
) -> None:
    result = image_runs[name]
    if isinstance(result, str):
        pytest.skip(result)
    assert result.ok, result.failure()
    host = host_runs(BY_NAME[name])
    assert_succeeded(host)
    image_mask, host_mask = _mask(result.output_dir), _mask(host.output)
    np.testing.assert_allclose(image_mask.affine, host_mask.affine, atol=1e-4)
    np.testing.assert_array_equal(
        np.asarray(image_mask.dataobj), np.asarray(host_mask.dataobj), err_msg=f"{name}: image != host"
    )


# Run by python3 in the torch-1.8 image (pydicom 2.4) as `-c SCRIPT SCENARIO APP_DIR`: the app's decoder check
# on every series under /series, in one of three installations: "as-built"; "without-pylibjpeg" (pylibjpeg and
# the other optional decoders hidden: Pillow alone, as the profile was before); "without-libjpeg-plugin"
# (pylibjpeg present, its libjpeg plugin missing). As built it also hashes the decoded pixels.
CHECK_SCRIPT = r"""
import hashlib, json, pathlib, sys
scenario, app_dir = sys.argv[1], sys.argv[2]
if scenario == "without-pylibjpeg":
    for module in ("pylibjpeg", "libjpeg", "openjpeg", "rle", "gdcm", "jpeg_ls"):
        sys.modules[module] = None
sys.path.insert(0, app_dir)
import pydicom
if scenario == "without-libjpeg-plugin":
    from pydicom.pixel_data_handlers import pylibjpeg_handler
    for uid in pylibjpeg_handler._LIBJPEG_SYNTAXES:
        pylibjpeg_handler._DECODERS.pop(uid, None)
from input_checks import AppInputError
from series_checks import check_decodable
found = {"pydicom": pydicom.__version__, "refused": {}, "pixels": {}}
for folder in sorted(pathlib.Path("/series").iterdir()):
    datasets = [pydicom.dcmread(path) for path in sorted(folder.iterdir())]
    try:
        check_decodable(datasets, folder.name)
    except AppInputError as error:
        found["refused"][folder.name] = str(error)
        continue
    if scenario == "as-built":
        digest = hashlib.sha256()
        for dataset in datasets:
            pixels = dataset.pixel_array
            digest.update(pixels.dtype.str.encode() + pixels.tobytes())
        found["pixels"][folder.name] = digest.hexdigest()
print("DECODER-CHECK " + json.dumps(found))
"""
SCENARIOS = ("as-built", "without-pylibjpeg", "without-libjpeg-plugin")
# pydicom 2.4 decodes these only through pylibjpeg-libjpeg (its Pillow handler decodes 8-bit JPEG only).
NEEDS_LIBJPEG = (
    "jpeg-extended", "jpeg-lossless", "jpeg-lossless-sv1", "jpeg-ls-lossless", "jpeg-ls-near-lossless"
)


def _host_pixel_digest(folder: Path) -> str:
    """The series' pixels as CHECK_SCRIPT hashes them, decoded by the host's pydicom 3."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        pixels = pydicom.dcmread(path).pixel_array
        digest.update(pixels.dtype.str.encode() + pixels.tobytes())
    return digest.hexdigest()


def _check_in_image(image: str, series: Path, scenario: str) -> dict:
    name = f"{run.CONTAINER_PREFIX}decoders-{uuid.uuid4().hex[:12]}"
    options = ["--platform", "linux/arm64", "--network", "none", "--read-only", "--tmpfs", "/tmp",
               "-v", f"{series}:/series:ro", "--entrypoint", "python3"]  # fmt: skip
    argv = engine.run_argv(name, options, image, ["-c", CHECK_SCRIPT, scenario, APP.install_dir])
    with engine.container(argv, "the decoder check container did not start") as container_id:
        waited = engine.wait_for(name, container_id, CONTAINER_TIMEOUT_S)
        logs = engine.logs(name)
    assert waited.exit_code == 0, f"{scenario}: exit {waited.exit_code} {waited.error}: {logs[-2000:]}"
    line = next(line for line in logs.splitlines() if line.startswith("DECODER-CHECK "))
    return json.loads(line.removeprefix("DECODER-CHECK "))


@pytest.fixture(scope="module")
def torch18_decoder_check(
    torch18_image: BuildRecord, all_encoded: dict[str, Path | str], workspace: Path
) -> dict[str, dict]:
    """CHECK_SCRIPT's findings per scenario, its containers two at a time (read-only, no network)."""
    missing = {name: why for name, why in all_encoded.items() if isinstance(why, str)}
    if missing:
        pytest.skip(f"series not written: {missing}")
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = pool.map(lambda s: _check_in_image(torch18_image.image_id, workspace / "input", s), SCENARIOS)
        return dict(zip(SCENARIOS, found, strict=True))


@pytest.mark.docker
@pytest.mark.slow
def test_torch18_image_decodes_every_syntax_as_the_host(
    torch18_decoder_check: dict[str, dict], workspace: Path
) -> None:
    """pydicom 2.4 in the image passes the check for every syntax, and decodes every lossless one to the
    pixels pydicom 3 decodes on the host, bit for bit. Lossy decodes may differ by a grey level between
    platforms (the irreversible JPEG 2000 wavelet is floating point): test_image_mask_equals_host_mask
    holds them to the host's mask."""
    built = torch18_decoder_check["as-built"]
    assert built["pydicom"].startswith("2."), built["pydicom"]
    assert built["refused"] == {}
    assert sorted(built["pixels"]) == sorted(BY_NAME)
    lossless = [syntax.name for syntax in SYNTAXES if not syntax.lossy]
    host = {name: _host_pixel_digest(workspace / "input" / name) for name in lossless}
    differing = sorted(name for name in lossless if built["pixels"][name] != host[name])
    assert not differing, f"pydicom 2.4 in the image decodes other pixels than the host for {differing}"


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS[1:])
def test_torch18_check_names_the_missing_decoder(
    scenario: str, torch18_decoder_check: dict[str, dict]
) -> None:
    """Without pylibjpeg-libjpeg, pydicom 2.4 refuses exactly the syntaxes only it decodes (12-bit JPEG
    extended included, although Pillow is installed), each in one line naming the syntax and the plugin."""
    refused = torch18_decoder_check[scenario]["refused"]
    assert sorted(refused) == sorted(NEEDS_LIBJPEG)
    for name, line in refused.items():
        assert "\n" not in line
        assert str(BY_NAME[name].uid) in line and "pylibjpeg-libjpeg" in line and "fix:" in line, line


def _private_syntax_copy(source: Path, target: Path) -> None:
    """The series relabelled with a private transfer syntax UID no decoder knows."""
    target.mkdir(parents=True)
    for path in dicom_files(source):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = PRIVATE_SYNTAX
        ds.save_as(target / path.name, implicit_vr=False, little_endian=True)


def _assert_stopped_before_decoding(stdout: str) -> None:
    assert "Executing operator CTAxialSeriesSelectorOperator" in stdout
    assert "DICOMSeriesToVolumeOperator" not in stdout, "the run went on to decode pixels"


@pytest.mark.slow
def test_missing_decoder_is_named_before_decoding(
    encoded: Callable[[Syntax], Path], tmp_path: Path
) -> None:
    """JPEG lossless SV1 with pylibjpeg hidden (as on an installation without it): one line, no inference."""
    series = encoded(BY_NAME["jpeg-lossless-sv1"])
    shadow = tmp_path / "shadow"
    for module in ("pylibjpeg", "libjpeg", "gdcm"):
        (shadow / module).mkdir(parents=True)
        (shadow / module / "__init__.py").write_text(f"raise ImportError('{module} hidden by the test')\n")
    result = run_app(series, tmp_path / "out", form="path", env={"PYTHONPATH": str(shadow)})
    assert result.returncode == 2
    assert_one_line_failure(
        result, str(series), "JPEG Lossless", "1.2.840.10008.1.2.4.70", "pylibjpeg-libjpeg", "fix:"
    )
    _assert_stopped_before_decoding(result.stdout)


@pytest.mark.slow
def test_unknown_syntax_is_named_before_decoding(sources: dict[str, Path], tmp_path: Path) -> None:
    _private_syntax_copy(sources["ct12"], tmp_path / "private")
    result = run_app(tmp_path / "private", tmp_path / "out", form="path")
    assert result.returncode == 2
    assert_one_line_failure(result, str(tmp_path / "private"), PRIVATE_SYNTAX, "no decoder", "fix:")
    _assert_stopped_before_decoding(result.stdout)


@pytest.mark.docker
@pytest.mark.slow
def test_unknown_syntax_is_named_in_the_image(
    built_image: BuildRecord, sources: dict[str, Path], tmp_path: Path
) -> None:
    _private_syntax_copy(sources["ct12"], tmp_path / "private")
    output = run.writable_output_dir(tmp_path, "out")
    result = run.run_container(
        built_image.image_id, APP, tmp_path / "private", MODEL, output, CONTAINER_TIMEOUT_S
    )
    assert result.exit_code == 2, result.logs[-2000:]
    last = [line for line in result.logs.splitlines() if line.strip()][-1]
    assert "multiorgan-seg: error:" in last and PRIVATE_SYNTAX in last and "no decoder" in last
    _assert_stopped_before_decoding(result.logs)
    assert not (output / "mask.nii.gz").exists()
    shutil.rmtree(tmp_path / "private")
