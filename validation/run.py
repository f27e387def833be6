"""Run the app as a site does: in the arm64 container (locked down), or on the host for comparison.

Containers are always removed: on success, failure, timeout and Ctrl-C alike.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from validation import engine, generation
from validation.contract import AppContract, Mounts
from validation.errors import GateError
from validation.stages import stage_reached, stage_times

CONTAINER_PREFIX = "armgate-run-"
# Locked down the way hospitals expect: no network, no capabilities, read-only root, bounded.
HARDENED_FLAGS = (
    "--network", "none",
    "--read-only", "--tmpfs", "/tmp:rw,exec,size=2g",
    "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges",
    "--pids-limit", "256",
)  # fmt: skip


@dataclass
class RunResult:
    """What one run of the app did, for the report and the checks."""

    where: str  # "container" or "host"
    output_dir: Path
    exit_code: int | None
    seconds: float
    timed_out: bool = False
    oom_killed: bool = False
    peak_memory_bytes: int | None = None
    logs: str = ""
    command: list[str] = field(default_factory=list)
    cancelled: bool = False  # stopped by the gate itself (interrupt), not by the app or a limit
    wait_error: str = ""  # why `docker wait` failed, when it did: the run's end is then unknown
    memory_basis: str = ""  # where the run's memory limit came from, said when the limit killed it

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.oom_killed or self.cancelled)

    def log_tail(self, lines: int = 20) -> list[str]:
        """The app's last words, to say where it was when it failed or was stopped."""
        return [line for line in self.logs.strip().splitlines() if line.strip()][-lines:]

    @property
    def stage(self) -> str:
        """Where the app was when its log ends ("in stage 'inference window 7/15'"): validation/stages.py."""
        return stage_reached(self.logs)

    @property
    def stage_seconds(self) -> dict[str, float]:
        """Wall seconds of each stage the app finished, from its log."""
        return stage_times(self.logs)

    def failure(self) -> str:
        """One line saying why the run did not succeed (empty when it did)."""
        last = (self.log_tail(1) or ["(no output)"])[0][:300]
        if self.cancelled:
            return f"{self.where} run was stopped: the gate was interrupted"
        if self.wait_error:
            return f"{self.where} run: docker wait failed: {self.wait_error}; the app's last line: {last}"
        if self.timed_out:
            return (
                f"{self.where} run timed out after {self.seconds:.0f} s {self.stage}; "
                f"the app's last line: {last}"
            )
        if self.oom_killed:
            basis = f" ({self.memory_basis})" if self.memory_basis else ""
            return (
                f"{self.where} run was killed by its memory limit{basis} {self.stage}; "
                f"the app's last line: {last}"
            )
        if self.exit_code != 0:
            return f"{self.where} run exited with code {self.exit_code}: {last}"
        return ""


def docker_run_command(
    image: str,
    name: str,
    mounts: Mounts,
    input_dir: Path,
    model: Path,
    output_dir: Path,
    memory: str = "4g",
    platform: str = "linux/arm64",
    hardened: bool = True,
    labels: Mapping[str, str] | None = None,
    app_overlay: tuple[Path, str] | None = None,
) -> list[str]:
    """The app contract's `docker run` (input and model read-only) plus the gate's limits (a pure
    function: unit-tested). The model file itself is mounted where the contract puts it, whatever
    its name; an init runs as PID 1, so an app that aborts under QEMU exits instead of hanging.
    `app_overlay` (folder, install dir) mounts an app folder read-only over the image's, to measure an
    edited app without a rebuild (`python -m bench.stage_times`); the gate never passes it."""
    options = ["--platform", platform, "--shm-size=1G", "--init", *engine.label_args(labels or {})]
    options += ["--memory", memory, "--memory-swap", memory]
    options += HARDENED_FLAGS if hardened else ("--network", "none")
    options += [
        "-v", f"{input_dir.resolve()}:{mounts.input}:ro",
        "-v", f"{model.resolve()}:{mounts.model}:ro",
        "-v", f"{output_dir.resolve()}:{mounts.output}",
    ]  # fmt: skip
    if app_overlay is not None:
        options += ["-v", f"{app_overlay[0].resolve()}:{app_overlay[1]}:ro"]
    return engine.run_argv(name, options, image)


def writable_output_dir(parent: Path, name: str) -> Path:
    """A fresh output folder the image's non-root user can write to, whoever runs the gate."""
    output = parent / name
    output.mkdir(parents=True, exist_ok=False)
    output.chmod(0o777)  # the container's uid differs from the caller's; only this folder is opened
    return output


def run_container(
    image: str,
    app: AppContract,
    input_dir: Path,
    model: Path,
    output_dir: Path,
    timeout_s: float,
    memory: str = "4g",
    platform: str = "linux/arm64",
    hardened: bool = True,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    cancel: threading.Event | None = None,
    on_memory: Callable[[int], None] | None = None,
    facts: engine.ImageFacts | None = None,
    app_overlay: Path | None = None,
) -> RunResult:
    """Run one case in the container and always remove it (removing it from outside ends the run).

    `cancel` set before the start means no container is created; set during the run, it ends it.
    `facts`: the image as the caller already inspected it (a gate inspects once, not per case).
    `app_overlay`: an edited app folder mounted read-only over the image's (measurements only; the
    gate never mounts one)."""
    name = name or f"{CONTAINER_PREFIX}{uuid.uuid4().hex[:12]}"
    if cancel is not None and cancel.is_set():
        return RunResult("container", output_dir, None, 0.0, cancelled=True)
    facts = facts or engine.inspect_image(image, timeout=engine.QUERY_TIMEOUT_S)
    found = facts.platform if facts else ""
    if found and found != platform:
        # docker would try to pull the right platform from a registry and fail with an unrelated message
        raise GateError(
            f"image {image} is {found}, not {platform}; rebuild it with `python -m validation build`"
        )
    if not model.is_file():
        raise GateError(f"{model}: model file not found; pass --model PATH to a TorchScript model")
    overlay = (app_overlay, app.install_dir) if app_overlay is not None else None
    command = docker_run_command(
        image, name, app.mounts, input_dir, model, output_dir, memory, platform, hardened, labels, overlay
    )
    return run_command(image, name, command, output_dir, timeout_s, cancel, on_memory)


def run_command(
    image: str,
    name: str,
    command: list[str],
    output_dir: Path,
    timeout_s: float,
    cancel: threading.Event | None = None,
    on_memory: Callable[[int], None] | None = None,
) -> RunResult:
    """Start a `docker run` argv of `engine.run_argv` (container `name`), wait for it as run_container
    does, and always remove it: what every container run of a case shares, whoever made its argv."""
    started = time.monotonic()
    result = RunResult("container", output_dir, None, 0.0, command=command)
    failure, hint = f"docker run of {image} failed", f"; check that `docker image inspect {image}` finds it"
    with engine.container(command, failure, hint) as container_id:
        waited = engine.wait_for(name, container_id, timeout_s, cancel, on_memory)
        result.exit_code, result.peak_memory_bytes = waited.exit_code, waited.peak_memory_bytes
        # a run ended by the gate's interrupt (from here or by removal from outside) is not the app's fault
        result.cancelled = cancel is not None and cancel.is_set() and result.exit_code != 0
        result.wait_error = "" if result.cancelled else waited.error
        result.timed_out = result.exit_code is None and not result.cancelled and not result.wait_error
        result.seconds = time.monotonic() - started
        if result.exit_code is None:
            engine.kill(name)
        result.oom_killed = engine.oom_killed(name)
        result.logs = engine.logs(name)
    return result


def run_host(
    app: AppContract,
    input_dir: Path,
    model: Path,
    output_dir: Path,
    timeout_s: float,
    work_dir: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> RunResult:
    """Run the same app on the host (the reference platform) with the same CLI, in a working folder of its
    own (`work_dir`, made if missing; a temporary one otherwise): SDK apps write `.monai_workdir` into the
    current folder unless MONAI_WORKDIR says where, and two runs sharing one folder collide. `extra_env`:
    more variables for the app (the cross-architecture tier's window recorder)."""
    paths = (path.resolve() for path in (input_dir, model, output_dir))  # the app runs in work_dir
    command = app.host_command(sys.executable, *paths)
    started = time.monotonic()
    result = RunResult("host", output_dir, None, 0.0, command=command)
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="armgate-host-run-")))
        work_dir.mkdir(parents=True, exist_ok=True)
        # the contract's [app] env at the host's paths (and a Holoscan-generation app's CUDA runtime)
        app_env = generation.host_env(app, *(path.resolve() for path in (input_dir, model, output_dir)))
        env = {**app_env, "MONAI_WORKDIR": str(work_dir / "monai_workdir"), **(extra_env or {})}
        _run_host_command(result, command, timeout_s, work_dir, env)
    result.seconds = time.monotonic() - started
    return result


def _run_host_command(
    result: RunResult, command: list[str], timeout_s: float, work_dir: Path, env: Mapping[str, str]
) -> None:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=work_dir, env=env
        )
        result.exit_code, result.logs = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as stopped:
        # what the app wrote before it was stopped says where it was (bytes: the decoding never ran)
        result.timed_out = True
        result.logs = "".join(_text(part) for part in (stopped.stdout, stopped.stderr))


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", errors="replace")
    return output or ""


def leftover_containers(label: str | None = None) -> list[str]:
    """Names of gate containers still present (there should never be any); with `label` ("key=value"),
    only those of one gate run, so that other gates on the same engine do not count."""
    return engine.containers(label) if label else engine.containers(name_prefix=CONTAINER_PREFIX)


def remove_containers(label: str) -> None:
    """Force-remove every container carrying `label` ("key=value"): ends their runs."""
    engine.remove_containers(label)


@contextmanager
def holding(image: str, platform: str, labels: Mapping[str, str]) -> Iterator[str]:
    """Keep `image` from being deleted while the caller uses it (a gate run, a test session)."""
    with engine.holding(image, platform, f"{CONTAINER_PREFIX}hold-{uuid.uuid4().hex[:12]}", labels) as name:
        yield name
