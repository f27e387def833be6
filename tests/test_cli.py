"""The command line's exit codes, as the README's verdict table promises them."""

import subprocess
import sys

import pytest

from validation import profiles


@pytest.mark.parametrize(("entry", "exit_code"), [("main", 130), ("run", -2)])
def test_a_caught_interrupt_exits_130_not_by_the_signal(entry: str, exit_code: int) -> None:
    """An interrupt the gate handled exits 130 even when it was raised inside a string exec;
    without main's reset, CPython under -m ends the process by SIGINT (-2) instead."""
    command = [sys.executable, "-m", "tests.probes.interrupt_in_exec", entry]
    result = subprocess.run(command, cwd=profiles.ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == exit_code, result.stderr
    assert "armgate: interrupted" in result.stderr
