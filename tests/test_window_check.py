"""The cross-architecture tier's windows (validation/window_check.py, validation/window_recorder/): which
windows of a full study are chosen, how the host's run records them, and the image's logits held to the
host's, which a deliberately perturbed weight on the image side fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from validation import contract, cross_arch, window_check
from validation.build import BuildRecord

APP = contract.load()


def _facts(foreground: int, ties: int, zeros: float) -> dict:
    return {"foreground": foreground, "ties": {"0.001": ties}, "input_zeros": zeros}


def test_windows_are_chosen_by_organ_voxels_near_ties_and_padding() -> None:
    recorded = [(0, _facts(10, 0, 0.5)), (1, _facts(900, 3, 0.0)), (2, _facts(500, 70, 0.0)),
                (3, _facts(800, 2, 0.0)), (4, _facts(5, 1, 0.9))]  # fmt: skip
    chosen = window_check.choose(recorded, 3)
    expected = [(1, "most organ voxels"), (2, "most near-ties"), (4, "most padded")]
    assert [(c.index, c.why) for c in chosen] == expected
    assert [c.index for c in window_check.choose(recorded, 4)] == [1, 2, 4, 3]  # then by organ voxels
    assert [c.index for c in window_check.choose(recorded, 1)] == [1]
    assert [c.index for c in window_check.choose(recorded[:1], 3)] == [0]


def test_the_windows_verdict_holds_the_ratio_to_the_tolerance() -> None:
    chosen = window_check.choose([(7, _facts(1, 0, 0))], 1)
    entry = {"index": 7, "why": "most organ voxels", "max_abs": 2e-5, "scale": 10.0, "labels_differ": 0,
             "voxels": 884736}  # fmt: skip
    within = window_check.WindowsResult(chosen, 1e-5, [entry])
    assert within.ok and within.worst == pytest.approx(2e-6) and "within 1e-05" in within.line(27)
    past = window_check.WindowsResult(chosen, 1e-5, [{**entry, "max_abs": 2e-3}])
    assert not past.ok and "past 1e-05" in past.line(27)
    assert "1 of the full study's 27 windows" in past.line(27)
    assert not window_check.WindowsResult(chosen, 1e-5).ok  # nothing compared is no pass
    failed = window_check.WindowsResult(chosen, 1e-5, problem="the image's run exited with 1: boom")
    assert not failed.ok and failed.line(27) == "the image's run exited with 1: boom"


def test_the_tier_settings_are_read_and_checked(tmp_path: Path) -> None:
    settings = cross_arch.load_settings()
    assert settings.windows_max >= 1 and len(settings.crop_windows) == 3 and settings.logit_rtol > 0
    bad = tmp_path / "timing.toml"
    bad.write_text("[cross_arch]\nwindows_max = 0\ncrop_windows = [1, 1, 1]\nlogit_rtol = 1e-4\n")
    with pytest.raises(cross_arch.GateError, match="windows_max at least 1"):
        cross_arch.load_settings(bad)
    bad.write_text("[cross_arch]\nwindows_max = 2\n")
    with pytest.raises(cross_arch.GateError, match=r"timing.toml: \[cross_arch\] wants"):
        cross_arch.load_settings(bad)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench import networks

    return networks.get("tiny-dynunet").export(tmp_path_factory.mktemp("tiny") / "model.ts")


@pytest.mark.slow
def test_the_host_run_records_each_window_and_changes_nothing(tiny_model: Path, tmp_path: Path) -> None:
    """Loaded through torch.jit.load with the recorder on PYTHONPATH, a batch of two windows is recorded
    as two inputs with facts, and the model answers exactly what it answers without the recorder."""
    script = (
        "import sys, torch\n"
        f"model = torch.jit.load({str(tiny_model)!r}).eval()\n"
        "batch = torch.rand(2, 1, 96, 96, 96, generator=torch.Generator().manual_seed(3))\n"
        "with torch.no_grad():\n    torch.save(model(batch), sys.argv[1])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(cross_arch.RECORDER), "ARMGATE_RECORD_WINDOWS": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "recorded.pt")], env=env, check=True)
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "plain.pt")], check=True)
    import torch

    assert torch.equal(torch.load(tmp_path / "recorded.pt"), torch.load(tmp_path / "plain.pt"))
    assert sorted(p.name for p in tmp_path.glob("window-*")) == [
        "window-0000.json", "window-0000.pt", "window-0001.json", "window-0001.pt"]  # fmt: skip
    facts = json.loads((tmp_path / "window-0001.json").read_text())
    assert set(facts) == {"input_zeros", "foreground", "ties", "min_gap"} and facts["input_zeros"] < 1e-4
    assert torch.load(tmp_path / "window-0001.pt").shape == (1, 1, 96, 96, 96)


def _windows(folder: Path, count: int) -> list[window_check.Chosen]:
    import torch

    folder.mkdir(parents=True)
    for index in range(count):
        window = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(index))  # 1/27 of 96³
        torch.save(window, folder / f"window-{index:04d}.pt")
    return [window_check.Chosen(index, "test", {}) for index in range(count)]


@pytest.mark.docker
@pytest.mark.slow
def test_the_images_logits_agree_and_a_perturbed_weight_on_its_side_is_caught(
    built_image: BuildRecord, tiny_model: Path, tmp_path: Path
) -> None:
    """The image's torch against the host's on a window: within logit_rtol. The same windows with the
    output convolution's weight of the image's copy scaled by 1.001 (the host keeps the original) fail,
    naming the ratio and the tolerance. (Scaling a weight that an instance norm follows changes nothing
    the norm lets through: the check sees the model's answers, not its insides.)"""
    import torch

    rtol = cross_arch.load_settings().logit_rtol
    chosen = _windows(tmp_path / "same", 1)
    agreed = window_check.compare_windows(
        built_image.image_id, APP, tiny_model, tmp_path / "same", chosen, rtol, "linux/arm64", {}
    )
    assert agreed.ok, agreed.line(1)
    assert len(agreed.per_window) == 1 and 0 < agreed.worst <= rtol
    perturbed = torch.jit.load(str(tiny_model))
    weight = [parameter for name, parameter in perturbed.named_parameters() if name.endswith("weight")][-1]
    with torch.no_grad():
        weight.mul_(1.001)
    perturbed.save(str(tmp_path / "perturbed.ts"))
    chosen = _windows(tmp_path / "perturbed", 1)
    caught = window_check.compare_windows(
        built_image.image_id, APP, tiny_model, tmp_path / "perturbed", chosen, rtol, "linux/arm64", {},
        image_model=tmp_path / "perturbed.ts",
    )  # fmt: skip
    assert not caught.ok and caught.worst > 5 * rtol, caught.line(1)
    assert f"past {rtol:g}" in caught.line(1)
