"""With CI=true nothing skips silently: the suite's own hook turns every skip into a failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from validation import profiles

SKIPPING_TEST = """
import pytest

def test_needs_an_engine():
    pytest.skip("Docker host not ready")
"""


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 failed"), ("", "1 skipped")])
def test_a_skip_fails_only_in_ci(tmp_path: Path, ci: str, outcome: str) -> None:
    (tmp_path / "test_skipping.py").write_text(SKIPPING_TEST)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider"]
    command += ["-c", "/dev/null", "--rootdir", str(tmp_path), str(tmp_path / "test_skipping.py")]
    env = {"PATH": "/usr/bin:/bin", "CI": ci, "PYTHONPATH": str(profiles.ROOT)}
    result = subprocess.run(command, cwd=profiles.ROOT, capture_output=True, text=True, env=env, check=False)
    assert outcome in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    if ci:
        assert "CI=true forbids skipping" in result.stdout and "Docker host not ready" in result.stdout
