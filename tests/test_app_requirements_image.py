"""An app with one requirement no profile carries, built and gated like any app: the package is in the
image (from the app's lock, over the profile's shared package layer), the image checks assert it as
pin[app:<name>], and they fail when the image does not meet the app's requirement."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import held, run_gate
from tests.test_app_requirements import EXTRA, write_app
from validation import app_lock, build, contract, engine, lock, profiles
from validation.build import BuildRecord

pytestmark = [pytest.mark.docker, pytest.mark.slow]
CHECKS = "test_pin or test_oci_labels or test_pip_check"  # the image checks this feature touches


@pytest.fixture(scope="session")
def requirements_app_image(
    docker_host: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BuildRecord]:
    """The spleen app's code under another name, with `tabulate==0.9.0` in its requirements.txt: locked
    and built once per session (the profile's package layer is the default image's)."""
    folder = tmp_path_factory.mktemp("requirements-app")
    contract_path = write_app(folder / "app", f"{EXTRA}\n")
    app, profile = contract.load(contract_path), profiles.load()
    app_lock.compile_app_lock(profile, app)
    yield from held(build.build(profile, report=folder / "build.json", app=app))


def gate(record: BuildRecord, reports: Path, contract_path: Path | str) -> dict:
    result = run_gate(["--image", record.image_id, "--app", str(contract_path), "--reports", str(reports),
                       "--no-host", "-k", CHECKS])  # fmt: skip
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    metrics = json.loads((reports / "metrics.json").read_text())
    return {"returncode": result.returncode, "metrics": metrics}


def test_the_apps_requirement_is_installed_and_checked_as_a_pin(
    requirements_app_image: BuildRecord, tmp_path: Path
) -> None:
    record, app = requirements_app_image, contract.load(requirements_app_image.app_contract)
    installed = app_lock.require_fresh(profiles.load(), app)
    assert record.lock_sha256 == lock.lock_hash(installed)  # the label and the record name the app's lock
    facts = engine.require_image(record.image_id, "the requirements app's image")
    assert facts.raw["Config"]["Labels"]["org.armgate.lock-sha256"] == lock.lock_hash(installed)
    command = ["docker", "run", "--rm", "--platform", record.platform, "--network", "none"]
    command += [
        "--entrypoint",
        "python3",
        record.image_id,
        "-c",
        "import tabulate; print(tabulate.__version__)",
    ]
    imported = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert imported.returncode == 0 and imported.stdout.strip() == "0.9.0", imported.stderr
    outcome = gate(record, tmp_path / "acceptance", record.app_contract)
    assert outcome["returncode"] == 3, outcome  # PARTIAL: only the checks of -k ran, and all passed
    checks = {check["name"]: check["status"] for check in outcome["metrics"]["checks"]}
    assert checks["test_pin[app:tabulate]"] == "passed" and checks["test_oci_labels"] == "passed", checks
    assert checks["test_pip_check"] == "passed" and checks["test_pin[torch]"] == "passed", checks
    pins = outcome["metrics"]["image"]["pins"]
    assert {"name": "app:tabulate", "expected": "==0.9.0", "found": "0.9.0", "passed": True} in pins, pins


def test_an_image_that_does_not_meet_the_apps_requirement_fails_its_pin_and_lock_checks(
    requirements_app_image: BuildRecord, tmp_path: Path
) -> None:
    """The same image gated with the app's requirement moved to tabulate==0.8.10 (and locked so):
    pin[app:tabulate] names the installed and the required version, the lock label names the lock."""
    folder = tmp_path / "app"
    shutil.copytree(Path(requirements_app_image.app_contract).parent, folder)
    (folder / "requirements.txt").write_text("tabulate==0.8.10\n")
    moved = contract.load(folder / "app.toml")
    app_lock.compile_app_lock(profiles.load(), moved)
    outcome = gate(requirements_app_image, tmp_path / "acceptance", moved.path)
    assert outcome["returncode"] == 1, outcome
    failed = {c["name"]: c["reason"] for c in outcome["metrics"]["checks"] if c["status"] == "failed"}
    assert sorted(failed) == ["test_oci_labels", "test_pin[app:tabulate]"], failed
    assert (
        "tabulate 0.9.0 is installed; the app's requirements.txt requires tabulate==0.8.10"
        in (failed["test_pin[app:tabulate]"])
    )
    assert (
        f"image built from another lock than {folder / 'locks' / 'bookworm-aarch64.txt'}"
        in (failed["test_oci_labels"])
    )
