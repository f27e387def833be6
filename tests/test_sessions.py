"""Every nox session in an environment of its own, made the way nox makes it for a user.

The suite itself runs in the `tests` environment, which holds the union of what the other sessions
need; a module that imports a package only that union provides (jinja2 arrived with torch there)
passes every other test and fails a user's `nox -s merge`. Here each session is installed alone into
a fresh folder (`nox --install-only --envdir`), and everything its command can load is imported in it,
lazy imports included: whole packages are walked, not just the entry module (an app folder inside one is
loaded flat, as the run that starts it loads it, never as a package).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from validation import contract
from validation.profiles import ROOT

# session -> what its command loads. Packages are walked whole; "app:" means the default app's folder
# imported as the host run imports it (its modules flat on sys.path), for the sessions that run it.
LOADS = {
    "lock": ("validation",),
    "build": ("validation",),
    "merge": ("validation",),
    "compare": ("validation",),
    "acceptance": ("validation", "app:"),
    "golden": ("validation", "app:"),
    "fixtures": ("validation", "fixtures", "app:"),
    "bench": ("validation", "bench", "fixtures", "app:"),
}
IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
from pathlib import Path
failures = []
def load(name):
    try:
        importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 - every failure is reported, by module
        failures.append(f"{name}: {type(error).__name__}: {error}")
for target in json.loads(sys.argv[1]):
    if target.startswith("app:"):
        sys.path.insert(0, sys.argv[2])
        load("entrypoint")
        continue
    load(target)
    folders = [(importlib.import_module(target).__path__, target + ".")]
    while folders:
        path, prefix = folders.pop()
        for module in pkgutil.iter_modules(path, prefix):
            folder = Path(path[0]) / module.name.rsplit(".", 1)[-1]
            if module.ispkg and (folder / "entrypoint.py").is_file():
                continue  # an app: loaded flat by the run that starts it, never as a package
            load(module.name)
            if module.ispkg:
                folders.append(([str(folder)], module.name + "."))
print(json.dumps(failures))
"""


def install_session(name: str, envdir: Path) -> Path:
    """`nox --install-only -s NAME` into `envdir`: the session's environment, nothing run in it."""
    result = subprocess.run(
        [sys.executable, "-m", "nox", "--install-only", "--envdir", str(envdir), "-s", name],
        cwd=ROOT, capture_output=True, text=True, check=False
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    python = envdir / name / "bin" / "python"
    assert python.is_file(), f"nox made no environment for {name} in {envdir}"
    return python


def missing_imports(python: Path, targets: tuple[str, ...]) -> list[str]:
    app_dir = str(contract.load().source)
    result = subprocess.run(
        [str(python), "-c", IMPORT_EVERYTHING, json.dumps(targets), app_dir],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def session_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """The Python of a session's own environment, installed once per test session. Every session the
    tests here ask for is installed two at a time as soon as the first is asked for (each nox process
    writes only its own folder under `envdir`); an install is mostly unpacking wheels, one core each."""
    envdir = tmp_path_factory.mktemp("nox-envs")
    pool = ThreadPoolExecutor(max_workers=2)
    made = {name: pool.submit(install_session, name, envdir) for name in [*sorted(LOADS), "lint"]}

    def python(name: str) -> Path:
        return made[name].result()

    yield python
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.slow
@pytest.mark.parametrize("session", sorted(LOADS))
def test_each_session_loads_everything_from_its_own_environment(
    session: str, session_python: Callable[[str], Path]
) -> None:
    python = session_python(session)
    failures = missing_imports(python, LOADS[session])
    assert not failures, f"`nox -s {session}` cannot load: " + "; ".join(failures)


def test_the_import_check_names_a_module_whose_package_is_missing(tmp_path: Path) -> None:
    """The check itself can fail: an environment without jinja2 (as the harness group once was)."""
    (tmp_path / "needs_missing").mkdir()
    (tmp_path / "needs_missing" / "__init__.py").write_text("")
    (tmp_path / "needs_missing" / "report.py").write_text("import a_package_nobody_installed\n")
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING, json.dumps(["needs_missing"]), str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert failures == [
        "needs_missing.report: ModuleNotFoundError: No module named 'a_package_nobody_installed'"
    ]


@pytest.mark.slow
def test_lint_session_has_ruff_in_its_own_environment(session_python: Callable[[str], Path]) -> None:
    ruff = session_python("lint").with_name("ruff")
    result = subprocess.run([str(ruff), "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("ruff "), result.stdout + result.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_merge_session_merges_two_shards_in_its_own_environment(
    shard_runs: list[Path], session_python: Callable[[str], Path], tmp_path: Path
) -> None:
    """The README's `nox -s merge -- s1 s2 --reports OUT`, with the merge session's own packages."""
    out = tmp_path / "merged"
    command = ["-m", "validation", "merge", *map(str, shard_runs), "--reports", str(out)]
    result = subprocess.run(
        [str(session_python("merge")), *command],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["verdict"] == "pass"
    assert "<h1>PASS</h1>" in (out / "report.html").read_text()


@pytest.mark.slow
def test_a_session_reads_paths_from_the_folder_nox_was_started_in(
    session_python: Callable[[str], Path], tmp_path: Path
) -> None:
    """A team runs armgate's noxfile from its own folder with its own relative paths (`nox -f`): they
    mean what they mean there, not in armgate's checkout."""
    from tests.test_seg import label_map, make_ct_series, make_seg
    from tests.test_seg_only import write_contract

    envdir = session_python("golden").parents[2]
    work = tmp_path / "team"
    source = make_ct_series(work / "ct")
    (work / "out").mkdir()
    make_seg(work / "out" / "1.2.3.dcm", source, label_map(), ["liver", "right kidney"])
    shutil.copy(write_contract(tmp_path, '[outputs]\nseg = "*.dcm"'), work / "contract.toml")
    nox = [sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "--envdir", str(envdir), "-R"]
    args = ["--app", "contract.toml", "--seg", "out/1.2.3.dcm", "--dicom", "ct", "-o", "golden.nii.gz"]
    result = subprocess.run([*nox, "-s", "golden", "--", *args], cwd=work, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (work / "golden.nii.gz").is_file() and not (ROOT / "golden.nii.gz").exists()
