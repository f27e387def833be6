"""Integration: the torch-1.x device stack (bullseye, torch 1.8.1, monai 1.1) builds offline and the app
passes the gate on it, its masks equal to the goldens made on the host's torch 2."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from tests.conftest import TORCH18_PROFILE, run_gate
from validation import build, cases, contract, engine, profiles
from validation.build import BuildRecord

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_torch18_image_is_the_profiles_arm64_image(torch18_image: BuildRecord) -> None:
    facts = engine.require_image(torch18_image.image_id, "the torch-1.8 image")
    assert facts.platform == "linux/arm64"
    assert torch18_image.profile == TORCH18_PROFILE
    assert torch18_image.base.startswith("armgate/base:bullseye-")
    assert torch18_image.lock_sha256 == build.lock.lock_hash(profiles.load(TORCH18_PROFILE).lock_path)


def test_gate_passes_the_app_on_torch18(torch18_image: BuildRecord, tmp_path: Path) -> None:
    """Every image check (its pins among them) and every fixture case, compared with the goldens."""
    reports = tmp_path / "acceptance"
    args = ["--profile", TORCH18_PROFILE, "--image", torch18_image.image_id, "--reports", str(reports)]
    result = run_gate(args)  # every check, the host runs and cross-architecture agreement included
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "model check: " in result.stdout and "torch 1.8.1" in result.stdout
    suite = ElementTree.parse(reports / "junit.xml").getroot()
    for outcome in ("skipped", "failure", "error"):
        assert not suite.findall(f".//{outcome}"), outcome
    metrics = json.loads((reports / "metrics.json").read_text())
    default_cases = contract.load().default_cases
    assert metrics["verdict"] == "pass"
    assert set(metrics["cases"]) == {case.name for case in cases.discover(default_cases)}
    names = {testcase.get("name") for testcase in suite.findall(".//testcase")}
    assert any(name.startswith("test_pin") for name in names), sorted(names)
