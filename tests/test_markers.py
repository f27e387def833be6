"""The fast lane (`-m "not docker and not slow"`) leaves out every test that needs Docker, an image or
minutes: tests/conftest.py fails a test whose fixtures reach the engine or an image without the markers
they need, and an unmarked test slower than its bound."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from validation import profiles

FAST_LANE = "not docker and not slow"
TESTS = """
import time
import pytest

def test_uses_the_built_image(built_image):
    pass

def test_reaches_the_engine(docker_host):
    pass

@pytest.mark.docker
@pytest.mark.slow
def test_marked_image_user(built_image):
    pass

def test_sleeps():
    time.sleep(0.6)

@pytest.mark.slow
def test_sleeps_marked():
    time.sleep(0.6)
"""


def run_suite(tmp_path: Path, *args: str) -> str:
    """pytest with the suite's conftest on the test file above; its report."""
    (tmp_path / "test_examples.py").write_text(TESTS)
    command = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "tests.conftest", "-p", "no:cacheprovider"]
    command += ["-c", "/dev/null", "--rootdir", str(tmp_path), str(tmp_path / "test_examples.py"), *args]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(profiles.ROOT), "ARMGATE_UNMARKED_TEST_LIMIT_S": "0.3"}
    result = subprocess.run(
        command, cwd=profiles.ROOT, capture_output=True, text=True, env=env, check=False, timeout=120
    )
    return result.stdout + result.stderr


def test_the_fast_lane_fails_unmarked_tests_and_leaves_out_marked_ones(tmp_path: Path) -> None:
    report = run_suite(tmp_path, "-m", FAST_LANE)
    # an image or engine user fails in its setup (an error), before its fixtures; the slow one after its call
    assert re.search(r"1 failed, 2 deselected, .*2 errors", report), report[-3000:]
    assert "test_uses_the_built_image uses Docker or an image but lacks @pytest.mark.docker and " \
           "@pytest.mark.slow" in report, report[-3000:]  # fmt: skip
    assert "test_reaches_the_engine uses Docker or an image but lacks @pytest.mark.docker:" in report
    assert "test_sleeps took 0.6 s in its call without @pytest.mark.slow" in report
    assert "Docker host not ready" not in report, "the fixtures never started"


@pytest.mark.parametrize("name", ["test_uses_the_built_image", "test_sleeps"])
def test_each_rule_names_the_test_it_fails(tmp_path: Path, name: str) -> None:
    report = run_suite(tmp_path, "-k", f"{name} and not marked")
    assert re.search(r"\b1 (failed|error)\b", report), report[-3000:]
    line = next(line for line in report.splitlines() if line.startswith(f"test_examples.py::{name} "))
    assert line.endswith(("add it", "add the marker")), line
