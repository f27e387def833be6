"""A real MAP gated by its own manifests: the Holoscan-generation fixture app packaged by holoscan-cli 4.2.0's
`package` for an arm64 platform (its context built offline, fixtures/map_build.py), run on linux/arm64 with
no NVIDIA runtime and no GPU, input and output where app.json says, models from the image, and its SEG held
to the fixture app's goldens. A MAP whose manifest names no command, a command or model root the image
lacks, or is no MAP, stops the gate in one line; a pkg.json memory the run exceeds kills the run, and the
check says which limit; app.json and pkg.json in the specification's form are read as well, and said to be."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fixtures import map_build
from tests.conftest import HOLOSCAN_CONTRACT, run_gate
from validation import engine, run
from validation.build import BuildRecord

pytestmark = [pytest.mark.docker, pytest.mark.slow]
MAP_CONTRACT = map_build.MAP_DIR / "map.toml"


@pytest.fixture(scope="module")
def map_image(
    holoscan_image: BuildRecord, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[map_build.MapBuild]:
    """The fixture app's MAP, made by the packager on the fixture app's image (its layers reused)."""
    made = map_build.build(holoscan_image.image_id, tmp_path_factory.mktemp("map-build"))
    with run.holding(made.image_id, "linux/arm64", {"org.armgate.test-session": str(os.getpid())}):
        yield made


def gate(image: str, reports: Path, *args: str) -> dict:
    """The gate's metrics (with its exit code and output) after `acceptance --image IMAGE --map ...`."""
    result = run_gate(["--image", image, "--map", str(MAP_CONTRACT), "--reports", str(reports), *args])
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    metrics = json.loads((reports / "metrics.json").read_text())
    metrics["exit_code"], metrics["output"] = result.returncode, result.stdout[-3000:] + result.stderr[-2000:]
    return metrics


def one_case(tmp_path: Path) -> Path:
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "holoscan-standard").symlink_to(HOLOSCAN_CONTRACT.parent / "cases" / "holoscan-standard")
    return cases


@contextmanager
def derived_map(made: map_build.MapBuild, tmp_path: Path, app: dict | None = None, pkg: dict | None = None,
                label_version: str | None = None) -> Iterator[str]:  # fmt: skip
    """The MAP with other manifests (and version label), removed afterwards: no RUN, so nothing emulated."""
    files, lines = {}, []
    for name, manifest in (("app.json", app), ("pkg.json", pkg)):
        if manifest is not None:
            files[name] = json.dumps(manifest).encode()
            lines.append(f"COPY {name} /etc/holoscan/{name}")
    if label_version:
        lines.append(f'LABEL org.opencontainers.image.version="{label_version}"')
    steps = "\n".join(lines)
    with engine.derived_image(made.image, "linux/arm64", steps, tmp_path / "derived", files) as tag:
        yield tag


def manifest(made: map_build.MapBuild, name: str) -> dict:
    """app.json or pkg.json as the packager wrote it into its context."""
    return json.loads((made.context / "map" / name).read_text())


def test_the_packager_writes_the_map_but_does_not_build_it_offline(map_image: map_build.MapBuild) -> None:
    stop = map_image.packager_stop
    assert map_image.packager_exit == 1 and stop.startswith("ERROR"), stop
    # where it stops: booting the docker-container builder it always creates, whose BuildKit image is Docker
    # Hub's (no registry is reachable from the build hosts)
    log = (map_image.context.parent / "packager.log").read_text()
    assert "Creating Docker BuildKit builder `holoscan_app_builder` using `docker-container`" in log
    assert "registry-1.docker.io" in stop, stop
    assert (map_image.context / "map" / "app.json").is_file() and (map_image.context / "tools").is_file()
    labels = engine.require_image(map_image.image, "").labels
    assert labels["org.nvidia.holoscan"] == "3.11.0" and labels["org.monai.deploy.app-sdk"] == "3.5.0"
    assert len(map_image.adapted) == len(map_build.config()["offline"]), "each offline rule applied once"


def test_the_map_passes_the_gate_on_arm64_by_its_own_manifests_without_a_gpu(
    map_image: map_build.MapBuild, tmp_path: Path
) -> None:
    metrics = gate(map_image.image, tmp_path / "acceptance")
    assert metrics["exit_code"] == 0 and metrics["verdict"] == "pass", metrics["output"]
    assert set(metrics["cases"]) == {"holoscan-oblique", "holoscan-standard"}
    facts = metrics["app"]["map"]
    assert facts["app_json"].startswith("/etc/holoscan/app.json: the packager's form (command a JSON list")
    assert facts["pkg_json"].startswith("/etc/holoscan/pkg.json: the packager's form (models a name -> path")
    assert "the packager's form" in metrics["output"], "the console says which form was read"
    names = {check["name"] for check in metrics["checks"]}
    assert {"test_runs_as_non_root_user", "test_every_elf_file_loads_with_the_images_own_libraries",
            "test_dicom_seg[holoscan-standard]"} <= names  # fmt: skip
    assert not [name for name in names if name.startswith(("test_pin", "test_host"))], (
        "no profile, no host run"
    )
    for case in metrics["cases"].values():
        command = " ".join(case["run"]["command"])
        assert f"dicom:/var/holoscan/input:ro -v {case['run']['output_dir']}:/var/holoscan/output" in command
        assert command.count(" -v ") == 2, "no model mount: the MAP's models are its own"
        assert "--memory 2g" in command and "--read-only" in command and "--runtime" not in command
        assert command.endswith("--entrypoint python3 armgate/holoscan-spleen-map:1.0 /opt/holoscan/app")


def _without(data: dict, key: str) -> dict:
    return {name: value for name, value in data.items() if name != key}


@pytest.mark.parametrize(
    ("manifests", "expected"),
    [
        (lambda app, pkg: (_without(app, "command"), None),
         "/etc/holoscan/app.json: field 'command' is missing; a MAP must say what runs its app"),
        (lambda app, pkg: ({**app, "command": '["python3", "/opt/holoscan/no-app"]'}, None),
         '/etc/holoscan/app.json command ["python3", "/opt/holoscan/no-app"]: /opt/holoscan/no-app is not'),
        (lambda app, pkg: (None, {**pkg, "modelRoot": "/opt/holoscan/no-models", "models": {}}),
         "/etc/holoscan/pkg.json modelRoot /opt/holoscan/no-models is not a folder of the image"),
    ],
    ids=["no-command", "command-not-in-image", "model-root-not-in-image"],
)  # fmt: skip
def test_a_manifest_naming_what_the_map_lacks_stops_the_gate_in_one_line(
    map_image: map_build.MapBuild, tmp_path: Path, manifests, expected: str
) -> None:
    app, pkg = manifests(manifest(map_image, "app.json"), manifest(map_image, "pkg.json"))
    with derived_map(map_image, tmp_path, app, pkg) as image:
        result = run_gate(["--image", image, "--map", str(MAP_CONTRACT), "--reports", str(tmp_path / "r")])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"armgate: {image}") and expected in lines[0], lines[0]
    assert "repackage it" in lines[0], "the line says what to do"


def test_an_image_that_is_no_map_is_named_so(holoscan_image: BuildRecord, tmp_path: Path) -> None:
    result = run_gate(
        ["--image", holoscan_image.image_id, "--map", str(MAP_CONTRACT), "--reports", str(tmp_path)]
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "no /etc/holoscan/app.json or /etc/holoscan/pkg.json: not a MONAI Application Package" in lines[0]


def test_a_run_past_the_pkg_json_memory_is_killed_by_it_and_the_check_says_so(
    map_image: map_build.MapBuild, tmp_path: Path
) -> None:
    pkg = manifest(map_image, "pkg.json")
    with derived_map(
        map_image, tmp_path, pkg={**pkg, "resources": {**pkg["resources"], "memory": "256Mi"}}
    ) as image:
        metrics = gate(image, tmp_path / "acceptance", "--cases", str(one_case(tmp_path)))
    assert metrics["exit_code"] == 1 and metrics["verdict"] == "fail", metrics["output"]
    failed = {check["name"]: check["reason"] for check in metrics["checks"] if check["status"] == "failed"}
    assert list(failed) == ["test_container_run[holoscan-standard]"], failed
    reason = failed["test_container_run[holoscan-standard]"].split("\n", 1)[0]
    assert reason.startswith(
        "AssertionError: container run was killed by its memory limit (256m: pkg.json resources.memory 256Mi)"
    ), reason
    assert metrics["cases"]["holoscan-standard"]["run"]["oom_killed"] is True


def test_manifests_in_the_specifications_form_are_read_and_said_to_be(
    map_image: map_build.MapBuild, tmp_path: Path
) -> None:
    app = {"apiVersion": "1.0.0", "type": "application", "command": "python3 /opt/holoscan/app",
           "environment": _without(manifest(map_image, "app.json")["environment"], "HOLOSCAN_DOCS_PATH"),
           "input": {"path": "input/", "formats": [{"type": "file"}]},
           "output": {"path": "output/", "format": {"type": "file"}},
           "sdk": "monai-deploy", "sdkVersion": "3.5.0", "timeout": 0, "version": "1.0.0",
           "workingDirectory": "/var/holoscan/"}  # fmt: skip
    pkg = {"apiVersion": "1.0.0", "applicationRoot": "/opt/holoscan/app/",
           "modelRoot": "/opt/holoscan/models/", "models": [{"name": "model", "path": "model"}],
           "version": "1.0.0",
           "resources": {"cpu": 1, "memory": "2Gi", "sharedMemory": "64Mi"}}  # fmt: skip
    with derived_map(map_image, tmp_path, app, pkg, label_version="1.0.0") as image:
        metrics = gate(image, tmp_path / "acceptance", "--cases", str(one_case(tmp_path)))
    assert metrics["exit_code"] == 0 and metrics["verdict"] == "pass", metrics["output"]
    facts = metrics["app"]["map"]
    assert facts["app_json"].startswith("/etc/holoscan/app.json: the specification's form (command a shell")
    assert facts["pkg_json"].startswith("/etc/holoscan/pkg.json: the specification's form (models a list")
    command = metrics["cases"]["holoscan-standard"]["run"]["command"]
    assert command[-5:] == ["--entrypoint", "/bin/sh", image, "-c", "python3 /opt/holoscan/app"], command[-5:]
