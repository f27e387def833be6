"""Today's App SDK behind the gate: the Holoscan-generation fixture app (fixtures/holoscan) is built on
its profile, run with no GPU under the gate's lockdown, and its SEG, placed on the DICOM grid, held to the
goldens; an image whose wheel needs a newer glibc than the base's, or that lacks the CUDA runtime
library, fails in one line naming what is missing."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import HOLOSCAN_CONTRACT, HOLOSCAN_PROFILE, run_gate
from validation import engine, lock, profiles
from validation.build import BuildRecord

pytestmark = [pytest.mark.docker, pytest.mark.slow]
SITE = "/opt/venv/lib/python3.11/site-packages"
GLIBC_238_WHEEL = ("trixie-sdk4.0", "holoscan-cu13")  # its aarch64 libraries need GLIBC_2.38
CORE_LIBRARY = "/holoscan/lib/libholoscan_core.so."  # in the wheel's .data/purelib


def gate(image: str, reports: Path, *args: str, python: str | Path | None = None) -> dict:
    """The gate's metrics after a run on `image` under the Holoscan contract and profile."""
    command = ["--image", image, "--reports", str(reports), "--profile", HOLOSCAN_PROFILE,
               "--app", str(HOLOSCAN_CONTRACT), *args]  # fmt: skip
    result = run_gate(command, python=python) if python else run_gate(command)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    metrics = json.loads((reports / "metrics.json").read_text())
    metrics["exit_code"], metrics["output"] = result.returncode, result.stdout[-3000:] + result.stderr[-2000:]
    return metrics


def first_line(reason: str) -> str:
    return reason.split("\n", 1)[0]


def failed(metrics: dict) -> dict[str, str]:
    return {check["name"]: check["reason"] for check in metrics["checks"] if check["status"] == "failed"}


def test_the_holoscan_app_passes_the_gate_on_arm64_without_a_gpu(
    holoscan_image: BuildRecord, holoscan_host_python: Path, tmp_path: Path
) -> None:
    env = dict(
        item.split("=", 1) for item in engine.require_image(holoscan_image.image_id, "").raw["Config"]["Env"]
    )
    assert env["LD_LIBRARY_PATH"] == f"{SITE}/nvidia/cuda_runtime/lib"
    assert env["HOLOSCAN_INPUT_PATH"] == "/input" and env["HOLOSCAN_OUTPUT_PATH"] == "/output"
    metrics = gate(holoscan_image.image_id, tmp_path / "acceptance", python=holoscan_host_python)
    assert metrics["exit_code"] == 0 and metrics["verdict"] == "pass", metrics["output"]
    assert set(metrics["cases"]) == {"holoscan-oblique", "holoscan-standard"}
    names = {check["name"] for check in metrics["checks"]}
    assert {"test_every_elf_file_loads_with_the_images_own_libraries", "test_host_run[holoscan-standard]",
            "test_pin[holoscan-cu12]"} <= names  # fmt: skip
    for case in metrics["cases"].values():  # the app.yaml's memory is each run's limit
        command = case["run"]["command"]
        assert command[command.index("--memory") + 1] == "2g"


@contextmanager
def derived_image(
    base: BuildRecord, tmp_path: Path, steps: str, files: dict[str, bytes] | None = None
) -> Iterator[str]:
    """An image made from the built one by `steps` (Dockerfile lines; `files` are in the context), removed
    afterwards: the state a broken profile's build would leave, without a second package install."""
    with engine.derived_image(base.image_id, base.platform, steps, tmp_path / "derived", files) as tag:
        yield tag


def one_case(tmp_path: Path) -> Path:
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "holoscan-standard").symlink_to(HOLOSCAN_CONTRACT.parent / "cases" / "holoscan-standard")
    return cases


def test_a_missing_cuda_runtime_library_fails_the_image_checks_and_the_run_in_one_line_each(
    holoscan_image: BuildRecord, tmp_path: Path
) -> None:
    steps = f"USER root\nRUN rm -rf {SITE}/nvidia/cuda_runtime\nUSER monai"
    with derived_image(holoscan_image, tmp_path, steps) as image:
        metrics = gate(image, tmp_path / "acceptance", "--no-host", "--cases", str(one_case(tmp_path)))
    reasons = failed(metrics)
    assert metrics["exit_code"] == 1 and metrics["verdict"] == "fail", metrics["output"]
    # the reason's first line, which the console and the report show, holds the whole problem
    loader = first_line(reasons["test_every_elf_file_loads_with_the_images_own_libraries"])
    assert loader.startswith("AssertionError: libcudart.so.12 is on no folder of the image's loader path")
    assert f"needed by {SITE}/holoscan/" in loader and loader.endswith("runtime.library_path"), loader
    run = reasons["test_container_run[holoscan-standard]"]
    assert "libcudart.so.12: cannot open shared object file" in first_line(run), run


def _glibc_238_library() -> bytes:
    """holoscan's core library from the real aarch64 holoscan-cu13 4.6.0 wheel (tagged manylinux_2_35),
    downloaded by hash into the trixie profile's wheelhouse like any build's wheels."""
    profile = profiles.load(GLIBC_238_WHEEL[0])
    wanted = [p for p in lock.parse_lock(profile.lock_path) if p.name == GLIBC_238_WHEEL[1]]
    folder = lock.ensure_wheels(profile, wanted, profile.lock_path, lock.wheelhouse_dir(profile))
    wheel = next(folder.glob(f"holoscan_cu13-{wanted[0].version}-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if CORE_LIBRARY in n)
        return archive.read(name)


def test_a_wheel_that_needs_a_newer_glibc_than_the_base_fails_the_image_checks_naming_file_and_version(
    holoscan_image: BuildRecord, tmp_path: Path
) -> None:
    target = f"{SITE}/holoscan_cu13_4.6.0/libholoscan_core.so.4"
    files = {"libholoscan_core.so.4": _glibc_238_library()}
    with derived_image(holoscan_image, tmp_path, f"COPY libholoscan_core.so.4 {target}", files) as image:
        metrics = gate(image, tmp_path / "acceptance", "-k", "loads_with_the_images_own_libraries")
    reasons = failed(metrics)
    assert metrics["exit_code"] == 1 and list(reasons) == [
        "test_every_elf_file_loads_with_the_images_own_libraries"
    ]
    reason = first_line(reasons["test_every_elf_file_loads_with_the_images_own_libraries"])
    assert reason.startswith(f"AssertionError: {target} needs GLIBC_2.38, GLIBCXX_3.4.32, but"), reason
    assert "the image's C/C++ libraries provide up to GLIBC_2.36, GLIBCXX_3.4.30" in reason, reason
