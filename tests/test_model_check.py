"""The model check: the image's torch loads the model and runs one forward before any case runs.

A Conv3d network scripted by the host's torch 2 is refused by torch 1.8.1 (the torch-1.x profile)
with one line naming the archive and the image's torch, and taken by the default profile's torch.
The fixture model, an ordinary Conv3d network exported by torch 1.8.1, is taken by both.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
import torch

from tests.conftest import TORCH18_PROFILE, run_gate
from validation import contract, lock, model_check
from validation.build import BuildRecord
from validation.errors import GateError

APP = contract.load()


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
    check = model_check._verdict(host_conv_model, facts, output, exit_code, 1.0, APP.model_input_shape)
    assert not check.ok and "\n" not in check.line
    assert f"TorchScript file format {facts.file_format}" in check.line
    assert re.search(expected, check.line), check.line


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
