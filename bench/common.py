"""What every section of the bench shares: the context, Docker calls, the machine's description."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from validation import cases, contract, engine, interrupts, profiles
from validation.errors import GateError

BENCH_REPOSITORY = "armgate/bench"  # every image the bench makes is tagged here and removed at the end
CONTAINER_PREFIX = "armgate-bench-"


@dataclass
class Context:
    """What the sections share: the profile, the image, scratch space and what to clean up."""

    profile: profiles.Profile
    app: contract.AppContract
    image: str
    runs: int
    scratch: Path
    cases: list[cases.Case]
    model: Path
    host_runs: bool
    jobs: list[int]
    logs: Path
    probes: bool = True  # the gate-time breakdown (bench/overhead.py)
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    tags: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    app_images: list[str] = field(default_factory=list)  # images the rebuild section made (for size)

    def __post_init__(self) -> None:
        if self.logs.exists():
            shutil.rmtree(self.logs)
        self.logs.mkdir(parents=True)

    def tag(self, what: str) -> str:
        reference = f"{BENCH_REPOSITORY}:{what}-{self.token}"
        self.tags.append(reference)
        return reference


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The engine's `docker ARGS`, with the bench's longer default timeout."""
    return engine.docker(*args, timeout=timeout)


def image_size(reference: str) -> int:
    facts = engine.inspect_image(reference)
    if not facts:
        raise GateError(f"image {reference} not found")
    return facts.size


def remove_image(reference: str) -> None:
    """Untag one of our tags; the image goes only if nothing else names it."""
    engine.untag(reference)


def buildx(args: Sequence[str], log: Path) -> float:
    """`docker buildx build` with its log in a file (the table stays readable); seconds taken."""
    started = time.monotonic()
    code = engine.buildx_build(args, log)
    if code != 0:
        raise GateError(f"docker buildx build failed (exit {code}): see {log}")
    return time.monotonic() - started


CHILD_CLEANUP_S = 300  # a gate or build interrupted mid-run removes its containers within this


class HeldInterrupts:
    """Ctrl-C and SIGTERM recorded instead of raised until release(), which raises one that came as
    KeyboardInterrupt. Raised inside Popen, after the fork, an interrupt would leave the new child
    without its SIGINT. Only the main thread receives signals; elsewhere nothing is held."""

    def __init__(self) -> None:
        self.came = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> HeldInterrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in interrupts.SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # ignored stays ignored (nohup, &)
                    self._previous[signum] = signal.signal(signum, self._record)
        return self

    def _record(self, signum: int, frame: object) -> None:
        self.came = True

    def _restore(self) -> None:
        interrupts.restore_handlers(self._previous)
        self._previous.clear()

    def release(self) -> None:
        self._restore()
        if self.came:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        self._restore()


def run_to_log(command: Sequence[str], log: Path, cwd: Path | None = None) -> int:
    """Run an armgate command with its output in `log`; its exit code.

    The child has a session of its own, so a Ctrl-C reaches the bench alone, which passes one SIGINT
    on and waits while the child cleans up: killed outright (as subprocess.run does on an
    interrupt), a gate would leave its containers running. An interrupt that comes while the child
    is being started is held until it has started, then passed on the same way."""
    with log.open("a") as handle, HeldInterrupts() as held:
        child = subprocess.Popen(
            list(command), cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            held.release()
            return child.wait()
        except BaseException:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=CHILD_CLEANUP_S)
            except subprocess.TimeoutExpired:
                child.kill()
            raise


def run_logged(command: Sequence[str], log: Path, what: str, cwd: Path | None = None) -> float:
    """Run a command with its output in `log`; seconds taken; GateError naming the log if it fails."""
    started = time.monotonic()
    log.write_text("+ " + " ".join(command) + "\n")
    code = run_to_log(command, log, cwd)
    seconds = time.monotonic() - started
    if code != 0:
        raise GateError(f"{what} failed (exit {code}): see {log}")
    return seconds


def machine() -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read_lines("/proc/cpuinfo")
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    engine = docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "uname_m": platform.machine(),
        "cpu": model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "docker_engine": engine,
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def select_cases(directory: Path, names: Sequence[str] | None, destination: Path) -> list[cases.Case]:
    """Copy the chosen cases (default: all) aside, so fixtures regenerated mid-bench change nothing."""
    found = {case.name: case for case in cases.discover(directory)}
    names = list(names or sorted(found))
    unknown = [name for name in names if name not in found]
    if unknown:
        raise GateError(f"{directory}: no case named {', '.join(unknown)}; have {', '.join(sorted(found))}")
    destination.mkdir(parents=True)
    for name in names:
        shutil.copytree(found[name].path, destination / name)
    return [case for case in cases.discover(destination) if case.name in names]


def cleanup(ctx: Context) -> None:
    """Remove the bench's tags and containers (never anyone else's)."""
    for name in ctx.containers:
        docker("rm", "--force", name)
    for tag in dict.fromkeys(ctx.tags):
        remove_image(tag)
