"""A MAP's manifests read in both forms (the specification's and the packager's), each problem one line naming
the manifest and the field; the paths they name looked up in the image's files; and the run built from them:
input and output at the manifest's paths, no model mount, pkg.json's resources as the limits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from validation import gate, map_contract, map_image, map_manifest, map_run, report_view, run
from validation.errors import GateError
from validation.map_image import ImagePaths, MapPackage
from validation.results import GateResults

ROOT = Path(__file__).resolve().parents[1]
APP_WHERE, PKG_WHERE = "img /etc/holoscan/app.json", "img /etc/holoscan/pkg.json"
# As holoscan-cli 4.2.0's `package` writes them for the fixture app (fixtures/map/README.md)
PACKAGER_APP = {
    "apiVersion": "1.0.0", "command": '["python3", "/opt/holoscan/app"]',
    "environment": {"HOLOSCAN_APPLICATION": "/opt/holoscan/app", "HOLOSCAN_INPUT_PATH": "input/",
                    "HOLOSCAN_OUTPUT_PATH": "output/", "HOLOSCAN_MODEL_PATH": "/opt/holoscan/models",
                    "HOLOSCAN_CONFIG_PATH": "/var/holoscan/app.yaml",
                    "HOLOSCAN_LOGS_PATH": "/var/holoscan/logs"},
    "input": {"path": "input/", "formats": None}, "liveness": None,
    "output": {"path": "output/", "formats": None},
    "readiness": None, "sdk": "monai-deploy", "sdkVersion": "3.5.0", "timeout": 0, "version": 1.0,
    "workingDirectory": "/var/holoscan",
}  # fmt: skip
PACKAGER_PKG = {
    "apiVersion": "1.0.0", "applicationRoot": "/opt/holoscan/app", "modelRoot": "/opt/holoscan/models",
    "models": {"model": "/opt/holoscan/models/model"}, "resources": {"cpu": 1, "memory": "2Gi"},
    "version": 1.0, "platformConfig": "dgpu",
}  # fmt: skip
# The same MAP in the specification's form
SPEC_APP = {
    "apiVersion": "1.0.0", "type": "application", "command": "python3 /opt/holoscan/app",
    "input": {"path": "input/", "formats": [{"type": "file"}]}, "output": {"path": "/results", "format": {}},
    "version": "1.0.0", "workingDirectory": "/var/holoscan/",
}  # fmt: skip
SPEC_PKG = {
    "applicationRoot": "/opt/holoscan/app/", "modelRoot": "/opt/holoscan/models/",
    "models": [{"name": "model", "path": "model"}, {"name": "other"}],
    "resources": {"cpu": 2, "memoryLimit": "1.5Gi", "memory": "1Gi", "sharedMemory": "128Mi", "gpu": 1},
    "version": "1.0.0",
}  # fmt: skip


def app_json(data: dict) -> map_manifest.AppManifest:
    return map_manifest.parse_app_json(json.dumps(data), APP_WHERE)


def pkg_json(data: dict) -> map_manifest.PackageManifest:
    return map_manifest.parse_pkg_json(json.dumps(data), PKG_WHERE)


def test_the_packagers_app_json_is_read_and_said_to_be_in_its_form() -> None:
    app = app_json(PACKAGER_APP)
    assert app.form.name == "packager" and not app.shell
    assert app.command == ("python3", "/opt/holoscan/app") and app.program() == [
        "python3",
        "/opt/holoscan/app",
    ]
    assert (app.input_path, app.output_path) == ("/var/holoscan/input", "/var/holoscan/output")
    assert app.version == "1.0" and app.sdk == "monai-deploy" and app.timeout_s == 0
    assert app.form.describe() == (
        "the packager's form (command a JSON list in a string; no type; output.formats; version 1.0 a number)"
    )


def test_the_specifications_app_json_is_read_and_said_to_be_in_its_form() -> None:
    app = app_json({**SPEC_APP, "command": "OMP_NUM_THREADS=1 python3 /opt/holoscan/app --flag"})
    assert app.form.name == "spec" and app.shell
    assert app.command == ("/bin/sh", "-c", "OMP_NUM_THREADS=1 python3 /opt/holoscan/app --flag")
    assert app.program() == ["python3", "/opt/holoscan/app", "--flag"], (
        "leading VAR=value words are no program"
    )
    assert app.output_path == "/results", "an absolute output path stays as it is"
    assert app.input_path == "/var/holoscan/input" and app.version == "1.0.0"
    described = app.form.describe()
    assert described.startswith("the specification's form (command a shell command; type application"), (
        described
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"command": None}, "field 'command' is missing; a MAP must say what runs its app"),
        ({"command": ""}, "field 'command' is empty"),
        (
            {"command": '["python3", '},
            "field 'command' = '[\"python3\", ' starts like a JSON list but is not one",
        ),
        ({"command": '["python3", 3]'}, "must list the program and its arguments as strings"),
        ({"command": {"run": "x"}}, "field 'command' must be a shell command or a JSON list"),
        ({"type": "service"}, "field 'type' = \"service\": armgate gates an app that runs a case and exits"),
        (
            {"workingDirectory": "var/holoscan"},
            "field 'workingDirectory' = 'var/holoscan' must be an absolute",
        ),
        ({"timeout": -5}, "field 'timeout' must be whole seconds >= 0"),
        ({"environment": ["A=1"]}, "field 'environment' must be an object of name: value pairs"),
        ({"environment": {"A-B": "1"}}, "field 'environment.A-B' is not an environment variable name"),
        ({"input": "input/"}, "field 'input' must be an object with a 'path'"),
        ({"version": [1, 0]}, "field 'version' must be a semantic version"),
    ],
)
def test_a_bad_app_json_fails_in_one_line_naming_the_manifest_and_field(change: dict, expected: str) -> None:
    data = {key: value for key, value in {**PACKAGER_APP, **change}.items() if value is not None}
    with pytest.raises(GateError) as raised:
        app_json(data)
    message = str(raised.value)
    assert message.startswith(f"{APP_WHERE}: ") and expected in message and "\n" not in message, message


@pytest.mark.parametrize(
    ("text", "expected"), [("{not json", "not valid JSON"), ("[1, 2]", "must hold a JSON object, not list")]
)
def test_a_manifest_that_is_no_json_object_fails_in_one_line(text: str, expected: str) -> None:
    with pytest.raises(GateError, match=expected):
        map_manifest.parse_pkg_json(text, PKG_WHERE)


def test_the_packagers_pkg_json_gives_its_models_and_its_memory_as_the_runs_limit() -> None:
    pkg = pkg_json(PACKAGER_PKG)
    assert pkg.form.name == "packager" and pkg.models == {"model": "/opt/holoscan/models/model"}
    assert (pkg.application_root, pkg.model_root) == ("/opt/holoscan/app", "/opt/holoscan/models")
    limits = pkg.limits
    assert (limits.memory, limits.memory_basis) == ("2g", "pkg.json resources.memory 2Gi")
    assert (limits.shared_memory, limits.cpus, limits.gpus) == ("64m", 1.0, 0.0)
    assert "the specification's default 64Mi" in limits.shared_memory_basis
    assert pkg.form.describe().startswith("the packager's form (models a name -> path object; platformConfig")


def test_the_specifications_pkg_json_gives_a_list_of_models_and_its_limits() -> None:
    pkg = pkg_json(SPEC_PKG)
    assert pkg.form.name == "spec"
    assert pkg.models == {"model": "/opt/holoscan/models/model", "other": "/opt/holoscan/models/other"}
    limits = pkg.limits
    assert limits.memory == "1536m" and limits.memory_basis == "pkg.json resources.memoryLimit 1.5Gi", (
        "the limit, not the request, bounds the run"
    )
    assert (limits.shared_memory, limits.cpus, limits.gpus) == ("128m", 2.0, 1.0)
    assert limits.describe().endswith("asks for 1 GPU, runs on the CPU")


def test_kebab_case_resource_keys_are_read_and_said_to_be_the_packagers() -> None:
    pkg = pkg_json({"resources": {"memory": "4Gi", "memory-limit": "3Gi", "shared-memory": "1Gi"}})
    assert (pkg.limits.memory, pkg.limits.shared_memory) == ("3g", "1g")
    assert pkg.form.name == "packager" and "resources.memory-limit kebab-case" in pkg.form.signs


def test_without_resources_the_specifications_defaults_are_the_limits() -> None:
    limits = pkg_json({}).limits
    assert (limits.memory, limits.shared_memory, limits.cpus) == ("1g", "64m", 1.0)
    assert limits.memory_basis == "the specification's default 1Gi, pkg.json names none"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2Gi", 2 * 2**30), ("1.5GiB", 1536 * 2**20), ("512Mi", 512 * 2**20), ("2GB", 2 * 10**9), (1024, 1024),
     ("2 gigs", None), ("-1Gi", None), ("0Mi", None), (True, None), ("Gi", None)],
)  # fmt: skip
def test_sizes_in_the_specifications_and_the_packagers_units(value: object, expected: int | None) -> None:
    assert map_manifest.size_bytes(value) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"resources": {"memory": "2 gigs"}}, "field 'resources.memory' = \"2 gigs\" is not a size"),
        ({"resources": {"cpu": "one"}}, "field 'resources.cpu' = \"one\" must be a number >= 0.01"),
        ({"resources": ["memory"]}, "field 'resources' must be an object"),
        ({"models": [{"path": "m"}]}, "field 'models' must list objects with a 'name'"),
        (
            {"models": {"my model": "/m"}},
            "field 'models' name 'my model' must be 1 to 128 bytes without whitespace",
        ),
        ({"models": "model"}, "field 'models' must be a list of {name, path} or a name -> path object"),
        ({"modelRoot": "models"}, "field 'modelRoot' = 'models' must be an absolute path"),
    ],
)
def test_a_bad_pkg_json_fails_in_one_line_naming_the_field(data: dict, expected: str) -> None:
    with pytest.raises(GateError) as raised:
        pkg_json(data)
    message = str(raised.value)
    assert message.startswith(f"{PKG_WHERE}: ") and expected in message and "\n" not in message, message


def image(files: dict[str, str], links: dict[str, str] | None = None) -> ImagePaths:
    """An image's paths: `files` are regular files (their folders are made), `links` symlinks."""
    kinds: dict[str, str] = {}
    for path in [*files, *(links or {})]:
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            kinds["/" + "/".join(parts[:depth])] = "dir"
    kinds |= dict.fromkeys(files, "file") | dict.fromkeys(links or {}, "other")
    return ImagePaths(kinds, dict(links or {}), {})


FIXTURE_IMAGE = {
    "/usr/bin/python3.11": "", "/opt/holoscan/app/__main__.py": "", "/bin/sh": "",
    "/opt/holoscan/models/model/model.ts": "",
}  # fmt: skip
VENV_LINKS = {"/opt/venv/bin/python3": "python3.11", "/opt/venv/bin/python3.11": "/usr/bin/python3.11"}
ENV = {"PATH": "/home/holoscan/.local/bin:/opt/venv/bin:/usr/bin"}


def test_symlinks_are_followed_inside_the_image() -> None:
    paths = image(FIXTURE_IMAGE, {**VENV_LINKS, "/loop/a": "b", "/loop/b": "a", "/up": "../opt/./holoscan"})
    assert paths.resolve("/opt/venv/bin/python3") == "/usr/bin/python3.11", "relative, then absolute targets"
    assert paths.is_file("/opt/venv/bin/python3") and not paths.is_dir("/opt/venv/bin/python3")
    assert paths.is_dir("/up/app") and paths.is_file("/up/app/__main__.py")
    assert paths.resolve("/loop/a") is None and paths.resolve("/opt/holoscan/nowhere") is None
    assert paths.is_dir("/") and not paths.is_file("/")


def test_a_map_whose_image_holds_all_its_manifests_name_has_no_problem() -> None:
    paths = image(FIXTURE_IMAGE, VENV_LINKS)
    assert map_image.in_image_problems(app_json(PACKAGER_APP), pkg_json(PACKAGER_PKG), paths, ENV) == []
    spec_app = app_json(SPEC_APP)
    assert map_image.in_image_problems(spec_app, pkg_json({**SPEC_PKG, "models": []}), paths, ENV) == []


@pytest.mark.parametrize(
    ("app_change", "pkg_change", "expected"),
    [
        ({"command": '["python4", "/opt/app"]'}, {},
         '/etc/holoscan/app.json command ["python4", "/opt/app"]: python4 is not in the image (PATH '),
        ({"command": '["python3", "/opt/holoscan/nowhere"]'}, {},
         '/etc/holoscan/app.json command ["python3", "/opt/holoscan/nowhere"]: /opt/holoscan/nowhere is not'),
        ({"command": '["/opt/holoscan/app/run"]'}, {},
         '/etc/holoscan/app.json command ["/opt/holoscan/app/run"]: /opt/holoscan/app/run is not in the'),
        ({}, {"modelRoot": "/opt/holoscan/no-models", "models": {}},
         "/etc/holoscan/pkg.json modelRoot /opt/holoscan/no-models is not a folder of the image"),
        ({}, {"models": {"seg": "/opt/holoscan/models/seg"}},
         "/etc/holoscan/pkg.json model seg: /opt/holoscan/models/seg is not in the image"),
        ({}, {"applicationRoot": "/opt/app"},
         "/etc/holoscan/pkg.json applicationRoot /opt/app is not a folder"),
    ],
)  # fmt: skip
def test_what_the_manifests_name_and_the_image_lacks_is_named(
    app_change: dict, pkg_change: dict, expected: str
) -> None:
    paths = image(FIXTURE_IMAGE, VENV_LINKS)
    app, pkg = app_json({**PACKAGER_APP, **app_change}), pkg_json({**PACKAGER_PKG, **pkg_change})
    problems = map_image.in_image_problems(app, pkg, paths, ENV)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_a_shell_command_needs_the_images_shell() -> None:
    paths = image({key: value for key, value in FIXTURE_IMAGE.items() if key != "/bin/sh"}, VENV_LINKS)
    problems = map_image.in_image_problems(app_json(SPEC_APP), pkg_json(PACKAGER_PKG), paths, ENV)
    assert problems == ["/etc/holoscan/app.json command is a shell command, but the image has no /bin/sh"]


def package(app: dict = PACKAGER_APP, pkg: dict = PACKAGER_PKG) -> MapPackage:
    return MapPackage("map:1", app_json(app), pkg_json(pkg), "holoscan", 1001, {"PATH": "/usr/bin"})


def test_the_run_mounts_the_case_where_the_manifests_say_and_no_model(tmp_path: Path) -> None:
    argv = map_run.map_run_command(
        "map:1", "armgate-run-x", package(), tmp_path / "in", tmp_path / "out", "2g"
    )
    joined = " ".join(argv)
    assert f"-v {tmp_path / 'in'}:/var/holoscan/input:ro" in joined
    assert f"-v {tmp_path / 'out'}:/var/holoscan/output" in joined
    assert joined.count(" -v ") == 2, "input and output only: the models are the image's"
    assert "--env HOLOSCAN_INPUT_PATH=/var/holoscan/input" in joined, "absolute, where the input is mounted"
    assert "--env HOLOSCAN_MODEL_PATH=/opt/holoscan/models" in joined
    assert "--memory 2g --memory-swap 2g --shm-size 64m --cpus 1" in joined
    assert "--read-only" in argv and "--mount type=volume,destination=/var/holoscan" in joined
    assert "--workdir /var/holoscan" in joined and joined.endswith(
        "--entrypoint python3 map:1 /opt/holoscan/app"
    )
    assert not {"--user", "--runtime", "--gpus"} & set(argv), "the image's own user, runc, no GPU"


def test_a_shell_command_runs_through_the_images_shell_and_a_holoscan_app_gets_its_config(
    tmp_path: Path,
) -> None:
    spec_run = map_run.map_run_command("m", "n", package(SPEC_APP), tmp_path, tmp_path, "1g", hardened=False)
    assert spec_run[-4:] == ["/bin/sh", "m", "-c", "python3 /opt/holoscan/app"]
    assert "--read-only" not in spec_run and "--network" in spec_run
    holoscan = {**PACKAGER_APP, "sdk": "holoscan"}
    argv = map_run.map_run_command("m", "n", package(holoscan), tmp_path, tmp_path, "1g")
    assert argv[-3:] == ["/opt/holoscan/app", "--config", "/var/holoscan/app.yaml"], (
        "as `holoscan run` adds it"
    )


def test_the_line_of_a_run_its_limit_killed_says_where_the_limit_came_from() -> None:
    result = run.RunResult("container", Path("out"), 137, 9.8, oom_killed=True)
    result.memory_basis = map_run.memory_basis(package(), "2g")
    assert result.failure().startswith(
        "container run was killed by its memory limit (2g: pkg.json resources.memory 2Gi)"
    )
    assert map_run.memory_basis(package(), "4g") == "4g: the case's run.memory"


def test_the_short_contract_says_only_what_the_manifests_cannot() -> None:
    short = map_contract.load(ROOT / "fixtures" / "map" / "map.toml")
    assert short.outputs == {"seg": "*.dcm"} and short.labels == {1: "spleen"}
    assert short.default_cases == ROOT / "fixtures" / "holoscan" / "cases"
    app = map_contract.app_contract(short, package(), "title")
    assert (app.mounts.input, app.mounts.output) == ("/var/holoscan/input", "/var/holoscan/output")
    assert (
        app.resources == {"memory": "2g"} and app.package is not None and app.name == "holoscan-spleen (MAP)"
    )
    assert app.env["HOLOSCAN_OUTPUT_PATH"] == "/var/holoscan/output"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[map]\nmodel = 'x'\n", "unknown field 'map.model'"),
        ("[outputs]\nstl = '*.stl'\n[display]\nwindow_hu = [0, 1]\n[defaults]\ncases = 'c'\n",
         "field 'outputs' declares no label map"),
        ("[outputs]\nseg = '*.dcm'\n[labels]\nnames = { 1 = 'spleen' }\n[display]\nwindow_hu = [1]\n",
         "field 'display.window_hu' must be [low, high]"),
    ],
)  # fmt: skip
def test_a_bad_short_contract_fails_in_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "map.toml"
    path.write_text(text)
    with pytest.raises(GateError, match=re.escape(expected)):
        map_contract.load(path)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--map", "fixtures/map/map.toml"], "--map gates a MAP image: pass --image REF"),
        (["--map", "fixtures/map/map.toml", "--image", "m", "--model", "x.ts"], "leave out --model"),
    ],
)
def test_the_gate_asks_for_a_map_image_and_no_model(args: list[str], expected: str) -> None:
    with pytest.raises(GateError, match=expected):
        gate.parse_args(args)


def test_the_gate_takes_an_app_contract_or_a_map_contract_not_both(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        gate.parse_args(["--app", "container/app.toml", "--map", "fixtures/map/map.toml", "--image", "m"])
    assert exited.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_the_report_says_which_form_each_manifest_was_in(passing: dict) -> None:
    """The HTML report's image table shows what metrics.json records of the MAP (the forms first)."""
    facts = package().facts()
    view = report_view.view_model(GateResults.from_dict({**passing, "app": {"name": "x", "map": facts}}))
    rows = dict(view["image"]["facts"])
    assert rows["MAP app json"].startswith("/etc/holoscan/app.json: the packager's form (command a JSON list")
    assert rows["MAP pkg json"].startswith(
        "/etc/holoscan/pkg.json: the packager's form (models a name -> path"
    )
    assert rows["MAP models"] == "model: /opt/holoscan/models/model"
    assert rows["MAP limits"] == "memory 2g (pkg.json resources.memory 2Gi), shared memory 64m, cpus 1"
    plain = dict(report_view.view_model(GateResults.from_dict(passing))["image"]["facts"])
    assert not [title for title in plain if title.startswith("MAP")], "an app built by armgate shows none"
