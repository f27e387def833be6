"""armgate's sessions: `nox -l` lists them. Logic lives in validation/, not here."""

from __future__ import annotations

import os
import re
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
# virtualenv + pip, and venvs are reused, so a second run does not reinstall torch.
nox.options.default_venv_backend = "virtualenv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).resolve().parent
PYPROJECT = nox.project.load_toml("pyproject.toml")
DEFAULT_CONTRACT = Path("container/app.toml")
# The host runs the app with a CPU build of torch (README, "Host torch"): from PyPI, torch >= 2.11
# pulls CUDA packages on x86_64 and aarch64 alike. ARMGATE_TORCH_INDEX names another index (a
# mirror of the CPU index); "default" uses only pip's configured index.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# The SDK's import of pkg_resources warns on every run; setuptools is pinned below 82 for it.
QUIET_WARNINGS = {"PYTHONWARNINGS": "ignore:pkg_resources is deprecated as an API:UserWarning"}
INDEX_PROBE_TIMEOUT_S = 10


def torch_index_args(session: nox.Session) -> list[str]:
    """pip arguments that let torch resolve to a CPU build: the CPU index as an extra index, if it answers."""
    index = os.environ.get("ARMGATE_TORCH_INDEX", TORCH_CPU_INDEX).strip()
    if index in ("", "default"):
        return []
    try:
        with urllib.request.urlopen(index.rstrip("/") + "/torch/", timeout=INDEX_PROBE_TIMEOUT_S):
            pass
    except (urllib.error.URLError, OSError) as error:
        session.warn(
            f"host torch: {index} not reachable ({getattr(error, 'reason', error)}); using pip's default "
            "index, where torch may be a CUDA build. Set ARMGATE_TORCH_INDEX to a reachable CPU index."
        )
        return []
    return ["--extra-index-url", index]


def app_host_requirements(posargs: list[str], invoked_from: str = ".") -> list[str]:
    """The reference run's requirements, from the app contract (--app FILE, else container/app.toml): its
    [host] requirements and, when it names one, the app's own requirements file (as the image). A MAP
    (--map FILE) brings no source, so there is no reference run to install for."""
    if "--map" in posargs:
        return []
    named = "--app" in posargs[:-1]
    contract = Path(invoked_from, posargs[posargs.index("--app") + 1]) if named else ROOT / DEFAULT_CONTRACT
    data = tomllib.loads(contract.read_text())
    own = data.get("app", {}).get("requirements")
    return [*data["host"]["requirements"], *([f"--requirement={contract.parent / own}"] if own else [])]


# The other apps whose host runs the test suite makes in its own environment (one SDK generation: an app
# of another generation needs an environment of its own).
SUITE_HOST_CONTRACTS = (Path("fixtures/spleen/app.toml"), Path("fixtures/bundle/app.toml"))


def fixture_apps_host_requirements() -> list[str]:
    """The host requirements of SUITE_HOST_CONTRACTS, e.g. the bundle app's connected-components-3d."""
    tables = [tomllib.loads(path.read_text())["host"] for path in SUITE_HOST_CONTRACTS]
    return [req for table in tables for req in table["requirements"]]


def install_groups(session: nox.Session, *groups: str, app: bool = False, extra: list[str] = ()) -> None:
    """The dependency groups, with app=True the app contract's host requirements, and `extra`."""
    requirements = [req for group in groups for req in nox.project.dependency_groups(PYPROJECT, group)]
    requirements += app_host_requirements(session.posargs, session.invoked_from) if app else []
    requirements += list(extra)
    torch = [req for req in requirements if re.match(r"torch\b(?![-_.\w])", req)]
    if torch:  # first, on its own, so only torch (and its few dependencies) may come from the CPU index
        session.install(*torch, *torch_index_args(session))
    session.install(*dict.fromkeys(requirements))


def run_validation(session: nox.Session, command: str, env: dict[str, str] | None = None) -> None:
    """`python -m validation COMMAND ARGS` from the folder nox was started in, so that the paths a user
    passes (--app, --cases, --model, --reports ...) mean what they mean there; -P keeps a folder of the
    user's own named `validation` from shadowing armgate's, which PYTHONPATH names."""
    session.chdir(session.invoked_from)
    env = {"PYTHONPATH": str(ROOT), **(env or {})}
    session.run("python", "-P", "-m", "validation", command, *session.posargs, env=env)


@nox.session(venv_backend="none")
def prepare(session: nox.Session) -> None:
    """Check the host for Docker, buildx, arm64 emulation and debootstrap; as root, install them."""
    session.run("python3", "-m", "validation", "host", *session.posargs, external=True)


@nox.session(default=False)
def lock(session: nox.Session) -> None:
    """Resolve each hermetic profile's requirements for its target into container/locks/."""
    install_groups(session, "harness")
    run_validation(session, "lock")


@nox.session(default=False)
def build(session: nox.Session) -> None:
    """Build the linux/arm64 image for a profile (--profile NAME) and write reports/build.json."""
    install_groups(session, "harness")
    run_validation(session, "build")


@nox.session(default=False)
def acceptance(session: nox.Session) -> None:
    """Gate the built image: image checks, inference on the fixture cases, mask comparison, report."""
    install_groups(session, "harness", app=True)
    run_validation(session, "acceptance", env=QUIET_WARNINGS)


@nox.session(default=False)
def merge(session: nox.Session) -> None:
    """Merge the report folders of `acceptance --shard K/N` runs into one verdict and report."""
    install_groups(session, "harness")
    run_validation(session, "merge")


@nox.session(default=False)
def golden(session: nox.Session) -> None:
    """Write a case's golden label map from the app's SEG or mask on this host (the reference platform)."""
    install_groups(session, "harness", app=True)
    run_validation(session, "golden", env=QUIET_WARNINGS)


@nox.session(default=False)
def compare(session: nox.Session) -> None:
    """Compare two NIfTI label masks (e.g. a golden with its ground truth): per-label metrics and checks."""
    install_groups(session, "harness")
    run_validation(session, "compare")


# The suite on one worker per core (pytest-xdist, at most 4), a test file at a time each: while one
# worker's build or host run leaves a core idle, the other's gate uses it. Builds of one checkout take
# turns (validation/shared_files.py). `-n 0` after `--` runs it in one process (e.g. for `-s`).
TEST_WORKERS = ("--numprocesses", "auto", "--maxprocesses", "4", "--dist", "loadfile")


@nox.session
def tests(session: nox.Session) -> None:
    """Run armgate's own test suite (builds and gates the default image; Docker required in CI)."""
    install_groups(session, "test", app=True, extra=fixture_apps_host_requirements())
    session.run("pytest", *TEST_WORKERS, *session.posargs)


@nox.session(default=False)
def fixtures(session: nox.Session) -> None:
    """Regenerate the fixture cases, model and goldens (--check: fail if they differ from git); the model
    is exported in the bullseye-torch1.8 image (`nox -s build -- --profile bullseye-torch1.8`)."""
    install_groups(session, "harness", app=True)
    session.run("python", "-m", "fixtures.generate", *session.posargs, env=QUIET_WARNINGS)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Measure armgate against baselines run alongside (reports/bench.json); `-- readme`: the README table."""
    install_groups(session, "test", app=True)
    session.run("python", "-m", "bench", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and format-check with ruff."""
    install_groups(session, "lint")
    session.run("ruff", "check", ".", *session.posargs)
