"""Shared fixtures. Docker-backed tests skip on a laptop without an engine, but fail in CI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from validation import build, contract, host, profiles, run, shared_files
from validation.build import BuildRecord

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# The markers (pyproject.toml) split the suite: `nox -s fast` runs what carries neither. A test whose
# fixtures reach the Docker engine (docker_host) needs `docker`; one that uses an image (a fixture named
# *_image: built, pulled or made for the test) needs `docker` and `slow`. A test with neither marker
# that takes longer than this, in its setup or its call, fails: mark it `slow` (the app, torch, MONAI).
UNMARKED_LIMIT_S = float(os.environ.get("ARMGATE_UNMARKED_TEST_LIMIT_S", "20"))


def missing_markers(item: pytest.Item) -> list[str]:
    """The markers a test's fixtures require and it lacks."""
    used = set(getattr(item, "fixturenames", ()))
    needed = {"docker"} if "docker_host" in used else set()
    if any(name.endswith("_image") for name in used):
        needed |= {"docker", "slow"}
    return sorted(needed - {mark.name for mark in item.iter_markers()})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """An unmarked test that would start the engine or build an image fails before its fixtures run."""
    missing = missing_markers(item)
    if missing:
        marks = " and ".join(f"@pytest.mark.{name}" for name in missing)
        pytest.fail(f"{item.nodeid} uses Docker or an image but lacks {marks}: add it", pytrace=False)


def _too_slow_unmarked(item: pytest.Item, call: pytest.CallInfo) -> str:
    """Why a passing test without `docker` or `slow` must carry `slow`: '' when it is quick enough."""
    marks = {mark.name for mark in item.iter_markers()}
    if marks & {"docker", "slow"} or call.when == "teardown" or call.duration <= UNMARKED_LIMIT_S:
        return ""
    return (
        f"{item.nodeid} took {call.duration:.1f} s in its {call.when} without @pytest.mark.slow "
        f"(the bound for unmarked tests is {UNMARKED_LIMIT_S:g} s): add the marker"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """With CI=true nothing may skip: a missing engine, emulator, validator or base image is a
    failure there, whichever fixture or marker would have skipped the test. A test too slow for the
    fast lane without its `slow` marker fails too."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true forbids skipping {item.nodeid}: {reason}"
    too_slow = _too_slow_unmarked(item, call)
    if too_slow and report.passed:
        report.outcome = "failed"
        report.longrepr = too_slow
    return outcome


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


def held(record: BuildRecord) -> Iterator[BuildRecord]:
    """The built image, held by a container for the whole session: a build in another checkout on
    the same engine prunes older revision tags, and must not delete an image these tests still use."""
    with run.holding(record.image_id, record.platform, {"org.armgate.test-session": str(os.getpid())}):
        yield record


@pytest.fixture(scope="session")
def built_image(docker_host: None) -> Iterator[BuildRecord]:
    """The default profile's image, built once per test session (seconds when nothing changed)."""
    yield from held(build.build(profiles.load(), report=build.REPORTS / "build.json"))


SPLEEN_CONTRACT = profiles.ROOT / "fixtures" / "spleen" / "app.toml"


@pytest.fixture(scope="session")
def spleen_image(docker_host: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildRecord]:
    """The second app's image (fixtures/spleen), built through its contract like any user's app."""
    report = tmp_path_factory.mktemp("spleen-build") / "build.json"
    yield from held(build.build(profiles.load(), report=report, app=contract.load(SPLEEN_CONTRACT)))


BUNDLE_CONTRACT = profiles.ROOT / "fixtures" / "bundle" / "app.toml"


@pytest.fixture(scope="session")
def bundle_image(docker_host: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildRecord]:
    """The third app's image (fixtures/bundle: a Bundle model, a SEG only, its own requirements),
    built through its contract like any user's app."""
    report = tmp_path_factory.mktemp("bundle-build") / "build.json"
    yield from held(build.build(profiles.load(), report=report, app=contract.load(BUNDLE_CONTRACT)))


HOLOSCAN_CONTRACT = profiles.ROOT / "fixtures" / "holoscan" / "app.toml"
HOLOSCAN_PROFILE = "bookworm-sdk3.5"  # shares the bookworm base: no second debootstrap in a cold run
# The Holoscan app's host runs need App SDK 3.5 and holoscan, which shadow the classic SDK the suite's
# own environment holds: they get an environment of their own, made as nox makes acceptance's.
HOLOSCAN_HOST_ENVS = profiles.ROOT / ".cache" / "nox-holoscan"


@pytest.fixture(scope="session")
def holoscan_image(docker_host: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildRecord]:
    """The Holoscan-generation fixture app's image (fixtures/holoscan) on its profile, built once."""
    report = tmp_path_factory.mktemp("holoscan-build") / "build.json"
    app = contract.load(HOLOSCAN_CONTRACT)
    yield from held(build.build(profiles.load(HOLOSCAN_PROFILE), report=report, app=app))


@pytest.fixture(scope="session")
def holoscan_host_python() -> Path:
    """A Python with the harness and the Holoscan app's [host] requirements: `nox -s acceptance -- --app
    fixtures/holoscan/app.toml` installs the same, here into .cache/nox-holoscan (reused when present)."""
    command = [sys.executable, "-m", "nox", "--envdir", str(HOLOSCAN_HOST_ENVS), "--install-only",
               "-s", "acceptance", "--", "--app", str(HOLOSCAN_CONTRACT)]  # fmt: skip
    with shared_files.turn(HOLOSCAN_HOST_ENVS.with_suffix(".lock"), "the Holoscan host environment"):
        done = subprocess.run(command, cwd=profiles.ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return HOLOSCAN_HOST_ENVS / "acceptance" / "bin" / "python"


TORCH18_PROFILE = "bullseye-torch1.8"


@pytest.fixture(scope="session")
def torch18_image(docker_host: None) -> Iterator[BuildRecord]:
    """The torch-1.x device stack's image, built once per session; its records sit in their own folder
    so the default profile's reports/build.json and SBOM stay as they are."""
    report = build.REPORTS / TORCH18_PROFILE / "build.json"
    yield from held(build.build(profiles.load(TORCH18_PROFILE), report=report))


@pytest.fixture
def passing(tmp_path: Path) -> dict[str, Any]:
    """The metrics.json of a passing gate over realistic cases (tests/test_report.py builds them)."""
    from test_report import passing_metrics

    return passing_metrics(tmp_path)


@pytest.fixture
def failing(tmp_path: Path) -> dict[str, Any]:
    """The metrics.json of a failing gate: a shifted case and a run that failed."""
    from test_report import failing_metrics

    return failing_metrics(tmp_path)


def start_gate(args: list[str], logs: Path, python: str | Path = sys.executable) -> subprocess.Popen[str]:
    """`python -m validation acceptance ARGS` from the repo root, started; its output goes to files
    in `logs`, so that gates run side by side never block on a full pipe. `python`: another app
    generation's environment (its host runs use the gate's interpreter)."""
    logs.mkdir(parents=True, exist_ok=True)
    command = [str(python), "-m", "validation", "acceptance", *args]
    with (logs / "stdout").open("w") as stdout, (logs / "stderr").open("w") as stderr:
        return subprocess.Popen(command, cwd=profiles.ROOT, stdout=stdout, stderr=stderr, text=True)


def finish_gate(process: subprocess.Popen[str], logs: Path, timeout: float | None = None
                ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Waits for a started gate, asserting that none of its own containers (found by the gate's pid
    label) is left, whatever other gates run on the engine."""
    process.wait(timeout=timeout)
    left = run.leftover_containers(f"org.armgate.gate-pid={process.pid}")
    assert not left, f"the gate left containers behind: {left}"
    stdout, stderr = (logs / "stdout").read_text(), (logs / "stderr").read_text()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_gate(
    args: list[str], timeout: float | None = None, python: str | Path = sys.executable
) -> subprocess.CompletedProcess[str]:
    """One gate, run to its end (start_gate and finish_gate), its output kept in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="armgate-gate-output-") as logs:
        return finish_gate(start_gate(args, Path(logs), python), Path(logs), timeout)


def fixture_digest() -> dict[str, str]:
    """sha256 of every fixture file, to prove a run left the inputs untouched."""
    return {
        str(path.relative_to(profiles.ROOT)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((profiles.ROOT / "fixtures").rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


@dataclass(frozen=True)
class GateRun:
    result: subprocess.CompletedProcess[str]
    reports: Path
    fixtures_before: dict[str, str]
    fixtures_after: dict[str, str]


@pytest.fixture(scope="session")
def full_gate_run(built_image: BuildRecord, tmp_path_factory: pytest.TempPathFactory) -> GateRun:
    """One full, unsharded gate of the built image on the fixture cases, shared by the tests that
    need it (each emulated case run costs about a minute of CI)."""
    reports = tmp_path_factory.mktemp("full-gate") / "acceptance"
    before = fixture_digest()
    result = run_gate(["--image", built_image.image_id, "--reports", str(reports)])
    return GateRun(result, reports, before, fixture_digest())


@pytest.fixture(scope="session")
def shard_runs(built_image: BuildRecord, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """`acceptance --shard 1/2` and `--shard 2/2` of the fixture cases: each PARTIAL (exit 3)."""
    folder, runs = tmp_path_factory.mktemp("shards"), []
    for index in (1, 2):
        reports = folder / f"shard-{index}"
        args = ["--image", built_image.image_id, "--reports", str(reports), "--shard", f"{index}/2"]
        result = run_gate(args)
        assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-2000:]
        assert "Traceback" not in result.stderr, result.stderr
        assert f"shard {index}/2 of the cases only (" in result.stdout
        runs.append(reports)
    return runs
