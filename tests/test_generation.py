"""The contract speaks both App SDK generations: paths by flags or HOLOSCAN_* variables, an app.yaml's
memory as the run's limit, and profiles that refuse an app of the other generation before building."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from validation import build, cases, contract, generation, profiles
from validation.errors import GateError

HOLOSCAN_CONTRACT = profiles.ROOT / "fixtures" / "holoscan" / "app.toml"


def test_the_holoscan_fixture_contract_reads_paths_from_variables_and_memory_from_app_yaml() -> None:
    app = contract.load(HOLOSCAN_CONTRACT)
    assert app.sdk == "holoscan" and app.args == () and app.outputs == {"seg": "*.dcm"}
    assert app.entrypoint == ("python3", "./__main__.py")
    assert generation.image_env(app) == {
        "HOLOSCAN_INPUT_PATH": "/input",
        "HOLOSCAN_MODEL_PATH": "/model/model.ts",
        "HOLOSCAN_OUTPUT_PATH": "/output",
    }
    assert app.resources == {"cpu": "1", "memory": "2g"}  # app/app.yaml: memory: 2Gi
    classic = contract.load()
    assert classic.sdk == "classic" and classic.env == {} and classic.resources == {}
    assert generation.image_env(classic) == {}


def test_the_image_carries_the_variables_before_its_entry_point(tmp_path: Path) -> None:
    dockerfile = (build.stage_context(contract.load(HOLOSCAN_CONTRACT), tmp_path) / "Dockerfile").read_text()
    tail = dockerfile.splitlines()[-4:]
    assert tail == [
        'ENV HOLOSCAN_INPUT_PATH="/input"', 'ENV HOLOSCAN_MODEL_PATH="/model/model.ts"',
        'ENV HOLOSCAN_OUTPUT_PATH="/output"', 'ENTRYPOINT ["python3", "./__main__.py"]',
    ]  # fmt: skip
    classic = (build.stage_context(contract.load(), tmp_path / "classic") / "Dockerfile").read_text()
    assert "HOLOSCAN_" not in classic


def test_the_host_run_gets_the_variables_and_a_holoscan_apps_cuda_runtime() -> None:
    app = contract.load(HOLOSCAN_CONTRACT)
    env = generation.host_env(app, Path("/data/in"), Path("/data/model.ts"), Path("/data/out"))
    assert env["HOLOSCAN_INPUT_PATH"] == "/data/in" and env["HOLOSCAN_OUTPUT_PATH"] == "/data/out"
    assert env["HOLOSCAN_MODEL_PATH"] == "/data/model.ts" and "LD_LIBRARY_PATH" in env
    classic = generation.host_env(contract.load(), Path("/i"), Path("/m"), Path("/o"))
    assert not [name for name in classic if name.startswith("HOLOSCAN_")]


def _contract(tmp_path: Path, replace: tuple[str, str], app_yaml: str | None = None) -> Path:
    text = HOLOSCAN_CONTRACT.read_text().replace(
        'source = "app"', f'source = "{HOLOSCAN_CONTRACT.parent}/app"'
    )
    text = text.replace('app_yaml = "app/app.yaml"', 'app_yaml = "app.yaml"').replace(*replace)
    (tmp_path / "app.yaml").write_text(app_yaml or "resources:\n  memory: 2Gi\n")
    (tmp_path / "app.toml").write_text(text)
    return tmp_path / "app.toml"


@pytest.mark.parametrize(
    ("replace", "app_yaml", "message"),
    [
        (
            ('HOLOSCAN_MODEL_PATH = "{model}", ', ""),
            None,
            r"'app.args' must place \{model\} \(or 'app.env'",
        ),
        (
            ('sdk = "holoscan"', 'sdk = "holoscan4"'),
            None,
            r"'app.sdk' is 'holoscan4'; expected one of: classic",
        ),
        (("env = {", 'env = { "1BAD" = "x", '), None, r"'app.env' key '1BAD' is not an environment variable"),
        (("", ""), "resources:\n  memory: lots\n", r"app.yaml: resources.memory 'lots' is not a size"),
        (("", ""), "resources: [1, 2\n", r"app.yaml: not valid YAML"),
        (('app_yaml = "app.yaml"', 'app_yaml = "none.yaml"'), None, r"'app.app_yaml' points to .*none.yaml"),
    ],
)
def test_a_bad_generation_field_is_one_line_naming_the_file(
    tmp_path: Path, replace: tuple[str, str], app_yaml: str | None, message: str
) -> None:
    with pytest.raises(GateError, match=message) as error:
        contract.load(_contract(tmp_path, replace, app_yaml))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("quantity", "docker"), [("2Gi", "2g"), ("512Mi", "512m"), ("1.5Gi", "1536m"), ("1G", "1000000000")]
)
def test_app_yaml_memory_becomes_a_docker_size_and_the_limit_of_cases_that_set_none(
    tmp_path: Path, quantity: str, docker: str
) -> None:
    app = contract.load(_contract(tmp_path, ("", ""), f"resources:\n  cpu: 1\n  memory: {quantity}\n"))
    assert app.resources["memory"] == docker and cases.memory_bytes(docker) is not None
    spleen = profiles.ROOT / "fixtures" / "spleen" / "cases" / "spleen-standard"
    case = tmp_path / "cases" / "spleen-standard"
    case.mkdir(parents=True)
    (case / "dicom").symlink_to(spleen / "dicom")
    (case / "reference").symlink_to(spleen / "reference")
    text = (spleen / "case.toml").read_text()
    (case / "case.toml").write_text(text.replace('memory = "2g"\n', ""))
    assert cases.discover(tmp_path / "cases", app)[0].memory == docker  # the app's own
    (case / "case.toml").write_text(text.replace('memory = "2g"', 'memory = "3g"'))
    assert cases.discover(tmp_path / "cases", app)[0].memory == "3g"  # the case's, when it sets one


@pytest.mark.parametrize(
    ("app_contract", "profile", "message"),
    [
        (contract.DEFAULT_CONTRACT, "bookworm-sdk3.5",
         r"bookworm-sdk3\.5\.toml: profile bookworm-sdk3\.5 builds App SDK 'holoscan'-generation apps "
         r".*app\.toml declares \[app\] sdk = 'classic'; choose a profile of that generation "
         r"\(.*bullseye-torch1\.8.*\)"),
        (HOLOSCAN_CONTRACT, "bookworm",
         r"bookworm\.toml: profile bookworm builds App SDK 'classic'-generation apps "
         r"\(monai-deploy-app-sdk<0\.6\).*\(.*bookworm-sdk3\.5.*trixie-sdk4\.0.*\)"),
    ],
)  # fmt: skip
def test_a_profile_refuses_an_app_of_the_other_generation_before_building(
    app_contract: Path, profile: str, message: str
) -> None:
    app = contract.load(app_contract)
    with pytest.raises(GateError, match=message):
        generation.check(app, profiles.load(profile))
    with pytest.raises(GateError, match=message):  # the first thing build() does: no engine, no lock read
        build.build(profiles.load(profile), app=app, report=Path("/nonexistent/build.json"))


@pytest.mark.parametrize(
    ("app_contract", "profile"),
    [(contract.DEFAULT_CONTRACT, "trixie-sdk4.0"), (HOLOSCAN_CONTRACT, "bookworm")],
)
@pytest.mark.parametrize("subcommand", ["build", "acceptance"])
def test_the_build_and_gate_commands_refuse_it_in_one_line_without_a_traceback(
    app_contract: Path, profile: str, subcommand: str
) -> None:
    """The gate refuses it too, before it looks for the image (none by this name exists)."""
    command = [sys.executable, "-m", "validation", subcommand, "--profile", profile]
    command += ["--app", str(app_contract)]
    command += ["--image", "armgate/no-such-image:never"] if subcommand == "acceptance" else []
    result = subprocess.run(command, cwd=profiles.ROOT, capture_output=True, text=True, check=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"armgate: {profiles.PROFILES_DIR / profile}.toml: profile {profile} builds")
    assert "Traceback" not in result.stdout + result.stderr
