"""`nox -s acceptance`: the release gate. Exit 0 only when every check on the image and every case passed.

The checks are a pytest suite (validation/checks/) so each one is a junit test case; this module
gives that suite its configuration and its expensive, shared work (the inspection container, one
container run and one host run per case, each comparison) through a plugin object, and turns the
results into reports/acceptance/{junit.xml,metrics.json,report.html}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pytest

from validation import (
    build,
    cases,
    compare,
    contract,
    cores,
    engine,
    interrupts,
    model_check,
    overlays,
    profiles,
    progress,
    results,
    run,
    shard,
    verdict,
)
from validation.errors import GateError
from validation.plugin import GatePlugin
from validation.verdict import NOT_EVALUATED

CHECKS_DIR = Path(__file__).with_name("checks")


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


@dataclass
class GateSession:
    """Shared state of one gate run; fixtures hand it to the checks, which never redo its work."""

    config: GateConfig
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    checks: list[dict[str, Any]] = field(default_factory=list)
    deselected: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)  # workers start and wait no more
    interrupted: bool = False  # Ctrl-C or SIGTERM reached the gate: no verdict, whatever ran
    pins: list[dict[str, Any]] = field(default_factory=list)  # what test_pin recorded, for the report
    _runs: dict[tuple[str, str], Future[run.RunResult]] = field(default_factory=dict)
    _executor: ThreadPoolExecutor | None = None
    _cores: cores.CoreBudget | None = None  # set with the pool: which core the image checks may take
    _comparisons: dict[tuple[str, str], results.Comparison] = field(default_factory=dict)
    _image_facts: engine.ImageFacts | None = None
    _seg: dict[str, list[compare.CheckOutcome]] = field(default_factory=dict)
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
    def names(self) -> dict[int, str]:
        return self.config.app.labels

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
            result = run.run_host(self.config.app, case.dicom_dir, self.config.model, output, case.timeout_s)
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

    def output(self, name: str, filename: str) -> Path:
        path = self.succeeded(name).output_dir / filename
        if not path.is_file():
            pytest.skip(f"{NOT_EVALUATED}the app wrote no {filename} (see test_outputs[{name}])")
        return path

    def comparison(self, name: str, kind: str) -> results.Comparison:
        """The container's mask against a reference ("golden", "ground_truth" or the "host" run's mask)."""
        key = (name, kind)
        if key not in self._comparisons:
            case, mask_name = self.case(name), self.config.app.mask
            mask = self.output(name, mask_name)
            if kind == "host":
                reference = self.succeeded(name, "host").output_dir / mask_name
                if not reference.is_file():
                    pytest.skip(f"{NOT_EVALUATED}the host run wrote no {mask_name}")
            else:
                reference = case.reference(kind)
            tolerances = case.tolerances[kind]
            # the overlay is drawn now, from the masks loaded for the comparison: nothing keeps them after
            self._comparisons[key] = overlays.compare_with_overlay(
                kind, mask, reference, tolerances, dicom_dir=case.dicom_dir, out_dir=self.case_dir(name),
                labels=case.labels, names=self.names, window=self.config.app.window_hu,
            )  # fmt: skip
        return self._comparisons[key]

    def seg_outcomes(self, name: str) -> list[compare.CheckOutcome]:
        if name not in self._seg:
            from validation import seg

            app, case = self.config.app, self.case(name)
            self.output(name, app.seg)
            output = self.container_run(name).output_dir
            self._seg[name] = seg.validate_seg(
                output / app.seg,
                case.dicom_dir,
                self.names,
                mask_path=output / app.mask,
                expected_series=case.expected_series_uid,
            )
        return self._seg[name]

    def _finished(self, key: tuple[str, str]) -> run.RunResult | None:
        future = self._runs.get(key)
        return future.result() if future is not None and future.done() and not future.exception() else None

    def case_result(self, case: cases.Case) -> results.CaseResult:
        container, host = (self._finished((case.name, where)) for where in ("container", "host"))
        mask = container.output_dir / self.config.app.mask if container else None
        return results.CaseResult(
            case.name,
            str(case.dicom_dir),
            str(mask) if mask and mask.is_file() else None,
            results.RunSummary.from_dict(_run_dict(container)),
            results.RunSummary.from_dict(_run_dict(host)),
            {kind: c for (name, kind), c in self._comparisons.items() if name == case.name and c is not None},
            tuple(self._seg[case.name]) if case.name in self._seg else None,
        )

    def metrics(
        self,
        started: datetime.datetime,
        seconds: float,
        outcome: verdict.Verdict,
        scope: verdict.Scope,
        case_results: list[results.CaseResult],
    ) -> dict[str, Any]:
        facts = self._image_facts
        per_case = {case.name: case.to_dict() for case in case_results}
        return {
            "verdict": outcome.name,
            "counts": outcome.to_dict(),
            "selection": {"options": scope.options, "deselected": scope.deselected, "shard": scope.shard},
            "shard": self.config.shard.record(self.config.reports) if self.config.shard else None,
            "started": started.isoformat(timespec="seconds"),
            "app": {
                "contract": str(self.config.app.path),
                "name": self.config.app.name,
                "mask": self.config.app.mask,
                "seg": self.config.app.seg,
                "window_hu": list(self.config.app.window_hu),
            },
            "seconds": round(seconds, 1),
            "image": {
                "reference": self.config.image,
                "id": facts.id if facts else None,
                "profile": self.config.profile.name,
                "platform": facts.platform if facts else None,
                "size_bytes": facts.size if facts else None,
                "labels": facts.labels if facts else {},
                "pins": self.pins,
            },
            "checks": self.checks,
            "cases": per_case,
        }


def _run_dict(result: run.RunResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    data = asdict(result)
    data["output_dir"] = str(result.output_dir)
    data.pop("logs")
    data["failure"] = result.failure()
    data["log_tail"] = result.log_tail() if not result.ok else []
    data["stage_seconds"] = result.stage_seconds  # where the run's time went, from the app's stage lines
    return data


def resolve_image(image: str | None, profile: profiles.Profile, app: contract.AppContract) -> str:
    if image:
        return image
    record = build.BuildRecord.read(build.REPORTS / "build.json")
    if record.profile != profile.name or record.app_name != app.name:
        raise GateError(
            f"{build.REPORTS / 'build.json'}: the last build was of {record.app_name} for profile "
            f"{record.profile}, not {app.name} for {profile.name}; run `nox -s build -- --profile "
            f"{profile.name} --app {app.path}` or pass --image REF"
        )
    return record.image_id


def parse_args(argv: list[str]) -> tuple[GateConfig, verdict.Scope, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m validation acceptance", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--profile", default=profiles.DEFAULT_PROFILE, help="profile name or TOML path")
    parser.add_argument("--app", type=Path, default=contract.DEFAULT_CONTRACT, help="app contract (TOML)")
    parser.add_argument("--image", help="image to gate (default: the one in reports/build.json)")
    parser.add_argument("--cases", type=Path, help="folder of case folders (default: the app's)")
    parser.add_argument("--model", type=Path, help="TorchScript model (default: the app's)")
    parser.add_argument("--reports", type=Path, default=build.REPORTS / "acceptance", help="output folder")
    parser.add_argument("-k", dest="keyword", help="only checks matching this pytest -k expression (PARTIAL)")
    parser.add_argument(
        "--no-host",
        action="store_true",
        help="leave out the host runs and cross-architecture checks (PARTIAL)",
    )
    parser.add_argument("--not-hardened", action="store_true", help="run without --read-only/--cap-drop/...")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="runs at a time")
    parser.add_argument(
        "--shard", metavar="K/N", help="gate shard K of N of the cases; image checks on shard 1 (PARTIAL)"
    )
    args = parser.parse_args(argv)
    spec = shard.parse_spec(args.shard) if args.shard is not None else None
    profile, app = profiles.load(args.profile), contract.load(args.app)
    model = args.model or app.default_model
    if not model.is_file():
        raise GateError(f"{model}: model not found; pass --model PATH to a TorchScript model")
    selected, shard_plan = cases.discover(args.cases or app.default_cases, app), None
    if spec is not None:
        selected, shard_plan = shard.select(spec, selected)
    config = GateConfig(
        profile=profile,
        app=app,
        image=resolve_image(args.image, profile, app),
        cases=selected,
        model=model.resolve(),
        reports=args.reports.resolve(),
        hardened=not args.not_hardened,
        jobs=max(1, args.jobs),
        no_host=args.no_host,
        shard=shard_plan,
    )
    options = [f"-k {args.keyword}"] if args.keyword else []
    options += ["--no-host"] if args.no_host else []
    pytest_args = ["-k", args.keyword] if args.keyword else []
    if shard_plan is not None:
        options.append(f"--shard {spec}")
        if not shard_plan.image_checks:  # not collected (so not "left out"): shard 1 runs them
            pytest_args.append(f"--ignore={CHECKS_DIR / 'test_image.py'}")
    return config, verdict.Scope(options, shard=str(spec) if spec else None), pytest_args


def run_gate(config: GateConfig, scope: verdict.Scope, pytest_args: list[str]) -> int:
    """Exit 0 only for PASS; 1 for FAIL, 3 for PARTIAL (see verdict.EXIT_CODES), 130 when interrupted.
    The image is held by a container of this run throughout, so no build beside it can delete it."""
    build.require_engine()
    session = GateSession(config)

    def noted() -> None:
        session.interrupted = True  # however pytest reports it, this run is over and is no verdict

    # From here on Ctrl-C and SIGTERM end the run through the cleanup, even in a process started with
    # SIGINT ignored (a background job of a script): no holder or model-check container is left.
    with interrupts.terminate_as_interrupt(noted):
        if config.reports.exists():
            shutil.rmtree(config.reports)
        config.reports.mkdir(parents=True)
        facts = session.image_facts  # fail fast, with one line, when the image is missing
        with run.holding(config.image, facts.platform, session.labels):
            return _gate(session, scope, pytest_args)


def _gate(session: GateSession, scope: verdict.Scope, pytest_args: list[str]) -> int:
    from validation import report

    config = session.config
    # Before any case: a model the image's torch cannot read fails here in one line, not mid-case.
    model_check.require_usable_model(
        config.image, config.model, config.app, config.profile.platform, session.labels
    )
    started, clock = datetime.datetime.now(datetime.UTC), time.monotonic()
    args = [
        str(CHECKS_DIR), "-p", "no:cacheprovider", "-q", "--capture=sys", "--no-header", "-rN", "--tb=line",
        f"--junitxml={config.reports / 'junit.xml'}", "-o", "junit_family=xunit2",
        f"--rootdir={CHECKS_DIR}", "-c", "/dev/null", *pytest_args,
    ]  # fmt: skip
    try:
        with progress.step("checks", total=0, unit="checks") as checks:
            exit_code = int(pytest.main(args, plugins=[GatePlugin(session, checks)]))
    except KeyboardInterrupt:
        session.interrupted = True
        exit_code = int(pytest.ExitCode.INTERRUPTED)
    finally:
        with interrupts.ignored():  # a second Ctrl-C must not cut the cleanup short
            session.stop()
    # only a signal is an interrupt: pytest also says INTERRUPTED when a check module fails to import,
    # which is the gate failing (decide: FAIL on any other runner exit than 0 or 1)
    interrupted = session.interrupted
    scope = verdict.Scope(scope.options, list(dict.fromkeys(session.deselected)), scope.shard)
    outcome = verdict.decide(session.checks, scope, exit_code, interrupted)
    case_results = [session.case_result(case) for case in config.cases]
    metrics = session.metrics(started, time.monotonic() - clock, outcome, scope, case_results)
    (config.reports / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    junit_extra = shard.junit_properties(metrics)
    verdict.add_junit_properties(config.reports / "junit.xml", outcome, scope, junit_extra)
    gated = results.GateResults.from_dict(metrics, case_results)  # the cases with their overlays in memory
    html = report.write_report(gated, config.reports)
    print(report.console_summary(gated))
    print(f"report: {html}")
    return outcome.exit_code


def main(argv: list[str]) -> int:
    config, scope, pytest_args = parse_args(argv)
    return run_gate(config, scope, pytest_args)
