"""Integration: the gate passes the real image on the real cases, and fails, naming why, on anything bad.

Every failing variant goes through the public command (`python -m validation acceptance`) and must
exit non-zero, name the reason on the console and in metrics.json, leave no container behind and
leave the fixtures byte-identical.
"""

from __future__ import annotations

import json
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

from tests.conftest import GateRun, fixture_digest, run_gate
from tests.test_image_files import elf
from validation import cases, contract, engine, profiles, run
from validation.build import BuildRecord

pytestmark = [pytest.mark.docker, pytest.mark.slow]
APP = contract.load()
STANDARD = APP.default_cases / "standard"


def gate(image: str, reports: Path, *args: str) -> subprocess.CompletedProcess[str]:
    before = fixture_digest()
    result = run_gate(["--image", image, "--reports", str(reports), *args])
    assert fixture_digest() == before, "the gate changed the fixtures"
    assert "Traceback" not in result.stderr, result.stderr
    return result


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
    return {check["name"]: check["reason"] for check in metrics["checks"] if check["status"] == "failed"}


def test_gate_passes_the_built_image(full_gate_run: GateRun) -> None:
    result, reports = full_gate_run.result, full_gate_run.reports
    assert full_gate_run.fixtures_after == full_gate_run.fixtures_before, "the gate changed the fixtures"
    assert "Traceback" not in result.stderr, result.stderr
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
    assert metrics["verdict"] == "pass"
    assert set(metrics["cases"]) == {case.name for case in cases.discover(APP.default_cases)}
    for name, case in metrics["cases"].items():  # each run's time, stage by stage, from the app's log
        for where in ("run", "host_run"):
            stages = list(case[where]["stage_seconds"])
            assert stages[0] == "imports" and stages[-1].startswith("write"), (name, where, stages)
            assert any(stage.startswith("inference window") for stage in stages), (name, where, stages)


def test_no_host_leaves_out_only_the_host_checks_and_says_partial(
    built_image: BuildRecord, tmp_path: Path
) -> None:
    """A case whose name contains "host" keeps every container check; the run is PARTIAL, everywhere."""
    folder = tmp_path / "cases"
    shutil.copytree(STANDARD, folder / "ghost-ct")
    toml = folder / "ghost-ct" / "case.toml"
    toml.write_text(toml.read_text().replace('name = "standard"', 'name = "ghost-ct"'))  # the folder's name
    reports = tmp_path / "acceptance"
    result = gate(built_image.image_id, reports, "--cases", str(folder), "--no-host")
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-2000:]
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["verdict"] == "partial" and metrics["counts"]["failed"] == 0, metrics["counts"]
    ran = {check["name"] for check in metrics["checks"]}
    case_checks = {"test_container_run[ghost-ct]", "test_outputs[ghost-ct]", "test_dicom_seg[ghost-ct]"}
    assert case_checks <= ran and sum(name.startswith("test_mask[ghost-ct") for name in ran) == 12, ran
    deselected = metrics["selection"]["deselected"]
    assert len(deselected) == 5 and all(name.startswith("test_host_") for name in deselected), deselected
    assert metrics["selection"]["options"] == ["--no-host"]
    junit = ElementTree.parse(reports / "junit.xml").getroot()
    properties = {p.get("name"): p.get("value") for p in junit.iter("property")}
    assert properties["armgate.verdict"] == "partial"
    assert "test_host_run[ghost-ct]" in properties["armgate.deselected"]
    assert "acceptance PARTIAL" in result.stdout and "not a release verdict" in result.stdout
    assert "<h1>PARTIAL</h1>" in (reports / "report.html").read_text()


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
    assert result.returncode == 1, result.stdout[-3000:]
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
    pins = json.loads((reports / "metrics.json").read_text())["image"]["pins"]  # the report's pin table
    assert {"name": "torch", "expected": "==2.9.1", "found": "2.10.0", "passed": False} in pins, pins


def _gate_process(
    image: str, tmp_path: Path, name: str, sigint_ignored: bool = False
) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "validation", "acceptance", "--image", image, "--no-host"]
    command += ["--reports", str(tmp_path / name / "acceptance"), "--cases", str(one_case(tmp_path / name))]
    command += ["-k", "test_container_run"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}

    def ignore_sigint() -> None:  # as a shell starts a background job of a script
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    preexec = ignore_sigint if sigint_ignored else None
    return subprocess.Popen(command, cwd=profiles.ROOT, preexec_fn=preexec, **pipes)


def _wait_for(condition, process: subprocess.Popen[str], limit_s: float = 600) -> None:
    deadline = time.monotonic() + limit_s
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.parametrize("moment", ["before-the-run-starts", "while-the-run-runs"])
def test_ctrl_c_removes_the_running_containers(built_image: BuildRecord, tmp_path: Path, moment: str) -> None:
    """An interrupt at any moment exits 130 (never a verdict), leaves none of the gate's containers,
    and does not touch another gate running on the same engine."""
    beside = _gate_process(built_image.image_id, tmp_path, "beside")
    gate_process = _gate_process(built_image.image_id, tmp_path, "interrupted")
    mine = f"org.armgate.gate-pid={gate_process.pid}"
    if moment == "before-the-run-starts":  # the race: workers about to create their container
        _wait_for((tmp_path / "interrupted" / "acceptance").is_dir, gate_process)
    else:

        def case_running() -> bool:  # the gate's own holder container is there from the start
            return any(name.endswith("-standard") for name in run.leftover_containers(mine))

        _wait_for(case_running, gate_process)
        assert case_running(), "no case container was seen running before the interrupt"
    gate_process.send_signal(signal.SIGINT)
    stdout, stderr = gate_process.communicate(timeout=300)
    assert gate_process.returncode == 130, stdout[-3000:] + stderr[-2000:]
    assert "Traceback" not in stderr, stderr
    assert run.leftover_containers(mine) == [], "containers left after Ctrl-C"
    beside_out, beside_err = beside.communicate(timeout=1200)
    beside_metrics = json.loads((tmp_path / "beside" / "acceptance" / "metrics.json").read_text())
    assert beside_metrics["counts"]["passed"] == 1, beside_out[-3000:] + beside_err[-2000:]
    assert beside.returncode == 3 and beside_metrics["verdict"] == "partial"  # -k: not a release verdict
    assert "container runs: 1/1 cases in" in beside_out and "checks: 1/1 checks in" in beside_out


def test_ctrl_c_ends_a_gate_started_with_sigint_ignored(built_image: BuildRecord, tmp_path: Path) -> None:
    """A gate run as a background job of a script inherits SIGINT ignored; it takes Ctrl-C over from its
    first step, so an interrupt as soon as its report folder exists still ends it with 130 and no
    container, rather than being lost while the run goes on to a verdict."""
    gate_process = _gate_process(built_image.image_id, tmp_path, "background", sigint_ignored=True)
    _wait_for((tmp_path / "background" / "acceptance").is_dir, gate_process)
    gate_process.send_signal(signal.SIGINT)
    stdout, stderr = gate_process.communicate(timeout=600)
    assert gate_process.returncode == 130, stdout[-3000:] + stderr[-2000:]
    assert "Traceback" not in stderr, stderr
    assert run.leftover_containers(f"org.armgate.gate-pid={gate_process.pid}") == []


X86_64 = 62  # ELF e_machine of the foreign binary the broken image holds
BROKEN_IMAGE_STEPS = """\
USER root
COPY x86-binary /opt/venv/lib/x86-binary
COPY x86-binary /usr/lib/python3.11/x86-stdlib-binary
COPY x86-binary /usr/local/share/x86-target
COPY METADATA /opt/venv/lib/python3.11/site-packages/broken-1.0.dist-info/METADATA
RUN rm /opt/multiorgan-seg/README.md && echo "# edited after the build" >> /opt/multiorgan-seg/app_config.py \
    && ln -s /usr/local/share/x86-target /opt/venv/bin/linked-tool && touch /root/leftover.whl
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
    "test_app_files_match_the_source": "missing: README.md; content differs from",
    "test_runs_as_non_root_user": "runs as root",
    "test_no_build_leftovers_or_credentials": "leftover.whl",
    "test_oci_labels": "built for profile other",
    "test_supports_locked_down_runs": "MONAI_WORKDIR",
}


@pytest.fixture
def broken_image(built_image: BuildRecord, tmp_path: Path):
    """The real image with one fault per image check layered on top (nothing pulled, no network)."""
    metadata = b"Metadata-Version: 2.1\nName: broken\nVersion: 1.0\nRequires-Dist: nonexistent-package\n"
    files = {"METADATA": metadata, "x86-binary": elf(X86_64)}  # foreign on every host, an ARM one included
    context = tmp_path / "broken"
    with engine.derived_image(built_image.image, "linux/arm64", BROKEN_IMAGE_STEPS, context, files) as tag:
        yield tag


def test_every_image_check_fails_on_a_broken_image(broken_image: str, tmp_path: Path) -> None:
    expected = dict(BROKEN_IMAGE_FAILURES)
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
    assert "app_config.py" in failed["test_app_files_match_the_source"]
    for path in ("/usr/lib/python3.11/x86-stdlib-binary", "/usr/local/share/x86-target"):  # stdlib, symlink
        assert path in failed["test_every_elf_file_is_aarch64"], failed["test_every_elf_file_is_aarch64"]


def test_pip_check_fails_when_pip_is_missing(built_image: BuildRecord, tmp_path: Path) -> None:
    steps = "USER root\nRUN rm -rf /opt/venv/lib/python3.11/site-packages/pip"
    with engine.derived_image(built_image.image, "linux/arm64", steps, tmp_path / "no-pip") as tag:
        reports = tmp_path / "acceptance"
        result = gate(tag, reports, "--cases", str(one_case(tmp_path)), "-k", "test_pip_check")
        assert result.returncode == 1, result.stdout[-3000:]
        failed = failed_checks(reports)
        assert list(failed) == ["test_pip_check"], failed
        assert "No module named pip" in failed["test_pip_check"], failed
