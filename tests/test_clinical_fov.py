"""A site's series under emulation: 512 x 512 pixels over 50 cm and 300 slices, gated whole on every
profile's arm64 image.

The fixture cases are 128 x 128 x 64; a clinical abdomen-pelvis CT has 512 x 512 pixels over about
50 cm, hundreds of slices and the body of an adult. The case is phantoms.toml's generated
`full-size` case, written once at test time (about 160 MB of DICOM, not committed) with its golden
from a host run and its ground-truth limits measured, as `nox -s fixtures` writes the committed
cases. Its memory limit is the one phantoms.toml states for it. The two profiles' gates run side by
side, one run at a time each (`--jobs 1`): the app uses one core.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from bench import stage_times
from tests.conftest import TORCH18_PROFILE, finish_gate, fixture_digest, start_gate
from validation.build import BuildRecord

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FULL_SIZE = "full-size"
UNITS = {"k": 2**10, "m": 2**20, "g": 2**30}  # docker run --memory's suffixes


def memory_bytes(limit: str) -> int:
    return int(float(limit[:-1]) * UNITS[limit[-1].lower()]) if limit[-1].isalpha() else int(limit)


@pytest.fixture(scope="module")
def full_size_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stage_times.write_generated_case(tmp_path_factory.mktemp("generated"), FULL_SIZE)


def window_calls(run: dict) -> list[str]:
    return [stage for stage in run["stage_seconds"] if stage.startswith("inference window")]


def test_a_full_size_series_passes_the_gate_on_every_profile(
    built_image: BuildRecord, torch18_image: BuildRecord, full_size_case: Path, tmp_path: Path
) -> None:
    """Every check passes on both profiles, each run sliding as many windows as the host's run, and
    each container run's peak memory within the case's stated limit."""
    with (full_size_case / "case.toml").open("rb") as handle:
        limit = memory_bytes(tomllib.load(handle)["run"]["memory"])
    before = fixture_digest()
    images = {"bookworm": built_image, TORCH18_PROFILE: torch18_image}
    cases = ["--cases", str(full_size_case.parent), "--jobs", "1"]
    started = {
        profile: start_gate(
            ["--image", image.image_id, *cases, "--reports", str(tmp_path / profile / "acceptance")],
            tmp_path / profile / "output",
        )
        for profile, image in images.items()
    }
    results = {profile: finish_gate(gate, tmp_path / profile / "output") for profile, gate in started.items()}
    assert fixture_digest() == before
    for profile, result in results.items():
        assert result.returncode == 0, (profile, result.stdout[-3000:] + result.stderr[-2000:])
        metrics = json.loads((tmp_path / profile / "acceptance" / "metrics.json").read_text())
        assert metrics["verdict"] == "pass" and metrics["counts"]["failed"] == 0, (profile, metrics["counts"])
        case = metrics["cases"][FULL_SIZE]
        windows = window_calls(case["run"])
        assert windows and windows == window_calls(case["host_run"]), (profile, windows)
        assert 0 < case["run"]["peak_memory_bytes"] <= limit, (profile, case["run"]["peak_memory_bytes"])
        assert f"case {FULL_SIZE}: PASS" in result.stdout
