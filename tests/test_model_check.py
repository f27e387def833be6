"""The model check: the image's torch loads the model and runs one forward before any case runs.

A Conv3d network scripted by the host's torch 2 is refused by torch 1.8.1 (the torch-1.x profile)
with one line naming the archive and the image's torch, and taken by the default profile's torch.
The fixture model, an ordinary Conv3d network exported by torch 1.8.1, is taken by both.

A MONAI Bundle model of an app built on the SDK's MonaiBundleInferenceOperator is also read by that
operator's own code in the image: a Bundle exported the normal way (MONAI's metadata reading and
torchscript saver) is refused on bookworm (SDK 0.5.1, MONAI 1.6.1: the metadata key rename), the bundle
app's fixture Bundle on the torch-1.8 profile (the operator's torch floor), each in one line.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.conftest import BUNDLE_CONTRACT, TORCH18_PROFILE, run_gate
from validation import bundle_model, contract, lock, model_check
from validation.build import BuildRecord
from validation.errors import GateError

APP = contract.load()
BUNDLE_APP = contract.load(BUNDLE_CONTRACT)
BUNDLE_MOUNT = BUNDLE_APP.mounts.model
SHAPE_64 = (1, 1, 64, 64, 64)


class TwoConvNet(torch.nn.Module):
    """An ordinary network with the app's contract: 1 channel in, 14 logits out."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Conv3d(1, 4, 3, padding=1)
        self.head = torch.nn.Conv3d(4, 14, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.features(x)))


@pytest.fixture(scope="module")
def host_conv_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scripted and saved by the host's torch (2.x), as a team on a current stack would (any file name)."""
    path = tmp_path_factory.mktemp("host-model") / "conv3d-torch2.pt"
    torch.jit.script(TwoConvNet().eval()).save(str(path))
    return path


@pytest.mark.slow
def test_archive_facts_name_format_and_writer(host_conv_model: Path) -> None:
    facts = model_check.archive_facts(host_conv_model)
    with zipfile.ZipFile(host_conv_model) as archive:
        declared = next(archive.read(n) for n in archive.namelist() if n.endswith("/version")).decode()
    assert facts.file_format == declared.strip()
    assert "newer than 1.8" in facts.describe() and "serialization_id" in facts.describe()


def test_a_file_that_is_no_archive_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "model.ts"
    bogus.write_text("not a model\n")
    with pytest.raises(GateError, match=rf"{bogus}: not a TorchScript archive"):
        model_check.archive_facts(bogus)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("output", "exit_code", "expected"),
    [
        (
            "ARMGATE_TORCH 1.8.1\nterminate called after throwing an instance of 'c10::Error'\n"
            "  what():  isTuple() INTERNAL ASSERT FAILED at ivalue_inl.h:1101. "
            "Expected Tuple but got String\n"
            "frame #0: c10::Error::Error\nqemu: uncaught target signal 6 (Aborted) - core dumped\n",
            134,
            r"torch 1\.8\.1: the process aborted \(SIGABRT\): isTuple\(\) INTERNAL ASSERT.*got String;",
        ),
        (
            'ARMGATE_TORCH 1.8.1\nARMGATE_MODEL_CHECK {"ok": false, "stage": "load", "torch": "1.8.1", '
            '"error": "RuntimeError: Unknown type name \'NoneType\'"}\n',
            1,
            r"torch 1\.8\.1: load failed: RuntimeError: Unknown type name 'NoneType'",
        ),
        ("ARMGATE_TORCH 1.8.1\n", None, r"torch 1\.8\.1: no answer within"),
    ],
    ids=["abort", "load-error", "timeout"],
)
def test_verdict_is_one_line_naming_archive_and_torch(
    host_conv_model: Path, output: str, exit_code: int | None, expected: str
) -> None:
    facts = model_check.archive_facts(host_conv_model)
    check = model_check._verdict(
        host_conv_model, facts, output, exit_code, 1.0, APP.model_input_shape, None, APP.mounts.model
    )
    assert not check.ok and "\n" not in check.line
    assert f"TorchScript file format {facts.file_format}" in check.line
    assert re.search(expected, check.line), check.line


@pytest.mark.slow
def test_only_a_pass_is_remembered(
    host_conv_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure is never cached; a pass is, per image id and model hash; a foreign image is not probed."""
    monkeypatch.setattr(lock, "CACHE", tmp_path)
    monkeypatch.setattr(model_check, "_image_identity", lambda image: ("sha256:0123abcd", "linux/arm64"))
    verdicts = iter([
        model_check.ModelCheck(False, "1.8.1", "model check: refused", 1.0),
        model_check.ModelCheck(True, "1.8.1", "model check: loads", 1.0, (1, 14, 96, 96, 96)),
    ])  # fmt: skip
    monkeypatch.setattr(model_check, "check_model", lambda *args: next(verdicts))
    with pytest.raises(GateError, match="model check: refused"):
        model_check.require_usable_model("img", host_conv_model, APP)
    assert not list(tmp_path.rglob("*.json"))
    assert model_check.require_usable_model("img", host_conv_model, APP).line == "model check: loads"
    remembered = model_check.require_usable_model("img", host_conv_model, APP)  # the iterator is exhausted
    assert remembered is not None and remembered.ok and remembered.torch == "1.8.1"
    monkeypatch.setattr(model_check, "_image_identity", lambda image: ("sha256:ffff", "linux/amd64"))
    assert model_check.require_usable_model("img", host_conv_model, APP) is None


@pytest.mark.slow
def test_a_timed_check_is_remembered_for_the_gates_after_it(
    host_conv_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bench times the check itself, then gates: one emulated check in all, not one more untimed."""
    monkeypatch.setattr(lock, "CACHE", tmp_path)
    monkeypatch.setattr(model_check, "_image_identity", lambda image: ("sha256:0123abcd", "linux/arm64"))
    probes: list[str] = []

    def check_model(image: str, *args: object) -> model_check.ModelCheck:
        probes.append(image)
        return model_check.ModelCheck(True, "2.10.0", "model check: loads", 9.0, (1, 14, 96, 96, 96))

    monkeypatch.setattr(model_check, "check_model", check_model)
    assert model_check.check_and_remember("img", host_conv_model, APP).seconds == 9.0
    assert model_check.require_usable_model("img", host_conv_model, APP).line == "model check: loads"
    assert probes == ["img"]


@pytest.mark.docker
@pytest.mark.slow
def test_host_conv_model_fails_the_check_on_torch18(
    torch18_image: BuildRecord, host_conv_model: Path, tmp_path: Path
) -> None:
    """Through the gate's command: exit 2 before any case, one stderr line, no container left."""
    result = run_gate([
        "--profile", TORCH18_PROFILE, "--image", torch18_image.image_id, "--model", str(host_conv_model),
        "--reports", str(tmp_path / "acceptance"), "--no-host",
    ])  # fmt: skip  (run_gate: none of the gate's containers, the model check's included, is left)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    line = lines[0]
    assert line.startswith("armgate: model check: ") and str(host_conv_model) in line, line
    assert "TorchScript file format" in line and "image's torch 1.8.1" in line, line
    # refused by torch 1.8.1's reader itself (an exception or an abort), not for a missing file
    assert "load failed: RuntimeError" in line or "the process aborted" in line, line
    assert not (tmp_path / "acceptance" / "cases").exists(), "a case ran before the model check"


@pytest.mark.docker
@pytest.mark.slow
def test_host_conv_model_passes_the_check_on_bookworm(
    built_image: BuildRecord, host_conv_model: Path
) -> None:
    check = model_check.check_model(built_image.image_id, host_conv_model, APP)
    assert check.ok, check.line
    assert check.torch.startswith("2.") and check.output_shape == (1, 14, 96, 96, 96)


@pytest.mark.docker
@pytest.mark.slow
def test_fixture_model_passes_the_check_on_torch18(torch18_image: BuildRecord) -> None:
    check = model_check.check_model(torch18_image.image_id, APP.default_model, APP)
    assert check.ok, check.line
    assert check.torch == "1.8.1" and check.output_shape == (1, 14, 96, 96, 96)
    assert "no newer-torch records" in check.line, check.line  # written by torch 1.8.1 itself


@pytest.mark.docker
@pytest.mark.slow
def test_fixture_model_passes_the_check_on_bookworm(built_image: BuildRecord) -> None:
    """The same file, written by torch 1.8.1, in the default profile's torch 2."""
    check = model_check.check_model(built_image.image_id, APP.default_model, APP)
    assert check.ok, check.line
    assert check.torch.startswith("2.") and check.output_shape == (1, 14, 96, 96, 96)


# ---- MONAI Bundle models ------------------------------------------------------------------------

BUNDLE_MODEL = BUNDLE_APP.default_model


def _normal_export(folder: Path) -> Path:
    """The bundle app's network exported as MONAI's ckpt_export does it: the metadata read by MONAI's
    ConfigParser (which, from MONAI 1.4 on, renames optional_packages_version), saved with MONAI's
    save_net_with_metadata beside the bundle's inference.json as it is (no `_meta_`)."""
    from monai.bundle import ConfigParser
    from monai.data import save_net_with_metadata

    with zipfile.ZipFile(BUNDLE_MODEL) as archive:
        metadata = json.loads(archive.read("model/extra/metadata.json"))
        config = json.loads(archive.read("model/extra/inference.json"))
    config.pop("_meta_")
    parser = ConfigParser()
    parser.read_meta(f=metadata)
    network = torch.jit.load(str(BUNDLE_MODEL), map_location="cpu")
    folder.mkdir(parents=True, exist_ok=True)
    save_net_with_metadata(network, str(folder / "model"), meta_values=parser.get("_meta_"),
                           more_extra_files={"inference.json": json.dumps(config).encode()})
    return folder / "model.ts"


@pytest.fixture(scope="module")
def normal_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _normal_export(tmp_path_factory.mktemp("normal-bundle"))


def _probe_on_host(model: Path, app: contract.AppContract, prelude: str = "") -> model_check.ModelCheck:
    """The model check's probe (the SDK operator's own code included) run by this interpreter on the
    file where it lies: what the image runs, on the host's SDK 0.5.1 and MONAI 1.6.1, without Docker.
    `prelude` runs first, to make the host look like another stack."""
    app = replace(app, mounts=replace(app.mounts, model=str(model)))
    bundle = model_check.bundle_check(model, app)
    script = prelude + model_check.probe_script(app, bundle)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          check=False)
    facts = model_check.archive_facts(model)
    shape = app.model_input_shape
    return model_check._verdict(model, facts, done.stdout, done.returncode, 1.0, shape, bundle, str(model))


@pytest.mark.slow
def test_a_bundle_is_recognised_by_its_metadata(host_conv_model: Path) -> None:
    facts = bundle_model.bundle_facts(BUNDLE_MODEL)
    assert facts is not None and facts.root == "model" and facts.output_channels == 3
    assert facts.io_format("inputs")["num_channels"] == 1 and "nibabel" in facts.packages
    assert "MONAI Bundle" in facts.describe() and "1 -> 3 channels" in facts.describe()
    assert bundle_model.bundle_facts(host_conv_model) is None
    assert bundle_model.bundle_facts(APP.default_model) is None


def test_only_an_app_importing_the_sdk_bundle_operator_needs_it(tmp_path: Path) -> None:
    assert bundle_model.uses_sdk_bundle_operator(BUNDLE_APP.source)
    assert not bundle_model.uses_sdk_bundle_operator(APP.source)
    mention = '"""Not built on MonaiBundleInferenceOperator."""\n# MonaiBundleInferenceOperator\n'
    (tmp_path / "said.py").write_text(mention)
    assert not bundle_model.uses_sdk_bundle_operator(tmp_path)
    (tmp_path / "uses.py").write_text("from monai.deploy.operators import MonaiBundleInferenceOperator\n")
    assert bundle_model.uses_sdk_bundle_operator(tmp_path)


def test_a_plain_torchscript_for_an_app_on_the_bundle_operator_is_refused_before_the_image() -> None:
    """The operator would fail every case with `Invalid suffix 'yml'`; the gate says why, once, first."""
    for check in (model_check.bundle_check, model_check.require_usable_model):
        with pytest.raises(GateError) as error:
            if check is model_check.bundle_check:
                check(APP.default_model, BUNDLE_APP)
            else:  # before it asks the engine about the image (there is none by this name)
                check("armgate/no-such-image:never", APP.default_model, BUNDLE_APP)
        message = str(error.value)
        assert message.startswith(f"model check: {APP.default_model} is a plain TorchScript (no ")
        assert "uses the SDK's MonaiBundleInferenceOperator, which reads a MONAI Bundle" in message
    assert model_check.bundle_check(APP.default_model, APP) is None  # an app that needs none


@pytest.mark.slow  # the probe runs torch and the SDK on the host
def test_the_bundle_apps_model_is_read_by_the_sdk_operator() -> None:
    """The fixture Bundle carries its metadata under `_meta_` in inference.json too: SDK 0.5.1 reads it
    on MONAI 1.6.1, and the check says so."""
    check = _probe_on_host(BUNDLE_MODEL, BUNDLE_APP)
    assert check.ok, check.line
    assert check.output_shape == (1, 3, 64, 64, 64) and "SDK bundle operator reads its configs" in check.line


@pytest.mark.slow  # the probe runs torch and the SDK on the host
def test_a_normally_exported_bundle_is_refused_naming_the_key_rename(normal_bundle: Path) -> None:
    with zipfile.ZipFile(normal_bundle) as archive:
        keys = json.loads(archive.read("model/extra/metadata.json"))
    assert "required_packages_version" in keys and "optional_packages_version" not in keys  # MONAI renamed it
    check = _probe_on_host(normal_bundle, BUNDLE_APP)
    assert not check.ok and "\n" not in check.line
    assert "monai-deploy-app-sdk 0.5.1 bundle operator with MONAI 1.6.1" in check.line, check.line
    assert "KeyError: 'optional_packages_version'" in check.line, check.line
    assert "reads the metadata key 'optional_packages_version' as 'required_packages_version'" in check.line
    # the same file is fine for an app that does not read it through the SDK's operator
    assert _probe_on_host(normal_bundle, APP).ok


@pytest.mark.slow  # the probe runs torch and the SDK on the host
def test_the_operators_torch_floor_is_its_own_optional_import() -> None:
    """A torch that says 1.8.1 makes the SDK's own optional_import("torch", "1.10.2") fail; a package the
    operator imports but never uses (nibabel, hidden here) is no reason to refuse, only a note."""
    old_torch = "import torch\ntorch.__version__ = '1.8.1'\n"
    check = _probe_on_host(BUNDLE_MODEL, BUNDLE_APP, old_torch)
    assert not check.ok and "\n" not in check.line
    assert "loads in torch 1.8.1, but the image's monai-deploy-app-sdk 0.5.1 bundle operator" in check.line
    assert "cannot run: OptionalImportError: import torch (requires 'torch 1.10.2'" in check.line, check.line
    no_nibabel = "import sys\nsys.modules['nibabel'] = None\n"
    check = _probe_on_host(BUNDLE_MODEL, BUNDLE_APP, no_nibabel)
    assert check.ok and "the image's SDK bundle operator reads its configs" in check.line, check.line


def test_metadata_packages_the_image_lacks_are_said_not_failed() -> None:
    facts = model_check.archive_facts(BUNDLE_MODEL)
    bundle = model_check.bundle_check(BUNDLE_MODEL, BUNDLE_APP)
    found = {"ok": True, "failed_imports": [], "missing_packages": ["nibabel"]}
    output = 'ARMGATE_TORCH 2.10.0\nARMGATE_MODEL_CHECK {"ok": true, "output_shape": [1, 3, 64, 64, 64]}\n'
    output += bundle_model.BUNDLE_MARKER + json.dumps(found) + "\n"
    check = model_check._verdict(BUNDLE_MODEL, facts, output, 0, 1.0, SHAPE_64, bundle, BUNDLE_MOUNT)
    assert check.ok and check.line.endswith("; its metadata names nibabel, which the image lacks"), check.line


@pytest.mark.slow  # the probe runs torch and the SDK on the host
def test_a_bundle_whose_root_is_not_the_file_stem_is_refused(tmp_path: Path) -> None:
    renamed = tmp_path / "spleen_liver.ts"
    renamed.write_bytes(BUNDLE_MODEL.read_bytes())  # root folder still "model"
    check = _probe_on_host(renamed, BUNDLE_APP)
    assert not check.ok, check.line
    expected = "the archive's root folder is 'model', the app opens it as spleen_liver.ts"
    assert expected in check.line, check.line


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        ({"ok": False, "monai-deploy-app-sdk": "0.5.1", "monai": "1.1.0", "failed_imports": [
            "OptionalImportError: import torch (requires 'torch 1.10.2' by 'min_version')."]},
         r"0\.5\.1 bundle operator with MONAI 1\.1\.0 cannot run: .*requires 'torch 1\.10\.2'"),
        ({"ok": False, "monai-deploy-app-sdk": "0.5.1", "monai": "1.6.1", "failed_imports": [],
          "error": "KeyError: 'network_data_format'"},
         r"cannot read its configs: KeyError: 'network_data_format'"),
        (None, r"the probe ended before the SDK's bundle operator read it"),
    ],
    ids=["torch-too-old", "config-error", "no-answer"],
)
def test_a_bundle_the_operator_cannot_serve_fails_in_one_line(found: dict | None, expected: str) -> None:
    facts = model_check.archive_facts(BUNDLE_MODEL)
    bundle = model_check.bundle_check(BUNDLE_MODEL, BUNDLE_APP)
    output = 'ARMGATE_TORCH 1.8.1\nARMGATE_MODEL_CHECK {"ok": true, "output_shape": [1, 3, 64, 64, 64]}\n'
    if found is not None:
        output += bundle_model.BUNDLE_MARKER + json.dumps(found) + "\n"
    shape = (1, 1, 64, 64, 64)
    check = model_check._verdict(BUNDLE_MODEL, facts, output, 0, 1.0, shape, bundle, BUNDLE_MOUNT)
    assert not check.ok and "\n" not in check.line
    assert re.search(expected, check.line), check.line
    # an app that does not use the operator is not held to it
    plain = model_check.BundleCheck(bundle.facts, through_operator=False)
    assert model_check._verdict(BUNDLE_MODEL, facts, output, 0, 1.0, SHAPE_64, plain, BUNDLE_MOUNT).ok


def test_a_bundle_whose_network_disagrees_with_its_metadata_fails() -> None:
    facts = model_check.archive_facts(BUNDLE_MODEL)
    bundle = model_check.BundleCheck(model_check.bundle_check(BUNDLE_MODEL, BUNDLE_APP).facts, False)
    output = 'ARMGATE_TORCH 2.10.0\nARMGATE_MODEL_CHECK {"ok": true, "output_shape": [1, 2, 64, 64, 64]}\n'
    check = model_check._verdict(BUNDLE_MODEL, facts, output, 0, 1.0, SHAPE_64, bundle, BUNDLE_MOUNT)
    assert not check.ok
    assert "its metadata declares 3 output channels and the network gives 2" in check.line, check.line


def _gate_refuses(args: list[str], reports: Path) -> str:
    """Exit 2 before any case, exactly one stderr line and no traceback (run_gate: no container left)."""
    result = run_gate([*args, "--reports", str(reports), "--no-host"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr
    assert lines[0].startswith("armgate: model check: "), lines[0]
    assert not (reports / "cases").exists(), "a case ran before the model check"
    return lines[0]


@pytest.mark.docker
@pytest.mark.slow
def test_a_normally_exported_bundle_fails_the_gate_on_bookworm(
    built_image: BuildRecord, normal_bundle: Path, tmp_path: Path
) -> None:
    """The image's own SDK 0.5.1 operator and MONAI 1.6.1 read the metadata, in the image."""
    line = _gate_refuses(["--app", str(BUNDLE_CONTRACT), "--image", built_image.image_id,
                          "--model", str(normal_bundle)], tmp_path / "acceptance")
    assert str(normal_bundle) in line and "KeyError: 'optional_packages_version'" in line, line
    assert "with MONAI 1.6.1" in line and "'required_packages_version'" in line, line


@pytest.mark.docker
@pytest.mark.slow
def test_a_bundle_fails_the_gate_on_torch18_for_the_operators_torch_floor(
    torch18_image: BuildRecord, tmp_path: Path
) -> None:
    """torch 1.8.1 loads the fixture Bundle and runs it; the SDK's operator wants torch 1.10.2."""
    line = _gate_refuses(["--app", str(BUNDLE_CONTRACT), "--profile", TORCH18_PROFILE,
                          "--image", torch18_image.image_id], tmp_path / "acceptance")
    assert "loads in torch 1.8.1, but the image's monai-deploy-app-sdk 0.5.1 bundle operator" in line, line
    assert "requires 'torch 1.10.2'" in line, line
