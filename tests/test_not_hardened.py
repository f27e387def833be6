"""`--not-hardened`: the same run without the lock-down flags, and the recorded command says so.

Both gates run the one case whose app exits within seconds (an export with no DICOM files), so the
test costs two short emulated runs; the recorded `docker run` command does not depend on the outcome.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from test_faults import ONLY_THE_RUN, copy_case, empty_series_folder, gate_args, invoke

from validation import build

pytestmark = [pytest.mark.docker, pytest.mark.slow]
LOCK_DOWN = ["--read-only", "--tmpfs", "/tmp:rw,exec,size=2g", "--cap-drop", "ALL",
             "--security-opt", "no-new-privileges", "--pids-limit", "256"]  # fmt: skip


def recorded_command(built_image: build.BuildRecord, tmp_path: Path, *extra: str) -> list[str]:
    """The container run's command as metrics.json records it, without its per-run name, labels and
    mounts."""
    folder = copy_case(tmp_path)
    empty_series_folder(folder / "standard")
    reports = tmp_path / "acceptance"
    args = gate_args(reports, "--image", built_image.image_id, "--cases", str(folder), "--no-host", *extra)
    result = invoke([*args, "-k", ONLY_THE_RUN], tmp_path, docker=True)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    command = json.loads((reports / "metrics.json").read_text())["cases"]["standard"]["run"]["command"]
    assert command[:2] == ["docker", "run"], command
    per_run = ("--name", "-v", "--label")
    kept, skip = [], False
    for token in command:
        if not skip and token not in per_run:
            kept.append(token)
        skip = token in per_run and not skip
    return kept


def test_not_hardened_drops_the_lock_down_flags(built_image: build.BuildRecord, tmp_path: Path) -> None:
    hardened = recorded_command(built_image, tmp_path / "hardened")
    relaxed = recorded_command(built_image, tmp_path / "relaxed", "--not-hardened")
    assert Counter(hardened) - Counter(relaxed) == Counter(LOCK_DOWN)
    assert Counter(relaxed) - Counter(hardened) == Counter()
    assert relaxed[relaxed.index("--network") + 1] == "none"  # no network either way
