"""The App SDK's two generations in an app contract: how the app takes its paths, what its app.yaml asks
for, and which profiles may build it.

Classic apps (SDK 0.5.x) take `-i/-m/-o`. Holoscan-generation apps (SDK 0.6 on) read their paths in
`Application.init_app_context(argv)`: flags, else HOLOSCAN_INPUT_PATH, HOLOSCAN_OUTPUT_PATH and
HOLOSCAN_MODEL_PATH. A contract places `{input}`, `{model}` and `{output}` in `[app] args`, in `[app] env`,
or in both; the image carries the variables (as its ENTRYPOINT carries the flags), so a site runs it with
the mounts alone. An app.yaml's `resources.memory` is the memory limit of each case run that sets none.
"""

from __future__ import annotations

import os
import re
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from validation import profiles
from validation.errors import GateError


class GeneratedApp(Protocol):
    """What this module reads of an app contract (validation.contract.AppContract), which imports it."""

    path: Path
    sdk: str
    env: dict[str, str]
    resources: dict[str, str]
    mounts: Any  # contract.Mounts: input, model, output


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Kubernetes-style quantities as app.yaml writes them ("2Gi", "512Mi", "1G") -> bytes per unit
QUANTITY_UNITS = {
    "": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "K": 10**3, "M": 10**6,
    "G": 10**9, "T": 10**12,
}  # fmt: skip
# Where the host's NVIDIA wheels put their libraries (site-packages/nvidia/<package>/lib): the host run
# of a Holoscan-generation app finds its CUDA runtime there, as the image does through its profile.
HOST_NVIDIA_LIBS = "nvidia/*/lib"


@dataclass(frozen=True)
class AppGeneration:
    """The contract's [app] sdk, env and app_yaml, read and checked."""

    sdk: str = "classic"
    env: dict[str, str] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)  # app.yaml resources; memory as docker takes it


def read(path: Path, app: Any) -> AppGeneration:
    """[app] sdk, env and app_yaml of the contract at `path` (`app`: its [app] table as profiles.Fields)."""
    sdk = app.str("sdk", choices=tuple(profiles.SDK_GENERATIONS), default="classic")
    env = app.mapping("env", required=False)
    for name in env:
        if not ENV_NAME.fullmatch(name):
            raise GateError(f"{path}: field 'app.env' key {name!r} is not an environment variable name")
    resources = {}
    if "app_yaml" in app.data:
        resources = read_app_yaml(path, (path.parent / app.str("app_yaml")).resolve())
    return AppGeneration(sdk, env, resources)


def read_app_yaml(contract: Path, app_yaml: Path) -> dict[str, str]:
    """The app.yaml's resources: memory in `docker run --memory` form; cpu (and gpu) as written."""
    import yaml

    if not app_yaml.is_file():
        raise GateError(f"{contract}: field 'app.app_yaml' points to {app_yaml}, which is not a file")
    try:
        document = yaml.safe_load(app_yaml.read_text())
    except yaml.YAMLError as error:
        raise GateError(
            f"{app_yaml}: not valid YAML ({str(error).splitlines()[0]}); fix the syntax"
        ) from None
    resources = (document or {}).get("resources") if isinstance(document, dict) else None
    if resources is None:
        return {}
    if not isinstance(resources, dict):
        raise GateError(f"{app_yaml}: 'resources' must be a mapping, e.g. memory: 2Gi")
    found = {key: str(value) for key, value in resources.items() if key in ("cpu", "gpu", "memory")}
    if "memory" in found:
        found["memory"] = docker_memory(app_yaml, found["memory"])
    return found


def docker_memory(app_yaml: Path, quantity: str) -> str:
    """A quantity as docker takes it: 2Gi -> 2g, 512Mi -> 512m, 1G -> 1000000000 (docker's g is 2**30)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?|k)?\s*", quantity)
    if not match:
        raise GateError(f"{app_yaml}: resources.memory {quantity!r} is not a size such as 2Gi or 512Mi")
    size = int(float(match.group(1)) * QUANTITY_UNITS[match.group(2) or ""])
    if size <= 0:
        raise GateError(f"{app_yaml}: resources.memory {quantity!r} must be more than 0")
    for suffix, unit in (("g", 2**30), ("m", 2**20)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def app_env(app: GeneratedApp, input_dir: str, model: str, output_dir: str) -> dict[str, str]:
    """The contract's [app] env with the run's paths in place of {input}, {model} and {output}."""
    values = {"input": input_dir, "model": model, "output": output_dir}
    return {name: value.format(**values) for name, value in app.env.items()}


def image_env(app: GeneratedApp) -> dict[str, str]:
    """What the image carries: the contract's env at the mounts, as a site mounts them."""
    mounts = app.mounts
    return app_env(app, mounts.input, mounts.model, mounts.output)


def host_env(app: GeneratedApp, input_dir: Path, model: Path, output_dir: Path) -> dict[str, str]:
    """The host run's environment: this one, the contract's env at the host's paths and, for a
    Holoscan-generation app, the host's NVIDIA wheel libraries (its CUDA runtime) on LD_LIBRARY_PATH."""
    env = {**os.environ, **app_env(app, str(input_dir), str(model), str(output_dir))}
    if app.sdk == "holoscan":
        site = Path(sysconfig.get_paths()["purelib"])
        folders = [str(folder) for folder in sorted(site.glob(HOST_NVIDIA_LIBS)) if folder.is_dir()]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*folders, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    return env


def memory_limit(app: GeneratedApp | None) -> str | None:
    """The app.yaml's memory: the limit of a case run whose case.toml sets none."""
    return app.resources.get("memory") if app is not None else None


def check(app: GeneratedApp, profile: profiles.Profile) -> None:
    """A profile builds apps of its own generation only: one line, before anything is built."""
    if app.sdk != profile.sdk:
        raise GateError(
            f"{profile.path}: profile {profile.name} builds App SDK {profile.sdk!r}-generation apps "
            f"(monai-deploy-app-sdk{profiles.SDK_GENERATIONS[profile.sdk]}), but {app.path} declares "
            f"[app] sdk = {app.sdk!r}; choose a profile of that generation "
            f"({', '.join(_profiles_of(app.sdk)) or 'none shipped'})"
        )


def _profiles_of(sdk: str) -> list[str]:
    found = []
    for name in profiles.available():
        try:
            if profiles.load(name).sdk == sdk:
                found.append(name)
        except GateError:
            continue
    return found
