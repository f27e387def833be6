"""A site's series under emulation: 512 x 512 pixels over 50 cm and 300 slices, gated on every
profile's arm64 image.

The fixture cases are 128 x 128 x 64; a clinical abdomen-pelvis CT has 512 x 512 pixels over about
50 cm, hundreds of slices and the body of an adult. The case is phantoms.toml's generated
`full-size` case, written once at test time (about 160 MB of DICOM, not committed) with its golden
from a host run and its ground-truth limits measured, as `nox -s fixtures` writes the committed
cases. Its memory limit is the one phantoms.toml states for it. The two profiles' gates run side by
side, one run at a time each (`--jobs 1`): the app uses one core.

One in eight of this series' 1.25 mm slices (z = 4 mod 8) lies exactly half-way between two of the
model's 2 mm slices. The app breaks that tie one way on every stack (app/label_grid.py), so the
torch-1.8 stack (MONAI 1.1.0) must write the host's mask (MONAI 1.6.1) and pass the same checks.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from bench import stage_times
from tests.conftest import TORCH18_PROFILE, finish_gate, fixture_digest, start_gate
from validation import cases
from validation.build import BuildRecord

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FULL_SIZE = "full-size"

@pytest.fixture(scope="module")
def full_size_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stage_times.write_generated_case(tmp_path_factory.mktemp("generated"), FULL_SIZE)


def window_calls(run: dict) -> list[str]:
    return [stage for stage in run["stage_seconds"] if stage.startswith("inference window")]


def test_a_full_size_series_is_gated_on_every_profile(
    built_image: BuildRecord, torch18_image: BuildRecord, full_size_case: Path, tmp_path: Path
) -> None:
    """Every check passes on both profiles, golden and host agreement included; each run slides as
    many windows as the host's run, and each container run's peak memory stays within the case's
    stated limit."""
    with (full_size_case / "case.toml").open("rb") as handle:
        limit = cases.memory_bytes(tomllib.load(handle)["run"]["memory"])
    before = fixture_digest()
    images = {"bookworm": built_image, TORCH18_PROFILE: torch18_image}
    started = {}
    for profile, image in images.items():
        args = ["--profile", profile, "--image", image.image_id, "--cases", str(full_size_case.parent)]
        args += ["--jobs", "1"]
        args += ["--reports", str(tmp_path / profile / "acceptance")]
        started[profile] = start_gate(args, tmp_path / profile / "output")
    results = {profile: finish_gate(gate, tmp_path / profile / "output") for profile, gate in started.items()}
    assert fixture_digest() == before
    metrics = {
        profile: json.loads((tmp_path / profile / "acceptance" / "metrics.json").read_text())
        for profile in images
    }
    for profile, result in results.items():
        verdict = (metrics[profile]["verdict"], result.returncode)
        assert verdict == ("pass", 0), (profile, result.stdout[-3000:] + result.stderr[-2000:])
        run = metrics[profile]["cases"][FULL_SIZE]["run"]
        assert 0 < run["peak_memory_bytes"] <= limit, (profile, run["peak_memory_bytes"])
    host_windows = window_calls(metrics["bookworm"]["cases"][FULL_SIZE]["host_run"])
    for profile in images:
        assert window_calls(metrics[profile]["cases"][FULL_SIZE]["run"]) == host_windows, profile
    for profile, result in results.items():
        assert f"case {FULL_SIZE}: PASS" in result.stdout, profile
