"""Two processes of one checkout take turns at a build, and never read half of a record."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from validation import shared_files
from validation.profiles import ROOT

HOLDER = """
import sys, time
from pathlib import Path
from validation import shared_files
with shared_files.turn(Path(sys.argv[1]), "build"):
    Path(sys.argv[2]).write_text("held")
    while not Path(sys.argv[3]).exists():
        time.sleep(0.05)
    Path(sys.argv[2]).write_text("released")
"""


def test_a_second_process_waits_for_the_turn_and_says_so(tmp_path: Path) -> None:
    lock_file, state, release = tmp_path / "build.lock", tmp_path / "state", tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_file), str(state), str(release)], cwd=ROOT
    )  # fmt: skip
    try:
        while not state.exists():  # the other process has the turn
            assert holder.poll() is None, "the holder ended before taking its turn"
            time.sleep(0.05)
        said: list[str] = []

        def say(text: str) -> None:
            said.append(text)
            release.touch()  # let the holder go only once this one is waiting

        with shared_files.turn(lock_file, "build", say=say):
            inside = state.read_text()
        assert inside == "released", "entered while the other process still held the turn"
        assert said == [f"build: waiting for another one in this checkout to finish ({lock_file})"]
    finally:
        release.touch()
        holder.wait(timeout=30)


def test_a_free_turn_is_taken_without_a_word(tmp_path: Path) -> None:
    said: list[str] = []
    with shared_files.turn(tmp_path / "locks" / "build.lock", "build", say=said.append):
        pass
    assert said == []


def test_a_record_is_replaced_whole_and_leaves_no_scratch_file(tmp_path: Path) -> None:
    record = tmp_path / "reports" / "build.json"
    shared_files.replace_text(record, '{"image_id": "old"}\n')
    shared_files.replace_text(record, '{"image_id": "new"}\n')
    assert record.read_text() == '{"image_id": "new"}\n'
    assert [path.name for path in record.parent.iterdir()] == ["build.json"]
