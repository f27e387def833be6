"""Each host run of the app has a working folder of its own, so runs started side by side cannot collide.

MONAI Deploy apps keep a working folder (`.monai_workdir`) in the current folder unless MONAI_WORKDIR
names one; two runs started at once from one folder fail now and then (`Directory not empty`). A stand-in
app that claims its working folder and fails when another run holds it shows the difference without
timing luck: each run holds its folder for a second, and two runs overlap.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from validation import contract, run

CLAIMING_APP = """
import os, pathlib, sys, time
work = pathlib.Path(os.environ.get("MONAI_WORKDIR", ".monai_workdir")).resolve()
try:
    work.mkdir(parents=True)  # as the SDK's workdir set-up, which fails if another run holds it
except FileExistsError:
    sys.exit(f"working folder {work} is held by another run")
time.sleep(1.0)
(pathlib.Path(sys.argv[sys.argv.index("-o") + 1]) / "done.txt").write_text(str(work))
work.rmdir()
"""


def _app(tmp_path: Path) -> contract.AppContract:
    source = tmp_path / "app"
    source.mkdir()
    (source / "__main__.py").write_text(CLAIMING_APP)
    return dataclasses.replace(contract.load(), source=source)


def _runs(app: contract.AppContract, tmp_path: Path, work_dir) -> list[run.RunResult]:
    def one(index: int) -> run.RunResult:
        output = tmp_path / f"out-{index}"
        output.mkdir()
        return run.run_host(app, tmp_path, tmp_path / "model.ts", output, 60, work_dir=work_dir(index))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, range(4)))


def test_host_runs_two_at_a_time_each_in_its_own_folder(tmp_path: Path) -> None:
    results = _runs(_app(tmp_path), tmp_path, lambda index: tmp_path / f"work-{index}")
    assert all(result.ok for result in results), [result.failure() for result in results]
    used = {(result.output_dir / "done.txt").read_text() for result in results}
    assert len(used) == 4


def test_host_runs_sharing_one_folder_collide(tmp_path: Path) -> None:
    """The stand-in fails as SDK apps do when two runs share a working folder: the test can fail."""
    results = _runs(_app(tmp_path), tmp_path, lambda index: tmp_path / "shared")
    failures = [result.failure() for result in results if not result.ok]
    assert failures and all("is held by another run" in failure for failure in failures), failures


def test_a_host_run_without_a_folder_gets_a_temporary_one(tmp_path: Path) -> None:
    results = _runs(_app(tmp_path), tmp_path, lambda index: None)
    assert all(result.ok for result in results), [result.failure() for result in results]
    assert not any(Path((result.output_dir / "done.txt").read_text()).exists() for result in results)
