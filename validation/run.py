"""Run the app as a site does: in the arm64 container (locked down), or on the host for comparison.

Containers are always removed: on success, failure, timeout and Ctrl-C alike.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from validation.contract import AppContract, Mounts
from validation.errors import GateError

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

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.oom_killed or self.cancelled)

    def log_tail(self, lines: int = 20) -> list[str]:
        """The app's last words, to say where it was when it failed or was stopped."""
        return [line for line in self.logs.strip().splitlines() if line.strip()][-lines:]

    def failure(self) -> str:
        """One line saying why the run did not succeed (empty when it did)."""
        last = (self.log_tail(1) or ["(no output)"])[0][:300]
        if self.cancelled:
            return f"{self.where} run was stopped: the gate was interrupted"
        if self.timed_out:
            return f"{self.where} run timed out after {self.seconds:.0f} s; the app's last line: {last}"
        if self.oom_killed:
            return f"{self.where} run was killed by its memory limit; the app's last line: {last}"
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
) -> list[str]:
    """The app contract's `docker run` (input and model read-only) plus the gate's limits (a pure
    function: unit-tested). The model file itself is mounted where the contract puts it, whatever
    its name; an init runs as PID 1, so an app that aborts under QEMU exits instead of hanging."""
    command = ["docker", "run", "--detach", "--name", name, "--platform", platform, "--shm-size=1G"]
    command += ["--init"]
    for key, value in (labels or {}).items():
        command += ["--label", f"{key}={value}"]
    command += ["--memory", memory, "--memory-swap", memory]
    if hardened:
        command += HARDENED_FLAGS
    else:
        command += ["--network", "none"]
    command += [
        "-v", f"{input_dir.resolve()}:{mounts.input}:ro",
        "-v", f"{model.resolve()}:{mounts.model}:ro",
        "-v", f"{output_dir.resolve()}:{mounts.output}",
        image,
    ]  # fmt: skip
    return command


def _docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def docker_error(stderr: str) -> str:
    """The line of a docker CLI error that says what went wrong (its last line is only a --help hint)."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Run 'docker")]
    errors = [line for line in useful if "Error" in line or line.startswith("docker:")]
    return (errors or useful or ["no message"])[-1]


def _peak_memory(container_id: str) -> int | None:
    """Peak memory from the container's cgroup (v2 memory.peak or v1 max_usage), read before removal."""
    candidates = [
        Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.peak"),
        Path(f"/sys/fs/cgroup/docker/{container_id}/memory.peak"),
        Path(f"/sys/fs/cgroup/memory/docker/{container_id}/memory.max_usage_in_bytes"),
    ]
    for path in candidates:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            continue
    return None


def _wait(
    name: str,
    container_id: str,
    timeout_s: float,
    cancel: threading.Event | None = None,
    on_memory: Callable[[int], None] | None = None,
) -> tuple[int | None, int | None]:
    """(exit code or None on timeout or cancel, peak memory). The cgroup goes with the container, so
    it is read while `docker wait` runs; `on_memory` hears each reading (the gate's progress line)."""
    waiter = subprocess.Popen(["docker", "wait", name], stdout=subprocess.PIPE, text=True)
    deadline, peak = time.monotonic() + timeout_s, None
    cancel = cancel or threading.Event()
    try:
        while waiter.poll() is None and time.monotonic() < deadline and not cancel.is_set():
            peak = max(filter(None, (peak, _peak_memory(container_id))), default=None)
            if peak is not None and on_memory is not None:
                on_memory(peak)
            time.sleep(0.5)
        if waiter.poll() is None:
            return None, peak
        output = waiter.communicate()[0].strip()
        return (int(output) if waiter.returncode == 0 and output.isdigit() else None), peak
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()


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
) -> RunResult:
    """Run one case in the container and always remove it (removing it from outside ends the run).

    `cancel` set before the start means no container is created; set during the run, it ends it."""
    name = name or f"{CONTAINER_PREFIX}{uuid.uuid4().hex[:12]}"
    if cancel is not None and cancel.is_set():
        return RunResult("container", output_dir, None, 0.0, cancelled=True)
    found = _docker("image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", image).stdout.strip()
    if found and found != platform:
        # docker would try to pull the right platform from a registry and fail with an unrelated message
        raise GateError(
            f"image {image} is {found}, not {platform}; rebuild it with `python -m validation build`"
        )
    if not model.is_file():
        raise GateError(f"{model}: model file not found; pass --model PATH to a TorchScript model")
    command = docker_run_command(
        image, name, app.mounts, input_dir, model, output_dir, memory, platform, hardened, labels
    )
    started = time.monotonic()
    result = RunResult("container", output_dir, None, 0.0, command=command)
    try:
        created = subprocess.run(command, capture_output=True, text=True, check=False)
        if created.returncode != 0:
            raise GateError(
                f"docker run of {image} failed: {docker_error(created.stderr)}; "
                f"check that `docker image inspect {image}` finds it"
            )
        container_id = created.stdout.strip()
        result.exit_code, result.peak_memory_bytes = _wait(name, container_id, timeout_s, cancel, on_memory)
        # a run ended by the gate's interrupt (from here or by removal from outside) is not the app's fault
        result.cancelled = cancel is not None and cancel.is_set() and result.exit_code != 0
        result.timed_out = result.exit_code is None and not result.cancelled
        result.seconds = time.monotonic() - started
        if result.exit_code is None:
            _docker("kill", name)
        state = _docker("inspect", "--format", "{{.State.OOMKilled}}", name)
        result.oom_killed = state.stdout.strip() == "true"
        logs = _docker("logs", name)
        result.logs = logs.stdout + logs.stderr
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)
    return result


def run_host(app: AppContract, input_dir: Path, model: Path, output_dir: Path, timeout_s: float) -> RunResult:
    """Run the same app on the host (the reference platform) with the same CLI."""
    command = app.host_command(sys.executable, input_dir, model, output_dir)
    started = time.monotonic()
    result = RunResult("host", output_dir, None, 0.0, command=command)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        result.exit_code, result.logs = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        result.timed_out = True
    result.seconds = time.monotonic() - started
    return result


def leftover_containers(label: str | None = None) -> list[str]:
    """Names of gate containers still present (there should never be any); with `label` ("key=value"),
    only those of one gate run, so that other gates on the same engine do not count."""
    where = ["--filter", f"label={label}"] if label else ["--filter", f"name={CONTAINER_PREFIX}"]
    listed = _docker("ps", "--all", *where, "--format", "{{.Names}}")
    return [line for line in listed.stdout.splitlines() if line]


def remove_containers(label: str) -> None:
    """Force-remove every container carrying `label` ("key=value"): ends their runs."""
    names = leftover_containers(label)
    if names:
        _docker("rm", "--force", *names)


@contextmanager
def holding(image: str, platform: str, labels: Mapping[str, str] | None = None) -> Iterator[str]:
    """A created, never started container of `image` for as long as the caller relies on the image:
    the engine refuses to remove an image a container uses, so a build that prunes older revision
    tags beside a running gate (or test session) cannot delete its image."""
    name = f"{CONTAINER_PREFIX}hold-{uuid.uuid4().hex[:12]}"
    command = ["docker", "create", "--name", name, "--platform", platform, "--network", "none"]
    command += [arg for key, value in (labels or {}).items() for arg in ("--label", f"{key}={value}")]
    created = subprocess.run([*command, image], capture_output=True, text=True, check=False)
    if created.returncode != 0:
        raise GateError(f"image {image} cannot be used: {docker_error(created.stderr)}")
    try:
        yield name
    finally:
        _docker("rm", "--force", name)
