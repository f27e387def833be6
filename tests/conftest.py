"""Shared fixtures. Docker-backed tests skip on a laptop without an engine, but fail in CI."""

from __future__ import annotations

import os

import pytest

from validation import build, host, profiles
from validation.build import BuildRecord

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def docker_host() -> None:
    """Require a ready Docker host: engine, buildx and arm64 execution."""
    problems = [
        f"{c.name}: {c.detail}"
        for c in (host.check_engine(), host.check_buildx(), host.check_binfmt())
        if not c.ok
    ]
    if problems:
        message = "; ".join(problems) + " (run `nox -s prepare`)"
        if IN_CI:
            pytest.fail(f"CI=true and the Docker host is not ready: {message}", pytrace=False)
        pytest.skip(f"Docker host not ready: {message}")


@pytest.fixture(scope="session")
def built_image(docker_host: None) -> BuildRecord:
    """The default profile's image, built once per test session (seconds when nothing changed)."""
    return build.build(profiles.load(), report=build.REPORTS / "build.json")


TORCH18_PROFILE = "bullseye-torch1.8"


@pytest.fixture(scope="session")
def torch18_image(docker_host: None) -> BuildRecord:
    """The torch-1.x device stack's image, built once per session; its records sit in their own folder
    so the default profile's reports/build.json and SBOM stay as they are."""
    return build.build(
        profiles.load(TORCH18_PROFILE), report=build.REPORTS / TORCH18_PROFILE / "build.json"
    )
