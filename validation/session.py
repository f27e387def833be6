"""One gate run's shared state: its configuration, the image as inspected once, and every run of the app.

Each case runs once in the container and, for cross-architecture agreement, once on the host; the runs
start in the background as soon as the checks are collected (one case per core, the image checks on a
spare one) and every check that needs a run waits for its result here. Every container of the run carries
the run's labels, so `stop` ends them all, whatever happened.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pytest

from validation import (
    cases,
    contract,
    cores,
    engine,
    map_run,
    profiles,
    progress,
    results,
    run,
    shard,
    verdict,
)
from validation.errors import GateError
from validation.verdict import NOT_EVALUATED


@dataclass
class GateConfig:
    profile: profiles.Profile
    app: contract.AppContract
    image: str
    cases: list[cases.Case]
    model: Path
    reports: Path
    hardened: bool = True
    jobs: int = 2
    no_host: bool = False
    shard: shard.ShardPlan | None = None  # --shard K/N: `cases` is this shard's share of the set
    app_locks: Path | None = None  # --locks: the folder of the app's locks (default: locks/ by its contract)
    cross_arch: bool = False  # --cross-arch: the tier that finishes under emulation (PARTIAL by design)
    tier: Any = None  # its state once started (validation/cross_arch.Tier), read by its checks


@dataclass
class GateSession:
    """Shared state of one gate run; fixtures hand it to the checks, which never redo its work."""

    config: GateConfig
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    checks: list[verdict.Check] = field(default_factory=list)
    deselected: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)  # workers start and wait no more
    interrupted: bool = False  # Ctrl-C or SIGTERM reached the gate: no verdict, whatever ran
    pins: list[results.Pin] = field(default_factory=list)  # what test_pin recorded, for the report
    _runs: dict[tuple[str, str], Future[run.RunResult]] = field(default_factory=dict)
    _executor: ThreadPoolExecutor | None = None
    _cores: cores.CoreBudget | None = None  # set with the pool: which core the image checks may take
    _image_facts: engine.ImageFacts | None = None
    _progress: dict[str, progress.Step] = field(default_factory=dict)  # "container"/"host" runs
    out: TextIO = field(default_factory=lambda: sys.stdout)  # the terminal, from before pytest captures

    @property
    def image_facts(self) -> engine.ImageFacts:
        """The image as inspected once, at the start of the run: every later use reads these facts."""
        if self._image_facts is None:
            facts = engine.inspect_image(self.config.image, timeout=engine.QUERY_TIMEOUT_S)
            if facts is None:
                raise GateError(f"image {self.config.image} not found; build it with `nox -s build`")
            self._image_facts = facts
        return self._image_facts

    @property
    def inspected(self) -> engine.ImageFacts | None:
        """The image's facts if they were read (None when the gate stopped before)."""
        return self._image_facts

    def case(self, name: str) -> cases.Case:
        return next(case for case in self.config.cases if case.name == name)

    def case_dir(self, name: str) -> Path:
        return self.config.reports / "cases" / name

    @property
    def labels(self) -> dict[str, str]:
        """On every container of this gate run: how it finds (and removes) exactly its own."""
        return {"org.armgate.gate-run": self.run_id, "org.armgate.gate-pid": str(os.getpid())}

    @property
    def own_containers(self) -> str:
        return f"org.armgate.gate-run={self.run_id}"

    @contextmanager
    def inspection_container(self) -> Iterator[str]:
        """A sleeping container of the image for testinfra's docker:// backend, started as the platform
        the image says it is, so that a foreign image is inspected (and fails the checks) as what it is.
        Removed when the block ends; it carries the gate's labels, so `stop` removes it after an interrupt."""
        name = f"{run.CONTAINER_PREFIX}{self.run_id}-inspect"
        options = ["--network", "none", *engine.label_args(self.labels)]
        options += ["--platform", self.image_facts.platform, "--entrypoint", "sleep"]
        command = engine.run_argv(name, options, self.config.image, ["infinity"])
        with engine.container(command, f"cannot start image {self.config.image}"):
            yield name

    def _run(self, name: str, where: str) -> run.RunResult:
        with self._cores.run():  # counted as running from its first step, whatever happens in it
            steps = self._progress[where]
            steps.update(detail=f"{name} running")
            try:
                result = self._run_case(name, where, steps)
            except BaseException:
                steps.advance(detail=f"{name} stopped")
                raise
        steps.advance(detail=f"{name} {'done' if result.ok else 'stopped' if result.cancelled else 'failed'}")
        if steps.completed == steps.total:
            steps.close(failed=False)
        return result

    def _run_case(self, name: str, where: str, steps: progress.Step) -> run.RunResult:
        case = self.case(name)
        output = run.writable_output_dir(self.case_dir(name), where)
        if where == "host":
            work = self.case_dir(name) / "host-work"  # its own working folder: runs start two at a time
            app, model = self.config.app, self.config.model
            result = run.run_host(app, case.dicom_dir, model, output, case.timeout_s, work_dir=work)
            shutil.rmtree(work, ignore_errors=True)  # what the app left there is no output
        elif self.config.app.package is not None:  # a MAP, run by its own manifests
            result = map_run.run_map(
                self.config.image, self.config.app.package, case.dicom_dir, output, case.timeout_s,
                case.memory, self.config.profile.platform, self.config.hardened,
                name=f"{run.CONTAINER_PREFIX}{self.run_id}-{name}", labels=self.labels, cancel=self.stopping,
                on_memory=lambda peak: steps.update(memory_bytes=peak), facts=self.image_facts,
            )  # fmt: skip
        else:
            result = run.run_container(
                self.config.image, self.config.app, case.dicom_dir, self.config.model, output,
                case.timeout_s, case.memory, self.config.profile.platform, self.config.hardened,
                name=f"{run.CONTAINER_PREFIX}{self.run_id}-{name}",
                labels=self.labels, cancel=self.stopping, facts=self.image_facts,
                on_memory=lambda peak: steps.update(memory_bytes=peak),
            )  # fmt: skip
        # kept whatever happened (a timeout included), so the report can say where the app was
        (self.case_dir(name) / f"{where}.log").write_text(result.logs)
        return result

    def start_runs(self, keys: list[tuple[str, str]]) -> None:
        """Start the selected checks' runs in the background: one case uses one core (the app runs
        single-threaded for determinism), so the others run cases and image checks meanwhile."""
        self._executor = self._executor or ThreadPoolExecutor(max_workers=self.config.jobs)
        self._cores = self._cores or cores.CoreBudget(cores.available_cores(), self.config.jobs)
        for key in keys:
            if key not in self._runs:
                name, where = key
                if where not in self._progress:
                    self._progress[where] = progress.Step(f"{where} runs", 0, "cases", self.out)
                self._progress[where].grow(1)
                self._cores.queue()
                self._runs[key] = self._executor.submit(self._run, name, where)

    @contextmanager
    def spare_core(self) -> Iterator[None]:
        """For the image checks: a core no case run is about to take (validation/cores.py)."""
        if self._cores is None:  # no case runs in this gate run
            yield
            return
        with self._cores.spare_core(self.stopping):
            yield

    def stop(self) -> None:
        """End every container of this gate run and wait for the workers. Workers see `stopping`
        before they create a container and while they wait on one, so none can start after this."""
        self.stopping.set()
        if self._cores is not None:
            self._cores.wake()
        run.remove_containers(self.own_containers)
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        run.remove_containers(self.own_containers)
        for steps in self._progress.values():  # runs never started (interrupt, pytest stopped early)
            steps.close(failed=True, ended="stopped")

    def container_run(self, name: str) -> run.RunResult:
        self.start_runs([(name, "container")])
        return self._runs[(name, "container")].result()

    def host_run(self, name: str) -> run.RunResult:
        self.start_runs([(name, "host")])
        return self._runs[(name, "host")].result()

    def succeeded(self, name: str, where: str = "container") -> run.RunResult:
        """The run a check depends on; a failed run is reported once, by its own check, and the
        checks that depend on it are not evaluated."""
        result = self.container_run(name) if where == "container" else self.host_run(name)
        if not result.ok:
            pytest.skip(f"{NOT_EVALUATED}the {where} run failed (see test_{where}_run[{name}])")
        return result

    def finished(self, key: tuple[str, str]) -> run.RunResult | None:
        """A run that has ended with a result, else None (never started, still running, or raised)."""
        future = self._runs.get(key)
        return future.result() if future is not None and future.done() and not future.exception() else None

