"""Run a MAP on one case as a site's runner does, without a GPU: app.json's command in its working folder
with app.json's environment, the case mounted at the manifest's input path and the output folder at its
output path, the models the image holds, the image's own user, pkg.json's resources as the limits.

The lockdown is the gate's (no network, read-only root, no capabilities); where a MAP must write there is
room: /tmp is a tmpfs and the working folder (where the packager's Dockerfile lets the app's user write,
and where its tools and app.yaml live) a volume of its own, filled from the image and removed with the
container. The stack limit is the one `holoscan run` gives. No NVIDIA runtime: runc runs it on the CPU.
"""

from __future__ import annotations

import shlex
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from validation import engine, run
from validation.errors import GateError
from validation.map_image import MapPackage
from validation.map_manifest import spec


def extra_args(package: MapPackage) -> list[str]:
    """What `holoscan run` appends to a Holoscan SDK app's command: its configuration file."""
    config = package.run_env().get("HOLOSCAN_CONFIG_PATH")
    return ["--config", config] if package.app.sdk == "holoscan" and config else []


def map_run_command(
    image: str,
    name: str,
    package: MapPackage,
    input_dir: Path,
    output_dir: Path,
    memory: str,
    platform: str = "linux/arm64",
    hardened: bool = True,
    labels: Mapping[str, str] | None = None,
) -> list[str]:
    """The `docker run` of a MAP on one case (a pure function: unit-tested, and what the report shows)."""
    app, limits = package.app, package.pkg.limits
    options = ["--platform", platform, "--init", *engine.label_args(labels or {})]
    options += ["--memory", memory, "--memory-swap", memory, "--shm-size", limits.shared_memory]
    options += ["--cpus", f"{limits.cpus:g}", "--ulimit", f"stack={spec()['run']['stack_bytes']}"]
    if hardened:
        options += [*run.HARDENED_FLAGS, "--mount", f"type=volume,destination={app.working_directory}"]
    else:
        options += ["--network", "none"]
    options += ["--workdir", app.working_directory]
    for key, value in package.run_env().items():
        options += ["--env", f"{key}={value}"]
    options += [
        "-v",
        f"{input_dir.resolve()}:{app.input_path}:ro",
        "-v",
        f"{output_dir.resolve()}:{app.output_path}",
    ]
    extra = extra_args(package)
    if app.shell:  # the specification's shell command, run by the image's /bin/sh as written
        command = [app.command_text, *(shlex.quote(arg) for arg in extra)]
        argv = ["-c", " ".join(command)]
        options += ["--entrypoint", "/bin/sh"]
    else:
        argv = [*app.command[1:], *extra]
        options += ["--entrypoint", app.command[0]]
    return engine.run_argv(name, options, image, argv)


def memory_basis(package: MapPackage, memory: str) -> str:
    """Where a run's memory limit came from, for the line that says the limit killed it."""
    limits = package.pkg.limits
    return (
        f"{memory}: {limits.memory_basis}" if memory == limits.memory else f"{memory}: the case's run.memory"
    )


def run_map(
    image: str,
    package: MapPackage,
    input_dir: Path,
    output_dir: Path,
    timeout_s: float,
    memory: str,
    platform: str = "linux/arm64",
    hardened: bool = True,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    cancel: threading.Event | None = None,
    on_memory: Callable[[int], None] | None = None,
    facts: engine.ImageFacts | None = None,
) -> run.RunResult:
    """One case through the MAP; the container (and its working-folder volume) is always removed."""
    name = name or f"{run.CONTAINER_PREFIX}{uuid.uuid4().hex[:12]}"
    if cancel is not None and cancel.is_set():
        return run.RunResult("container", output_dir, None, 0.0, cancelled=True)
    facts = facts or engine.inspect_image(image, timeout=engine.QUERY_TIMEOUT_S)
    found = facts.platform if facts else ""
    if found and found != platform:
        raise GateError(f"MAP {image} is {found}, not {platform}; gate a MAP packaged for an arm64 platform")
    command = map_run_command(image, name, package, input_dir, output_dir, memory, platform, hardened, labels)
    result = run.run_command(image, name, command, output_dir, timeout_s, cancel, on_memory)
    result.memory_basis = memory_basis(package, memory)
    return result
