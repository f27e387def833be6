"""Integration: the gate passes the real image on the real cases, and fails, naming why, on anything bad.

Every failing variant goes through the public command (`python -m validation acceptance`) and must
exit non-zero, name the reason on the console and in metrics.json, leave no container behind and
leave the fixtures byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from validation import cases, profiles, run
from validation.build import BuildRecord

pytestmark = [pytest.mark.docker, pytest.mark.slow]
STANDARD = cases.CASES_DIR / "standard"


def gate(image: str, reports: Path, *args: str) -> subprocess.CompletedProcess[str]:
    before, containers_before = fixture_digest(), set(run.leftover_containers())
    command = [sys.executable, "-m", "validation", "acceptance", "--image", image, "--reports", str(reports)]
    result = subprocess.run([*command, *args], cwd=profiles.ROOT, capture_output=True, text=True, check=False)
    assert set(run.leftover_containers()) <= containers_before, "the gate left containers behind"
    assert fixture_digest() == before, "the gate changed the fixtures"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def fixture_digest() -> dict[str, str]:
    """sha256 of every fixture file, to prove a run left the inputs untouched."""
    return {
        str(path.relative_to(profiles.ROOT)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((profiles.ROOT / "fixtures").rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def one_case(tmp_path: Path, edit_golden=None) -> Path:
    """A cases folder holding a copy of the standard case, its golden optionally edited."""
    folder = tmp_path / "cases"
    shutil.copytree(STANDARD, folder / "standard")
    if edit_golden is not None:
        golden = folder / "standard" / "reference" / "golden.nii.gz"
        image = nib.load(golden)
        data, affine = edit_golden(np.asarray(image.dataobj).copy(), image.affine.copy())
        nib.save(nib.Nifti1Image(data.astype(np.uint8), affine), golden)
    return folder


def failed_checks(reports: Path) -> dict[str, str]:
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["verdict"] == "fail"
    return {check["name"]: check["reason"] for check in metrics["checks"] if not check["passed"]}


def test_gate_passes_the_built_image(built_image: BuildRecord, tmp_path: Path) -> None:
    reports = tmp_path / "acceptance"
    result = gate(built_image.image_id, reports)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    suite = ElementTree.parse(reports / "junit.xml").getroot()
    testcases = suite.findall(".//testcase")
    assert len(testcases) >= 10
    assert (
        not suite.findall(".//skipped") and not suite.findall(".//failure") and not suite.findall(".//error")
    )
    html = (reports / "report.html").read_text()
    assert "data:image/png;base64," in html and "PASS" in html
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["verdict"] == "pass" and set(metrics["cases"]) == {c.name for c in cases.discover()}


def _shift(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.roll(data, 4, axis=0), affine


def _drop_liver(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    data[data == 6] = 0
    return data, affine


def _move_origin(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    affine[:3, 3] += 5.0
    return data, affine


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_shift, r"test_mask\[standard-golden-dice\]"),
        (_drop_liver, r"test_mask\[standard-golden-labels\]"),
        (_move_origin, r"test_mask\[standard-golden-geometry\]"),
    ],
    ids=["shifted-reference", "label-removed", "other-affine"],
)
def test_gate_fails_on_a_bad_reference(built_image: BuildRecord, tmp_path: Path, edit, expected: str) -> None:
    reports = tmp_path / "acceptance"
    result = gate(built_image.image_id, reports, "--cases", str(one_case(tmp_path, edit)), "--no-host",
                  "-k", "test_mask and golden")  # fmt: skip
    assert result.returncode == 1
    failed = failed_checks(reports)
    assert any(re.fullmatch(expected, name) for name in failed), failed
    assert any(name.split("[")[0] in result.stdout for name in failed), result.stdout


def test_gate_fails_with_a_wrong_model(built_image: BuildRecord, tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    wrong = torch.jit.script(torch.nn.Conv3d(1, 14, kernel_size=3, padding=1))
    model = tmp_path / "wrong" / "model.ts"
    model.parent.mkdir()
    wrong.save(str(model))
    reports = tmp_path / "acceptance"
    result = gate(built_image.image_id, reports, "--cases", str(one_case(tmp_path)), "--model", str(model),
                  "--no-host", "-k", "test_mask and ground_truth")  # fmt: skip
    assert result.returncode == 1
    failed = failed_checks(reports)
    assert any(name.startswith("test_mask[standard-ground_truth-") for name in failed), failed


def test_gate_fails_when_pins_differ(built_image: BuildRecord, tmp_path: Path) -> None:
    text = (
        (profiles.PROFILES_DIR / "bookworm.toml")
        .read_text()
        .replace('torch = "==2.10.0"', 'torch = "==2.9.1"')
    )
    profile = tmp_path / "bookworm.toml"
    profile.write_text(text)
    reports = tmp_path / "acceptance"
    result = gate(built_image.image_id, reports, "--profile", str(profile), "-k", "test_pin", "--no-host")
    assert result.returncode == 1
    failed = failed_checks(reports)
    assert list(failed) == ["test_pin[torch]"], failed
    assert "torch 2.10.0 is installed" in failed["test_pin[torch]"] and "==2.9.1" in failed["test_pin[torch]"]


def test_ctrl_c_removes_the_running_containers(built_image: BuildRecord, tmp_path: Path) -> None:
    """Interrupting the gate mid-run (as Ctrl-C does) removes its case containers and exits non-zero."""
    before = set(run.leftover_containers())
    command = [sys.executable, "-m", "validation", "acceptance", "--image", built_image.image_id]
    command += ["--reports", str(tmp_path / "acceptance"), "--cases", str(one_case(tmp_path))]
    command += ["--no-host", "-k", "test_run"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    gate_process = subprocess.Popen(command, cwd=profiles.ROOT, **pipes)
    deadline = time.monotonic() + 120
    while not set(run.leftover_containers()) - before and time.monotonic() < deadline:
        time.sleep(0.5)
    started = set(run.leftover_containers()) - before
    gate_process.send_signal(signal.SIGINT)
    _, stderr = gate_process.communicate(timeout=180)
    assert started, "no case container was seen running before the interrupt"
    assert gate_process.returncode != 0
    assert "Traceback" not in stderr, stderr
    assert set(run.leftover_containers()) <= before, "containers left after Ctrl-C"


BROKEN_IMAGE_DOCKERFILE = """\
FROM {image}
USER root
COPY x86-binary /opt/venv/lib/x86-binary
COPY broken-1.0.dist-info /opt/venv/lib/python3.11/site-packages/broken-1.0.dist-info
RUN rm /opt/multiorgan-seg/README.md && touch /root/leftover.whl
ENV HTTP_PROXY=http://proxy.invalid:3128 MONAI_WORKDIR=/var/monai HOME=/root
LABEL org.armgate.profile=other
ENTRYPOINT ["python3", "./other.py"]
"""
# check -> what the broken image above (or the edited profile) does to it
BROKEN_IMAGE_FAILURES = {
    "test_every_elf_file_is_aarch64": "non-AArch64 ELF",
    "test_python_version": "profile says 3.12",
    "test_pip_check": "nonexistent-package",
    "test_entrypoint_and_working_directory": "other.py",
    "test_app_files_present": "README.md",
    "test_runs_as_non_root_user": "runs as root",
    "test_no_build_leftovers_or_credentials": "leftover.whl",
    "test_oci_labels": "built for profile other",
    "test_supports_locked_down_runs": "MONAI_WORKDIR",
}


@pytest.fixture
def broken_image(built_image: BuildRecord, tmp_path: Path):
    """The real image with one fault per image check layered on top (nothing pulled, no network)."""
    context = tmp_path / "broken"
    (context / "broken-1.0.dist-info").mkdir(parents=True)
    (context / "broken-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken\nVersion: 1.0\nRequires-Dist: nonexistent-package\n"
    )
    shutil.copy("/bin/true", context / "x86-binary")  # the host's own (x86_64 on CI) executable
    (context / "Dockerfile").write_text(BROKEN_IMAGE_DOCKERFILE.format(image=built_image.image))
    tag = f"armgate/broken:{tmp_path.name[-20:].lower()}"
    command = ["docker", "buildx", "build", "--platform", "linux/arm64", "--load", "--network", "none"]
    made = subprocess.run([*command, "--tag", tag, str(context)], capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stderr[-2000:]
    yield tag
    subprocess.run(["docker", "image", "rm", "--force", tag], capture_output=True, check=False)


def test_every_image_check_fails_on_a_broken_image(broken_image: str, tmp_path: Path) -> None:
    expected = dict(BROKEN_IMAGE_FAILURES)
    if platform.machine() in ("aarch64", "arm64"):
        del expected["test_every_elf_file_is_aarch64"]  # the host's /bin/true is not foreign there
    text = (profiles.PROFILES_DIR / "bookworm.toml").read_text()
    profile = tmp_path / "bookworm.toml"
    profile.write_text(text.replace('python = "3.11"', 'python = "3.12"'))
    reports = tmp_path / "acceptance"
    # one case, and every case check deselected: only the image checks run
    result = gate(broken_image, reports, "--profile", str(profile), "--cases", str(one_case(tmp_path)),
                  "-k", "not standard")  # fmt: skip
    assert result.returncode == 1
    failed = failed_checks(reports)
    assert set(failed) == set(expected), failed
    for check, reason in expected.items():
        assert reason in failed[check], (check, failed[check])
        assert check in result.stdout
