"""A container run whose `docker wait` fails is reported as that, with the engine's reason, not as a
timeout; a run that outlives its limit still is a timeout. A fake `docker` on PATH plays the engine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from validation import contract, engine, run

APP = contract.load()
ARM64 = engine.ImageFacts({"Os": "linux", "Architecture": "arm64"})
NAME = "armgate-run-x"
LOST = "Error response from daemon: the engine lost the container"
FAKE_DOCKER = """#!/bin/sh
echo "$@" >> "{calls}"
case "$1" in
  run) echo 0123456789ab ;;
  wait) {wait} ;;
  inspect) echo false ;;
  logs) echo "stage 'imports' started" ;;
esac
"""
WAITS = {
    "fails": f'echo "{LOST}" >&2; exit 1',
    "hangs": "exec sleep 60",
    "prints-no-code": "echo 'not a number'",
    "exits-0": "echo 0",
}


def fake_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wait: str) -> Path:
    """A `docker` that starts every container, answers `docker wait` as WAITS[wait] says, logs its calls."""
    folder = tmp_path / "bin"
    folder.mkdir()
    calls = tmp_path / "calls"
    (folder / "docker").write_text(FAKE_DOCKER.format(calls=calls, wait=WAITS[wait]))
    (folder / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    return calls


def container_run(tmp_path: Path, timeout_s: float) -> run.RunResult:
    model = tmp_path / "model.ts"
    model.write_bytes(b"a model")
    output = run.writable_output_dir(tmp_path, "out")
    return run.run_container("img", APP, tmp_path, model, output, timeout_s, facts=ARM64, name=NAME)


def test_a_failed_docker_wait_is_reported_with_its_reason_not_as_a_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_engine(tmp_path, monkeypatch, "fails")
    result = container_run(tmp_path, timeout_s=600)
    assert not result.timed_out and not result.ok and result.exit_code is None
    assert result.wait_error == "Error response from daemon: the engine lost the container (exit 1)"
    assert result.failure() == (
        "container run: docker wait failed: Error response from daemon: the engine lost the container "
        "(exit 1); the app's last line: stage 'imports' started"
    )
    assert result.seconds < 60, "the failed wait ended the run at once"
    assert "rm --force --volumes armgate-run-x" in calls.read_text(), "the container is removed all the same"


def test_a_run_past_its_limit_is_still_a_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_engine(tmp_path, monkeypatch, "hangs")
    result = container_run(tmp_path, timeout_s=1)
    assert result.timed_out and result.wait_error == ""
    assert result.failure().startswith("container run timed out after ")


@pytest.mark.parametrize(
    ("wait", "expected"),
    [
        ("exits-0", engine.Waited(0, None)),
        ("prints-no-code", engine.Waited(None, None, "it printed 'not a number', not an exit code")),
        ("fails", engine.Waited(None, None, f"{LOST} (exit 1)")),
    ],
)
def test_wait_for_says_how_the_wait_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wait: str, expected: engine.Waited
) -> None:
    fake_engine(tmp_path, monkeypatch, wait)
    assert engine.wait_for("armgate-run-x", "0123456789ab", 30) == expected


def test_the_model_checks_failed_wait_is_named_not_a_timeout() -> None:
    from validation import model_check

    model = APP.default_model
    facts = model_check.archive_facts(model)
    lost = model_check._verdict(
        model, facts, "ARMGATE_TORCH 2.10.0\n", None, 2.0, APP.model_input_shape, None, APP.mounts.model,
        wait_error=f"{LOST} (exit 1)",
    )  # fmt: skip
    assert not lost.ok and f"docker wait failed: {LOST} (exit 1)" in lost.line and "within" not in lost.line
    slow = model_check._verdict(model, facts, "", None, 2.0, APP.model_input_shape, None, APP.mounts.model)
    assert "no answer within 2 s" in slow.line


def test_the_window_checks_failed_wait_is_named_not_a_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from validation import window_check

    fake_engine(tmp_path, monkeypatch, "fails")
    (tmp_path / "windows").mkdir()
    problem = window_check._image_outputs(
        "img", APP, tmp_path / "model.ts", tmp_path / "windows", ["window-0000.pt"], "linux/arm64", {},
        lambda text: None, 600.0,
    )  # fmt: skip
    assert problem == f"the image's run of the chosen windows: docker wait failed: {LOST} (exit 1)"
