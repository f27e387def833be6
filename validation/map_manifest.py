"""A MONAI Application Package's two manifests, app.json and pkg.json, read and checked: what runs, where its
input and output go, where its app and models are, and the resources that become the run's limits.

The MAP specification (Project-MONAI/monai-deploy, guidelines/monai-application-package.md) and the packager
that made the MAPs in the field (holoscan-cli up to 4.2.0) write them differently; both forms are read and
each manifest says which one it is in:

- app.json `command`: the specification's shell command; the packager's JSON list inside a string.
- app.json `output.format` (the specification's) or `output.formats` (the packager's).
- app.json `type`: the specification requires it; the packager never writes it.
- `version`: a semantic version string (specification); the app.yaml's number, such as 1.0 (packager).
- pkg.json `models`: a list of {name, path} (specification); a name -> path object (packager).
- pkg.json `resources`: camelCase keys (specification); kebab-case ones from older app.yaml files.

Pure functions of the manifests' text (validation/map_image.py reads them from the image); every problem is
one line naming the image, the manifest, the field and the fix.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from validation.errors import GateError
from validation.profiles import read_toml

SPEC_TOML = Path(__file__).with_name("map_spec.toml")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FORM_NAMES = {"spec": "the specification's form", "packager": "the packager's form"}
MAKERS = {"spec": "the specification", "packager": "the packager"}
REPACKAGE = "ask the MAP's maker to fix the manifest and repackage it"


@functools.cache
def spec() -> dict[str, Any]:
    """validation/map_spec.toml: the specification's defaults and the forms' keys and units."""
    return read_toml(SPEC_TOML)


@dataclass(frozen=True)
class Form:
    """Which form a manifest is written in, and the signs that told."""

    name: str  # "spec" or "packager"
    signs: tuple[str, ...]  # what is in this form
    mixed: tuple[str, ...] = ()  # what is in the other one

    def describe(self) -> str:
        text = f"{FORM_NAMES[self.name]} ({'; '.join(self.signs) or 'nothing tells the forms apart'})"
        other = "spec" if self.name == "packager" else "packager"
        return text + (f", with {MAKERS[other]}'s {'; '.join(self.mixed)}" if self.mixed else "")


@dataclass(frozen=True)
class AppManifest:
    """app.json as the gate runs it."""

    form: Form
    command: tuple[str, ...]  # what is executed: the packager's list, or /bin/sh -c <the shell command>
    command_text: str  # as the manifest writes it
    shell: bool  # the specification's shell command
    environment: dict[str, str]
    working_directory: str  # absolute
    input_path: str  # absolute: a relative path is the working directory's
    output_path: str
    timeout_s: int  # 0: none
    sdk: str
    sdk_version: str
    version: str

    def program(self) -> list[str]:
        """The program and its arguments as words (a shell command's leading VAR=value words left out):
        what must exist in the image."""
        words = shlex.split(self.command_text) if self.shell else list(self.command)
        while words and "=" in words[0] and ENV_NAME.fullmatch(words[0].split("=", 1)[0]):
            words.pop(0)
        return words


@dataclass(frozen=True)
class Limits:
    """pkg.json's resources as the run's limits; each `*_basis` says where the value came from."""

    memory: str  # `docker run --memory`
    memory_basis: str
    shared_memory: str  # `--shm-size`
    shared_memory_basis: str
    cpus: float  # `--cpus`
    cpus_basis: str
    gpus: float  # what the MAP asks for; the gate runs it on the CPU

    def describe(self) -> str:
        gpu = f"; asks for {self.gpus:g} GPU, runs on the CPU" if self.gpus else ""
        shared = f"shared memory {self.shared_memory}"
        return f"memory {self.memory} ({self.memory_basis}), {shared}, cpus {self.cpus:g}{gpu}"


@dataclass(frozen=True)
class PackageManifest:
    """pkg.json as the gate checks it against the image."""

    form: Form
    application_root: str
    model_root: str
    models: dict[str, str]  # name -> absolute path in the image
    limits: Limits
    version: str


def _fail(where: str, field: str, problem: str, fix: str = REPACKAGE) -> GateError:
    return GateError(f"{where}: field '{field}' {problem}; {fix}")


def _load(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as error:
        raise GateError(f"{where}: not valid JSON ({error}); {REPACKAGE}") from None
    if not isinstance(data, dict):
        raise GateError(f"{where}: must hold a JSON object, not {type(data).__name__}; {REPACKAGE}")
    return data


def _string(data: dict[str, Any], key: str, where: str, default: str) -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _fail(where, key, f"must be a string, not {json.dumps(value)}")
    return value


def _absolute(path: str, where: str, field: str) -> str:
    if not path.startswith("/"):
        raise _fail(where, field, f"= {path!r} must be an absolute path (the first character '/')")
    return str(PurePosixPath(path))


def _version(data: dict[str, Any], where: str, signs: dict[str, list[str]]) -> str:
    value = data.get("version")
    if value is None:
        return "0.0.0"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _fail(where, "version", f'must be a semantic version such as "1.0.0", not {json.dumps(value)}')
    if not isinstance(value, str):
        signs["packager"].append(f"version {value} a number")
        return str(value)
    signs["spec"].append("version a string")
    return value


def _command(value: Any, where: str, signs: dict[str, list[str]]) -> tuple[tuple[str, ...], str, bool]:
    """(the argv to execute, the command as written, whether it is a shell command)."""
    missing = f"a MAP must say what runs its app (a shell command, or a JSON list); {REPACKAGE}"
    if value is None or value == "" or value == []:
        raise _fail(where, "command", "is missing" if value is None else "is empty", missing)
    if isinstance(value, list):
        listed, text = value, json.dumps(value)
        signs["packager"].append("command a JSON list")
    elif isinstance(value, str) and value.lstrip().startswith("["):
        try:
            listed = json.loads(value)
        except ValueError:
            raise _fail(where, "command", f"= {value!r} starts like a JSON list but is not one") from None
        text = value
        signs["packager"].append("command a JSON list in a string")
    elif isinstance(value, str):
        signs["spec"].append("command a shell command")
        return ("/bin/sh", "-c", value), value, True
    else:
        raise _fail(where, "command", f"must be a shell command or a JSON list, not {json.dumps(value)}")
    if not listed or not all(isinstance(word, str) and word for word in listed):
        raise _fail(where, "command", f"= {text} must list the program and its arguments as strings")
    return tuple(listed), text, False


def _io_path(data: dict[str, Any], key: str, working: str, where: str, signs: dict[str, list[str]]) -> str:
    section = data.get(key) or {}
    if not isinstance(section, dict):
        raise _fail(where, key, f"must be an object with a 'path', not {json.dumps(section)}")
    if key == "output" and "formats" in section:  # both name the input's formats `formats`
        signs["packager"].append("output.formats")
    if key == "output" and "format" in section:
        signs["spec"].append("output.format")
    path = _string(section, "path", where, spec()["app_json"][f"{key}_path"])
    return str(PurePosixPath(working) / path)  # an absolute path stays as it is


def _environment(data: dict[str, Any], where: str) -> dict[str, str]:
    env = data.get("environment") or {}
    if not isinstance(env, dict):
        raise _fail(where, "environment", f"must be an object of name: value pairs, not {json.dumps(env)}")
    for name, value in env.items():
        if not ENV_NAME.fullmatch(name):
            raise _fail(where, f"environment.{name}", "is not an environment variable name")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise _fail(where, f"environment.{name}", f"must be a string, not {json.dumps(value)}")
    return {name: str(value) for name, value in env.items()}


def _form(signs: dict[str, list[str]], decisive: str | None) -> Form:
    """The form the decisive sign names (else the one with more signs; the specification's on a tie)."""
    name = decisive or ("packager" if len(signs["packager"]) > len(signs["spec"]) else "spec")
    other = "spec" if name == "packager" else "packager"
    return Form(name, tuple(signs[name]), tuple(signs[other]))


def parse_app_json(text: str, where: str) -> AppManifest:
    """app.json in either form; `where` ("<image> /etc/holoscan/app.json") names it in every error."""
    data = _load(text, where)
    signs: dict[str, list[str]] = {"spec": [], "packager": []}
    command, command_text, shell = _command(data.get("command"), where, signs)
    defaults = spec()["app_json"]
    if "type" in data:
        kind = data["type"]
        if kind not in defaults["types"]:
            problem = f"= {json.dumps(kind)}: armgate gates an app that runs a case and exits (type "
            problem += f"{', '.join(defaults['types'])}); a service never ends by itself"
            raise _fail(where, "type", problem, "gate the MAP of an application, not of a service")
        signs["spec"].append(f"type {kind}")
    else:
        signs["packager"].append("no type")
    working = _absolute(
        _string(data, "workingDirectory", where, defaults["working_directory"]), where, "workingDirectory"
    )
    timeout = data.get("timeout", defaults["timeout"])
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise _fail(where, "timeout", f"must be whole seconds >= 0 (0: none), not {json.dumps(timeout)}")
    input_path = _io_path(data, "input", working, where, signs)
    output_path = _io_path(data, "output", working, where, signs)
    version = _version(data, where, signs)
    return AppManifest(
        form=_form(signs, "spec" if shell else "packager"),
        command=command,
        command_text=command_text,
        shell=shell,
        environment=_environment(data, where),
        working_directory=working,
        input_path=input_path,
        output_path=output_path,
        timeout_s=timeout,
        sdk=_string(data, "sdk", where, ""),
        sdk_version=_string(data, "sdkVersion", where, ""),
        version=version,
    )


def _models(value: Any, model_root: str, where: str, signs: dict[str, list[str]]) -> dict[str, str]:
    """name -> absolute path, from the packager's object or the specification's list."""
    if value is None:
        return {}
    if isinstance(value, dict):
        signs["packager"].append("models a name -> path object")
        entries = [(name, path) for name, path in value.items()]
    elif isinstance(value, list):
        signs["spec"].append("models a list")
        if not all(isinstance(item, dict) and "name" in item for item in value):
            raise _fail(where, "models", "must list objects with a 'name' (and a 'path'), e.g. "
                        '[{"name": "seg", "path": "seg"}]')  # fmt: skip
        entries = [(item["name"], item.get("path", item["name"])) for item in value]
    else:
        raise _fail(
            where, "models", f"must be a list of {{name, path}} or a name -> path object, not {value!r}"
        )
    models = {}
    for name, path in entries:
        limit = spec()["pkg_json"]["model_name_max_bytes"]
        if (
            not isinstance(name, str)
            or not name
            or len(name.encode()) > limit
            or re.search(r"[\s\x00-\x1f]", name)
        ):
            raise _fail(where, "models", f"name {name!r} must be 1 to {limit} bytes without whitespace")
        if not isinstance(path, str) or not path:
            raise _fail(where, f"models.{name}", f"path must be a file-system path, not {json.dumps(path)}")
        models[name] = str(PurePosixPath(model_root) / path)  # a relative path is the model root's
    return models


def size_bytes(value: Any) -> int | None:
    """A manifest's memory size ("2Gi", "1.5GiB", "512Mi", "2GB", or bytes) in bytes; None if it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if value > 0 else None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
    units = spec()["sizes"]
    if not match or (match.group(2) and match.group(2) not in units):
        return None
    size = int(float(match.group(1)) * (units[match.group(2)] if match.group(2) else 1))
    return size if size > 0 else None


def docker_size(size: int) -> str:
    """Bytes as `docker run --memory` takes them: 2g, 512m, or bytes (docker's g is 2**30)."""
    for suffix, unit in (("g", 2**30), ("m", 2**20)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _resource(resources: dict[str, Any], key: str) -> tuple[Any, str]:
    """(value, the key it was under) for a camelCase key or its kebab-case twin; (None, "") when absent."""
    for named in (spec()["resource_keys"].get(key), key):
        if named and named in resources:
            return resources[named], named
    return None, ""


def _key_signs(resources: dict[str, Any], signs: dict[str, list[str]]) -> None:
    """Which form the resource keys are written in: the keys that differ between the two."""
    keys = spec()["resource_keys"]
    for key in resources:
        if key in keys.values():
            signs["packager"].append(f"resources.{key} kebab-case")
        elif key in keys:
            signs["spec"].append(f"resources.{key} camelCase")


def _limits(resources: Any, where: str, signs: dict[str, list[str]]) -> Limits:
    if resources is None:
        resources = {}
    if not isinstance(resources, dict):
        raise _fail(where, "resources", f'must be an object such as {{"memory": "2Gi"}}, not {resources!r}')
    defaults = spec()["resources"]
    _key_signs(resources, signs)

    def size(keys: tuple[str, ...], default: str) -> tuple[str, str]:
        for key in keys:
            value, named = _resource(resources, key)
            if named:
                found = size_bytes(value)
                if found is None:
                    raise _fail(where, f"resources.{named}", f"= {json.dumps(value)} is not a size such as "
                                "\"2Gi\" or \"512Mi\"")  # fmt: skip
                return docker_size(found), f"pkg.json resources.{named} {value}"
        return docker_size(
            size_bytes(default) or 0
        ), f"the specification's default {default}, pkg.json names none"

    def number(keys: tuple[str, ...], default: float, minimum: float) -> tuple[float, str]:
        for key in keys:
            value, named = _resource(resources, key)
            if named:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
                    raise _fail(
                        where, f"resources.{named}", f"= {json.dumps(value)} must be a number >= {minimum:g}"
                    )
                return float(value), f"pkg.json resources.{named}"
        return float(default), "the specification's default"

    memory, memory_basis = size(("memoryLimit", "memory"), defaults["memory"])
    shared, shared_basis = size(("sharedMemoryLimit", "sharedMemory"), defaults["sharedMemory"])
    cpus, cpus_basis = number(("cpuLimit", "cpu"), defaults["cpu"], 0.01)
    gpus, _ = number(("gpu",), defaults["gpu"], 0)
    return Limits(memory, memory_basis, shared, shared_basis, cpus, cpus_basis, gpus)


def parse_pkg_json(text: str, where: str) -> PackageManifest:
    """pkg.json in either form; `where` names it in every error."""
    data = _load(text, where)
    signs: dict[str, list[str]] = {"spec": [], "packager": []}
    defaults = spec()["pkg_json"]
    application_root = _absolute(
        _string(data, "applicationRoot", where, defaults["application_root"]), where, "applicationRoot"
    )
    model_root = _absolute(_string(data, "modelRoot", where, defaults["model_root"]), where, "modelRoot")
    models = _models(data.get("models"), model_root, where, signs)
    if "platformConfig" in data:
        signs["packager"].append("platformConfig")
    limits = _limits(data.get("resources"), where, signs)
    version = _version(data, where, signs)
    decisive = next((name for name in ("packager", "spec") if any("models" in s for s in signs[name])), None)
    return PackageManifest(_form(signs, decisive), application_root, model_root, models, limits, version)
