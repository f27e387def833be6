"""The README's recipe for a Bundle ("Making one from a TorchScript model") does what it says: its block,
run as written on the spleen fixture's plain TorchScript, makes a Bundle the model check recognises and
the SDK's own bundle operator reads on MONAI >= 1.4."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.test_model_check import BUNDLE_APP, _probe_on_host
from validation import bundle_model, contract
from validation.profiles import ROOT

SPLEEN = contract.load(ROOT / "fixtures" / "spleen" / "app.toml")
ROI = [64, 64, 64]
METADATA = {
    "version": "0.1.0",
    "name": "spleen CT segmentation",
    "monai_version": "1.6.1",
    "pytorch_version": "2.13.0",
    "optional_packages_version": {"nibabel": "5.4.2"},
    "network_data_format": {
        "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": ROI, "dtype": "float32"}},
        "outputs": {"pred": {"type": "image", "num_channels": 2, "spatial_shape": ROI, "dtype": "float32"}},
    },
}
INFERENCE = {
    "imports": ["$import torch"],
    "device": "$torch.device('cpu')",
    "preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -57.0, "a_max": 164.0,
         "b_min": 0.0, "b_max": 1.0, "clip": True},
    ]},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": ROI, "sw_batch_size": 1, "overlap": 0.25},
    "postprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
    ]},
}  # fmt: skip


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("**Making one from a TorchScript model.**") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("readme-bundle")
    (folder / "make_bundle.py").write_text(readme_block())
    (folder / "metadata.json").write_text(json.dumps(METADATA))
    (folder / "inference.json").write_text(json.dumps(INFERENCE))
    out = folder / "out" / "model.ts"
    out.parent.mkdir()
    command = [sys.executable, "make_bundle.py", str(SPLEEN.default_model), "metadata.json", "inference.json"]
    done = subprocess.run([*command, str(out)], cwd=folder, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.mark.slow  # torch loads and saves the model
def test_the_recipe_makes_a_bundle_the_model_check_recognises(bundle: Path) -> None:
    facts = bundle_model.bundle_facts(bundle)
    assert facts is not None and facts.root == "model" and facts.output_channels == 2


@pytest.mark.slow  # the probe runs torch, MONAI and the SDK's operator on the host
def test_the_sdk_operator_reads_the_recipes_bundle(bundle: Path) -> None:
    app = replace(BUNDLE_APP, model_input_shape=(1, 1, *ROI))
    check = _probe_on_host(bundle, app)
    assert check.ok, check.line
    assert "SDK bundle operator reads its configs" in check.line and check.output_shape == (1, 2, *ROI)
