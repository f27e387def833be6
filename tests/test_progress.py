"""Progress of long steps: live on a terminal, one line with its time per step anywhere else."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from validation import profiles, progress

SCRIPT = """
import sys, time
from validation import progress
with progress.step("case runs", total=3, unit="cases") as runs:
    for k in range(3):
        runs.update(detail=f"case {k + 1} running", memory_bytes=(k + 1) * 1_000_000_000)
        time.sleep(0.4)
        runs.advance()
try:
    with progress.step("debootstrap bookworm linux/arm64"):
        raise RuntimeError("mirror gone")
except RuntimeError:
    pass
"""


def run_script(terminal: bool) -> str:
    """SCRIPT's stdout, through a pseudo-terminal or a pipe."""
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160"}
    env.pop("NO_COLOR", None)
    if not terminal:
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT], cwd=profiles.ROOT, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        return result.stdout
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], cwd=profiles.ROOT, env=env, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(timeout=60) == 0
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_not_a_terminal_prints_one_line_per_step_with_its_time() -> None:
    lines = run_script(terminal=False).splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(r"case runs: 3/3 cases in \d+\.\d s, peak 3\.00 GB", lines[0])
    assert re.fullmatch(r"debootstrap bookworm linux/arm64: failed after \d+\.\d s", lines[1])
    assert "\x1b" not in "".join(lines)  # no escape codes in logs


def test_a_terminal_shows_case_k_of_n_elapsed_and_peak_memory() -> None:
    screen = run_script(terminal=True)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    for k in (0, 1, 2):  # drawn at each new count or peak: k of n, elapsed time, peak so far, detail
        live = rf"case runs .*{k}/3 cases\s+\d+:\d\d:\d\d peak {k + 1}.00 GB · case {k + 1} running"
        assert re.search(live, plain), plain
    assert "case runs: 3/3 cases in" in plain and "failed after" in plain


def test_run_command_streams_into_the_log_and_advances_on_a_prefix(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "tool.log"
    command = [sys.executable, "-c", "print('Collecting a'); print('noise'); print('Processing b'); exit(3)"]
    with progress.step("wheels", total=2, unit="wheels") as current:
        code = progress.run_command(current, command, log, advance_on=("Collecting ", "Processing "))
        assert code == 3
        assert current.completed == 2 and current.detail == "Processing b"
    first, *output = log.read_text().splitlines()
    assert first.startswith(f"+ {sys.executable} -c ") and output == ["Collecting a", "noise", "Processing b"]
    assert progress.tail(log, 2) == "noise\nProcessing b"


def test_updates_from_threads_are_counted_once_each(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.step("host runs", total=200, unit="runs") as current:
        workers = [
            threading.Thread(target=lambda: [current.advance() for _ in range(50)]) for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        current.update(memory_bytes=2_000_000_000)
        current.update(memory_bytes=1_000_000_000)  # a lower reading does not lower the peak
    assert current.completed == 200 and current.peak_memory_bytes == 2_000_000_000
    assert capsys.readouterr().out.startswith("host runs: 200/200 runs in ")


def test_work_found_later_grows_the_total_and_a_step_sums_up_once() -> None:
    """The gate opens 'checks' before pytest has collected them; the runs close themselves when the
    last one ends and again at the gate's stop, which must not print a second line."""
    out = io.StringIO()
    current = progress.Step("checks", total=0, unit="checks", out=out)
    current.grow(3)
    current.advance(amount=3)
    current.close(failed=False)
    current.close(failed=True, ended="stopped")
    assert current.total == 3
    assert re.fullmatch(r"checks: 3/3 checks in \d+\.\d s\n", out.getvalue())


def test_a_step_that_did_not_finish_says_how_it_ended() -> None:
    out = io.StringIO()
    progress.Step("container runs", total=2, unit="cases", out=out).close(failed=True, ended="stopped")
    assert re.fullmatch(r"container runs: stopped after \d+\.\d s\n", out.getvalue())
