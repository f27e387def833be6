"""Integration: the default profile builds a real linux/arm64 image, and rebuilding it is cheap."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from validation import build, engine, profiles
from validation.build import BuildRecord

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_image_is_arm64(built_image: BuildRecord) -> None:
    facts = engine.require_image(built_image.image_id, "the built image")
    assert facts.platform == "linux/arm64"
    uname = subprocess.run(
        ["docker", "run", "--rm", "--platform", "linux/arm64", "--network", "none", "--entrypoint", "uname",
         built_image.image_id, "-m"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert uname.stdout.strip() == "aarch64"


def test_build_record_describes_the_image(built_image: BuildRecord) -> None:
    record = json.loads((build.REPORTS / "build.json").read_text())
    assert record["image_id"] == built_image.image_id
    assert record["platform"] == "linux/arm64" and record["profile"] == "bookworm"
    assert record["lock_sha256"] == build.lock.lock_hash(profiles.load().lock_path)
    assert record["size_bytes"] > 100_000_000 and record["base"].startswith("armgate/base:bookworm-")


def test_noop_rebuild_reuses_everything(built_image: BuildRecord, tmp_path) -> None:
    started = time.monotonic()
    again = build.build(profiles.load(), report=tmp_path / "build.json")
    assert again.image_id == built_image.image_id, "a rebuild with nothing changed made a different image"
    print(f"no-op rebuild: {time.monotonic() - started:.1f} s")


def test_clara_profile_fails_on_the_apps_python_floor() -> None:
    """Its base's Python is 3.6, below the app's floor: one line before any build step."""
    result = subprocess.run(
        [sys.executable, "-m", "validation", "build", "--profile", "clara-agx-21.05"],
        cwd=profiles.ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "clara-agx-21.05.toml: Python 3.6 is below the app's floor" in lines[0]
    assert "container/app.toml" in lines[0]


def test_vendor_base_fails_fast_and_clearly(docker_host: None, tmp_path: Path) -> None:
    """A registry base that cannot be pulled (here NVIDIA's, with a Python the app accepts)."""
    vendor = tmp_path / "vendor.toml"
    text = (profiles.PROFILES_DIR / "clara-agx-21.05.toml").read_text()
    vendor.write_text(text.replace('python = "3.6"', 'python = "3.9"'))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "validation", "build", "--profile", str(vendor)],
        cwd=profiles.ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "nvcr.io/nvidia/clara-agx/agx-pytorch:21.05-1.7-py3" in lines[0]
    assert "--profile bookworm" in lines[0]
    assert time.monotonic() - started < build.PULL_TIMEOUT_S + 10


def test_sbom_lists_what_the_image_holds(built_image: BuildRecord) -> None:
    sbom = json.loads(Path(built_image.sbom).read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["metadata"]["component"]["version"] == built_image.image_id
    purls = {component["purl"] for component in sbom["components"]}
    locked = build.lock.parse_lock(profiles.load().lock_path)
    assert {f"pkg:pypi/{p.name}@{p.version}" for p in locked} <= purls


def test_the_image_carries_no_test_suites_or_headers(built_image: BuildRecord) -> None:
    """The packages' test suites and C/C++ headers are removed in the step that installs them (no run
    imports them); what the image-size bench counts as trimmable in those two kinds is nothing."""
    from bench.size import trimmable_bytes

    trimmable = trimmable_bytes(built_image.image_id, built_image.platform)
    assert trimmable["test suites"] == 0 and trimmable["C/C++ headers"] == 0, trimmable
