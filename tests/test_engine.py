"""validation/engine.py owns the `docker` CLI: no other module of validation/ or bench/ calls it.

The scan reads each module's syntax tree and flags, outside engine.py:
- the string "docker" as a constant (an argv's first word, or a name bound to it);
- a list or tuple whose first element names a docker binary ("/usr/bin/docker");
- a shell string starting with "docker " given to subprocess or os;
- an import of the Docker SDK (`import docker`);
- a command runner (subprocess, os, progress.run_command, run_logged) given an argv that was built
  by a function whose name says docker or that comes from the engine (an engine argv is run by the
  engine's own `execute`/`container`, never by hand).
Each rule has a snippet below that it must catch, so a weakened scan fails too.
"""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import pytest

from validation import engine, profiles
from validation.errors import GateError

ROOT = profiles.ROOT
SCANNED = ("validation", "bench")
OWNER = ROOT / "validation" / "engine.py"
# callee (dotted, as written) -> index of its argv argument
RUNNERS = {
    **{f"subprocess.{name}": 0 for name in ("run", "Popen", "call", "check_call", "check_output")},
    **{f"os.{name}": 0 for name in ("system", "popen", "execv", "execvp", "execvpe", "spawnv", "spawnvp")},
    "progress.run_command": 1,
    "run_command": 1,
    "run_logged": 0,
    "common.run_logged": 0,
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_docker_binary(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant) and isinstance(node.value, str) and Path(node.value).name == "docker"
    )


def _builds_docker_argv(node: ast.AST) -> bool:
    """Whether an expression calls something named docker-ish or anything of the engine."""
    for inner in ast.walk(node):
        if isinstance(inner, ast.Call):
            callee = _dotted(inner.func)
            if "docker" in callee.lower() or callee.startswith("engine.") or callee.endswith("run_argv"):
                return True
    return False


def _imports_docker_sdk(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "docker" for alias in node.names)
    return isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "docker"


def _scope_nodes(scope: ast.AST) -> list[ast.AST]:
    """The nodes of one function (or the module) without those of the functions nested in it."""
    found, pending = [], list(ast.iter_child_nodes(scope))
    while pending:
        node = pending.pop()
        found.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            pending.extend(ast.iter_child_nodes(node))
    return found


def violations(source: str, filename: str = "<snippet>") -> list[str]:
    """`file:line: why` for every way the source calls docker itself."""
    tree = ast.parse(source, filename)
    found: list[str] = []
    scopes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))]
    for scope in scopes:
        nodes = _scope_nodes(scope)
        docker_argvs = {  # names bound, in this scope, to an argv built for docker
            target.id
            for node in nodes
            if isinstance(node, ast.Assign) and _builds_docker_argv(node.value)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in nodes:
            where = f"{filename}:{getattr(node, 'lineno', '?')}"
            if _imports_docker_sdk(node):
                found.append(
                    f"{where}: imports the Docker SDK (only validation/engine.py talks to the engine)"
                )
            elif isinstance(node, ast.Constant) and node.value == "docker":
                found.append(f'{where}: the string "docker" (only validation/engine.py runs the client)')
            elif isinstance(node, (ast.List, ast.Tuple)) and node.elts and _is_docker_binary(node.elts[0]):
                if node.elts[0].value != "docker":  # the plain word is reported above
                    found.append(f"{where}: an argv starting with {node.elts[0].value!r}")
            elif isinstance(node, ast.Call) and _dotted(node.func) in RUNNERS:
                index = RUNNERS[_dotted(node.func)]
                argv = node.args[index] if len(node.args) > index else None
                if argv is None:
                    continue
                if isinstance(argv, ast.Constant) and str(argv.value).startswith("docker "):
                    found.append(f"{where}: a shell command starting with docker")
                elif (isinstance(argv, ast.Name) and argv.id in docker_argvs) or _builds_docker_argv(argv):
                    found.append(f"{where}: {_dotted(node.func)} runs a docker argv (use engine.execute)")
    return found


def scanned_modules() -> list[Path]:
    modules = sorted(path for folder in SCANNED for path in (ROOT / folder).rglob("*.py"))
    return [path for path in modules if path != OWNER]


def test_no_module_but_the_engine_calls_docker() -> None:
    modules = scanned_modules()
    assert len(modules) > 20, f"scanned only {len(modules)} modules: wrong root?"
    found = [line for path in modules for line in violations(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "docker called outside validation/engine.py:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "snippet",
    [
        'import subprocess\nsubprocess.run(["docker", "ps"], check=False)',
        'import subprocess\nsubprocess.Popen(["docker", "export", name])',
        'def _docker(*args):\n    return subprocess.run(["docker", *args])',
        'command = ["docker", "run", "--detach", image]',
        'CLIENT = "docker"',
        'subprocess.run(["/usr/bin/docker", "ps"])',
        'import os\nos.system("docker rm --force x")',
        "command = run.docker_run_command(image, name)\nsubprocess.run(command, timeout=5)",
        "subprocess.run(engine.run_argv(name, [], image))",
        "def f():\n    command = bare_run_command(run.docker_run_command(i, n))\n    subprocess.run(command)",
        "progress.run_command(step, engine.run_argv(name, [], image), log)",
        "import docker\ndocker.from_env().containers.list()",
        "from docker import errors",
    ],
)
def test_the_scan_catches_a_docker_call_outside_the_engine(snippet: str) -> None:
    assert violations(snippet), f"not flagged: {snippet!r}"


@pytest.mark.parametrize(
    "snippet",
    [
        'subprocess.run(["git", "status"])',
        'Check("docker engine", False, "no docker client on PATH")',
        'engine.docker("image", "rm", reference)',
        'raise GateError(f"docker run of {image} failed")',
        "done = engine.execute(command, timeout=5)",
        # a name bound to a docker argv in one function is not the same name in another
        "def a():\n    command = run.docker_run_command(i, n)\n"
        "def b():\n    command = ['git']\n    subprocess.run(command)",
    ],
)
def test_the_scan_leaves_other_commands_and_engine_calls_alone(snippet: str) -> None:
    assert violations(snippet) == []


def test_the_owner_is_the_one_place_that_names_the_client() -> None:
    assert engine.CLIENT == "docker"
    assert violations(OWNER.read_text()), "the scan does not see the engine's own calls: it is blind"


# --- the engine's pure helpers ------------------------------------------------------------------


def test_docker_error_is_the_line_that_says_what_went_wrong() -> None:
    stderr = (
        "Unable to find image 'nope:latest' locally\n"
        "docker: Error response from daemon: pull access denied for nope.\n"
        "See 'docker run --help'.\n"
        "Run 'docker run --help' for more information\n"
    )
    assert engine.docker_error(stderr) == "docker: Error response from daemon: pull access denied for nope."
    assert engine.docker_error("Error: No such image: x\n") == "Error: No such image: x"
    assert engine.docker_error("something odd\n\n") == "something odd"
    assert engine.docker_error("") == "no message"
    assert "\n" not in engine.docker_error("Error: a\nError: b\n")


def test_a_missing_client_is_one_line_naming_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker on it
    with pytest.raises(GateError) as raised:
        engine.docker("version")
    assert str(raised.value) == engine.MISSING_CLIENT
    assert "nox -s prepare" in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(GateError, match="nox -s prepare"):
        engine.wait_for("armgate-run-none", "0", 1)
    assert engine.probe("version") is None, "a status probe reports a missing client as no answer"


def test_a_failed_call_with_check_names_the_subcommand(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'first line' >&2\necho 'Error: the real reason' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    with pytest.raises(GateError, match=r"^docker history failed: Error: the real reason$"):
        engine.history("some-image")
    assert engine.docker("history", "x").returncode == 1, "without check a failure is returned"


def test_run_argv_is_a_detached_named_run_and_only_engine_argvs_execute() -> None:
    argv = engine.run_argv("n", ["--network", "none", *engine.label_args({"a": "1"})], "img", ["sleep"])
    assert argv == [
        "docker",
        "run",
        "--detach",
        "--name",
        "n",
        "--network",
        "none",
        "--label",
        "a=1",
        "img",
        "sleep",
    ]
    with pytest.raises(ValueError):
        engine.execute(["sh", "-c", "true"])


def test_the_host_check_imports_without_third_party_packages() -> None:
    """`nox -s prepare` runs the host check with the system Python: no rich, no pytest."""
    code = "import sys, validation.host; sys.exit(bool({'rich', 'pytest'} & set(sys.modules)))"
    done = subprocess.run(
        ["python3", "-S", "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-500:] or "rich or pytest was imported"


FAILING_BUILD = """#!/bin/sh
echo "$@" >> "{calls}"
if [ "$1" = buildx ]; then echo "ERROR: failed to solve: COPY missing-file"; exit 1; fi
"""


def test_a_derived_image_that_does_not_build_is_one_line_and_its_tags_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, calls = tmp_path / "bin", tmp_path / "calls"
    folder.mkdir()
    (folder / "docker").write_text(FAILING_BUILD.format(calls=calls))
    (folder / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    steps = "COPY missing-file /x"
    derived = engine.derived_image("armgate/app:bookworm", "linux/arm64", steps, tmp_path / "ctx")
    with pytest.raises(GateError) as raised, derived:
        pytest.fail("a failed build yields no image")
    assert str(raised.value).startswith("the image derived from armgate/app:bookworm did not build (exit 1)")
    assert "COPY missing-file" in str(raised.value)
    tagged, removed = (line.split() for line in calls.read_text().splitlines() if line.split()[0] != "buildx")
    assert tagged[:2] == ["tag", "armgate/app:bookworm"]
    assert removed[:3] == ["image", "rm", "--force"]
    assert removed[3:] == [tagged[2].removesuffix("-base"), tagged[2]], "the image's tag and its base's"
