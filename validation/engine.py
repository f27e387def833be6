"""The one owner of the `docker` CLI: every image and container armgate touches goes through here.

One module, so that every call fails with the same one-line error (the missing client included),
every container armgate starts is removed the same way, and what armgate asks of the engine can
be read in one place. It takes arguments only: it knows no app, profile, case or lock-down policy.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from validation.errors import GateError

if TYPE_CHECKING:  # the host check (`nox -s prepare`) imports this module with the standard library only
    from validation import progress

CLIENT = "docker"
MISSING_CLIENT = "docker client not found: run `nox -s prepare` (or install docker.io)"
QUERY_TIMEOUT_S = 60.0  # inspect, ps, logs, kill: the engine answers these in well under a second


def _client_missing() -> GateError:
    return GateError(MISSING_CLIENT)


def docker(*args: str, timeout: float | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
    """`docker ARGS` with its output captured. `check`: a non-zero exit raises one line naming the
    subcommand and the engine's last word."""
    try:
        result = subprocess.run([CLIENT, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise _client_missing() from None
    if check and result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise GateError(f"docker {args[0]} failed: {lines[-1] if lines else 'no message'}")
    return result


def probe(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str] | None:
    """`docker ARGS` for a status check: None when there is no client or it does not answer in time."""
    try:
        return docker(*args, timeout=timeout)
    except (GateError, OSError, subprocess.TimeoutExpired):
        return None


def docker_error(stderr: str) -> str:
    """The line of a docker CLI error that says what went wrong (its last line is only a --help hint)."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Run 'docker")]
    errors = [line for line in useful if "Error" in line or line.startswith("docker:")]
    return (errors or useful or ["no message"])[-1]


def _popen(args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    try:
        return subprocess.Popen([CLIENT, *args], **kwargs)
    except FileNotFoundError:
        raise _client_missing() from None


# --- images -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFacts:
    """What `docker image inspect` says about one image; `raw` is its whole JSON object."""

    raw: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.raw.get("Id", ""))

    @property
    def os(self) -> str | None:
        return self.raw.get("Os")

    @property
    def architecture(self) -> str | None:
        return self.raw.get("Architecture")

    @property
    def platform(self) -> str:
        """`os/architecture`, as `--platform` takes it."""
        return f"{self.os}/{self.architecture}"

    @property
    def size(self) -> int:
        return int(self.raw.get("Size") or 0)

    @property
    def labels(self) -> dict[str, str]:
        return (self.raw.get("Config") or {}).get("Labels") or {}

    @property
    def graph_driver(self) -> dict[str, Any]:
        return self.raw.get("GraphDriver") or {}


def _inspect(reference: str, timeout: float | None) -> subprocess.CompletedProcess[str]:
    return docker("image", "inspect", reference, timeout=timeout)


def inspect_image(reference: str, timeout: float | None = None) -> ImageFacts | None:
    """The image's facts, or None when the engine does not have it."""
    result = _inspect(reference, timeout)
    return ImageFacts(json.loads(result.stdout)[0]) if result.returncode == 0 else None


def require_image(reference: str, missing: str, timeout: float | None = QUERY_TIMEOUT_S) -> ImageFacts:
    """The image's facts, or a GateError `<missing>: <the engine's reason>`."""
    result = _inspect(reference, timeout)
    if result.returncode != 0:
        raise GateError(f"{missing}: {docker_error(result.stderr)}")
    return ImageFacts(json.loads(result.stdout)[0])


def image_tags(repository: str) -> list[str]:
    """The tags of `repository` on the engine, each once, sorted."""
    listed = docker("image", "ls", repository, "--format", "{{.Tag}}")
    return sorted(set(listed.stdout.split()))


def untag(reference: str) -> bool:
    """`docker image rm` without --force: an image still used by a container or another tag stays."""
    return docker("image", "rm", reference).returncode == 0


def history(image: str) -> list[str]:
    """The `CREATED BY` line of every layer of the image, untruncated."""
    listed = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image, check=True)
    return listed.stdout.splitlines()


@contextmanager
def derived_image(
    base: str, platform: str, steps: str, context: Path, files: Mapping[str, bytes] | None = None
) -> Iterator[str]:
    """An image made from `base` by `steps` (Dockerfile lines after FROM; `files` written into the
    build `context`, a fresh folder), offline, for `platform`; its tag, removed afterwards with the
    temporary tag its base gets (so that buildx reads the engine's image, not a registry)."""
    tag = f"armgate-derived/{base.rsplit('/', 1)[-1].split(':')[0]}:{uuid.uuid4().hex[:12]}"
    context.mkdir(parents=True)
    for name, content in (files or {}).items():
        (context / name).write_bytes(content)
    docker("tag", base, f"{tag}-base", check=True)
    (context / "Dockerfile").write_text(f"FROM {tag}-base\n{steps}\n")
    try:
        args = ["--platform", platform, "--load", "--network", "none", "--tag", tag, str(context)]
        code = buildx_build(args, context / "build.log")
        if code != 0:
            log = (context / "build.log").read_text(errors="replace")[-2000:]
            raise GateError(f"the image derived from {base} did not build (exit {code}): {log}")
        yield tag
    finally:
        docker("image", "rm", "--force", tag, f"{tag}-base")


@contextmanager
def exported(image: str, platform: str, name: str) -> Iterator[tarfile.TarFile]:
    """The image's filesystem as a streamed tar, from a container that is created (never started:
    nothing runs under emulation), exported and always removed."""
    created = docker("create", "--name", name, "--platform", platform, "--network", "none", image)
    if created.returncode != 0:
        raise GateError(f"cannot read the files of {image}: {docker_error(created.stderr)}")
    try:
        export = _popen(["export", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=export.stdout, mode="r|") as archive:
                yield archive
            _, error = export.communicate()
            if export.returncode != 0:
                raise GateError(f"docker export of {image} failed: {error.decode().strip()[-300:]}")
        finally:
            if export.poll() is None:  # the reader stopped early or failed: the rest is not wanted
                export.kill()
                export.wait()
    finally:
        remove(name)


def buildx_build(args: Sequence[str], log: Path, step: progress.Step | None = None) -> int:
    """`docker buildx build --progress=plain ARGS` with its whole output in `log` (the command first);
    the exit code. With a progress step, the tool's last line is the step's live detail."""
    command = [CLIENT, "buildx", "build", "--progress=plain", *args]
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        if step is not None:
            from validation import progress

            return progress.run_command(step, command, log)
        with log.open("w", encoding="utf-8") as handle:
            handle.write(f"+ {shlex.join(command)}\n")
            handle.flush()
            return subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
    except FileNotFoundError:
        raise _client_missing() from None


# --- containers ---------------------------------------------------------------------------------


def label_args(labels: Mapping[str, str]) -> list[str]:
    """`--label key=value` for each label."""
    return [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]


def run_argv(name: str, options: Sequence[str], image: str, args: Sequence[str] = ()) -> list[str]:
    """The argv of a detached `docker run` of `image` named `name` (a pure function: what the report
    shows as the run's command, and what `container` starts)."""
    return [CLIENT, "run", "--detach", "--name", name, *options, image, *args]


def _own_argv(argv: Sequence[str]) -> list[str]:
    if not argv or argv[0] != CLIENT:
        raise ValueError(f"not a docker command: {list(argv)[:3]}")
    return list(argv[1:])


def execute(argv: Sequence[str], timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run a docker argv made here (`run_argv`, or one derived from it) with its output captured."""
    return docker(*_own_argv(argv), timeout=timeout)


@contextmanager
def container(argv: Sequence[str], failure: str, hint: str = "") -> Iterator[str]:
    """Start the detached `docker run` argv of `run_argv` and yield the container's id; the container
    is removed however this ends (a failed start can leave a created container behind, so that too).
    A start that fails raises `<failure>: <the engine's reason><hint>`."""
    options = _own_argv(argv)
    name = options[options.index("--name") + 1]
    try:
        started = docker(*options)
        if started.returncode != 0:
            raise GateError(f"{failure}: {docker_error(started.stderr)}{hint}")
        yield started.stdout.strip()
    finally:
        remove(name)


@contextmanager
def holding(image: str, platform: str, name: str, labels: Mapping[str, str]) -> Iterator[str]:
    """A created, never started container of `image` for as long as the caller relies on the image:
    the engine refuses to remove an image a container uses, so a build that prunes older revision
    tags beside a running gate (or test session) cannot delete it."""
    options = ["--name", name, "--platform", platform, "--network", "none", *label_args(labels)]
    options += ["--entrypoint", "true"]  # never run; an image with no command could not be created
    try:
        created = docker("create", *options, image, timeout=QUERY_TIMEOUT_S)
        if created.returncode != 0:
            raise GateError(f"image {image} cannot be used: {docker_error(created.stderr)}")
        yield name
    finally:
        remove(name, timeout=QUERY_TIMEOUT_S)


def remove(*names: str, timeout: float | None = None) -> None:
    """Force-remove containers (ends their runs) with their anonymous volumes (a MAP run's working folder,
    an image's VOLUME): nothing of a run is left behind. A name that is already gone is no error."""
    if names:
        docker("rm", "--force", "--volumes", *names, timeout=timeout)


def kill(name: str) -> None:
    docker("kill", name, timeout=QUERY_TIMEOUT_S)


def oom_killed(name: str) -> bool:
    """Whether the container's memory limit killed it."""
    state = docker("inspect", "--format", "{{.State.OOMKilled}}", name, timeout=QUERY_TIMEOUT_S)
    return state.stdout.strip() == "true"


def logs(name: str) -> str:
    """What the container wrote, stdout then stderr."""
    found = docker("logs", name, timeout=QUERY_TIMEOUT_S)
    return found.stdout + found.stderr


def containers(label: str | None = None, name_prefix: str | None = None) -> list[str]:
    """Names of containers, running or not, carrying `label` ("key=value") or named `name_prefix*`."""
    where = ["--filter", f"label={label}"] if label else []
    where += ["--filter", f"name={name_prefix}"] if name_prefix else []
    listed = docker("ps", "--all", *where, "--format", "{{.Names}}", timeout=QUERY_TIMEOUT_S)
    return [line for line in listed.stdout.splitlines() if line]


def remove_containers(label: str) -> None:
    """Force-remove every container carrying `label` ("key=value"): ends their runs."""
    remove(*containers(label), timeout=QUERY_TIMEOUT_S)


def peak_memory(container_id: str) -> int | None:
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


@dataclass(frozen=True)
class Waited:
    """How a container's run ended, as `docker wait` saw it."""

    exit_code: int | None  # None: the run timed out, was cancelled, or the wait itself failed
    peak_memory_bytes: int | None
    error: str = ""  # why `docker wait` failed (the engine's message); "" when it did not


def wait_for(
    name: str,
    container_id: str,
    timeout_s: float,
    cancel: threading.Event | None = None,
    on_memory: Callable[[int], None] | None = None,
) -> Waited:
    """Waits for the container's exit code until `timeout_s` or `cancel`, reading the peak memory from
    its cgroup meanwhile (the cgroup goes with the container); `on_memory` hears each reading (a progress
    line). A `docker wait` that fails (an engine error, a container gone) says why in `error`, so that
    the caller does not report it as a timeout."""
    waiter = _popen(["wait", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, peak = time.monotonic() + timeout_s, None
    cancel = cancel or threading.Event()
    try:
        while waiter.poll() is None and time.monotonic() < deadline and not cancel.is_set():
            peak = max(filter(None, (peak, peak_memory(container_id))), default=None)
            if peak is not None and on_memory is not None:
                on_memory(peak)
            time.sleep(0.5)
        if waiter.poll() is None:
            return Waited(None, peak)
        output, errors = (text.strip() for text in waiter.communicate())
        if waiter.returncode == 0 and output.isdigit():
            return Waited(int(output), peak)
        if waiter.returncode == 0:
            return Waited(None, peak, f"it printed {output[:200]!r}, not an exit code")
        return Waited(None, peak, f"{docker_error(errors)} (exit {waiter.returncode})")
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()

