"""`nox -s acceptance`: the release gate. Exit 0 only when every check on the image and every case passed.

The checks are a pytest suite (validation/checks/) so each one is a junit test case. This module reads the
command line, holds the image for the run, runs the model check, starts pytest with the plugin
(validation/plugin.py) that hands the checks the run's session (validation/session.py: the runs) and
evidence (validation/evidence.py: what they wrote, compared), then turns the typed results into
reports/acceptance/{junit.xml,metrics.json,report.html}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from validation import (
    build,
    cases,
    contract,
    cross_arch,
    generation,
    interrupts,
    map_contract,
    model_check,
    plan,
    profiles,
    progress,
    results,
    run,
    shard,
    verdict,
)
from validation.errors import GateError
from validation.evidence import Evidence
from validation.plugin import GatePlugin
from validation.session import GateConfig, GateSession

CHECKS_DIR = Path(__file__).with_name("checks")


def case_result(session: GateSession, evidence: Evidence, case: cases.Case) -> results.CaseResult:
    """One case as the report shows it: its runs, its label map, comparisons and SEG checks."""
    container, host = (session.finished((case.name, where)) for where in ("container", "host"))
    comparisons = {kind: c for (name, kind), c in evidence.comparisons.items() if name == case.name}
    seg_checks = evidence.seg_checks.get(case.name)
    return results.CaseResult(
        case.name,
        str(case.dicom_dir),
        evidence.label_map_file(case.name) if container else None,
        run_summary(container),
        run_summary(host),
        comparisons,
        tuple(seg_checks) if seg_checks is not None else None,
    )


def gate_results(
    session: GateSession,
    evidence: Evidence,
    started: datetime.datetime,
    seconds: float,
    outcome: verdict.Verdict,
    scope: verdict.Scope,
) -> results.GateResults:
    """The whole run, typed: what the report draws and what metrics.json records (its to_dict)."""
    config, facts = session.config, session.inspected
    image = results.ImageSummary(
        config.image,
        facts.id if facts else None,
        config.profile.name if config.app.package is None else "none: a MAP, run by its own manifests",
        facts.platform if facts else None,
        facts.size if facts else None,
        dict(facts.labels) if facts else {},
        tuple(session.pins),
    )
    app = {
        "contract": str(config.app.path),
        "name": config.app.name,
        "outputs": dict(config.app.outputs),
        "window_hu": list(config.app.window_hu),
    }
    if config.app.package is not None:  # what the MAP's manifests said, and in which form
        app["map"] = config.app.package.facts()
    record = config.shard.record(config.reports) if config.shard else None
    return results.GateResults(
        verdict=outcome.name,
        started=started.isoformat(timespec="seconds"),
        seconds=round(seconds, 1),
        image=image,
        checks=tuple(session.checks),
        cases=tuple(case_result(session, evidence, case) for case in config.cases),
        options=tuple(scope.options),
        deselected=tuple(scope.deselected),
        shard=scope.shard,
        shard_cases=tuple(record["cases"]) if record else (),
        case_set=tuple(record["case_set"]["names"]) if record else (),
        counts=outcome.to_dict(),
        app=app,
        shard_record=record,
    )


def run_summary(result: run.RunResult | None) -> results.RunSummary | None:
    """A run as the report and metrics.json keep it (its full log stays in <case>/<where>.log)."""
    if result is None:
        return None
    record = asdict(result)
    record["output_dir"] = str(result.output_dir)
    record.pop("logs")
    failure, log_tail = result.failure(), result.log_tail() if not result.ok else []
    record |= {"failure": failure, "log_tail": log_tail, "stage_seconds": result.stage_seconds}
    return results.RunSummary(
        result.where, result.exit_code, result.seconds, result.peak_memory_bytes, result.timed_out,
        result.oom_killed, tuple(result.command), failure, tuple(log_tail), record,
    )  # fmt: skip


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
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--app", type=Path, default=contract.DEFAULT_CONTRACT, help="app contract (TOML)")
    which.add_argument(
        "--map", type=Path, help="gate the MAP --image by its own manifests; FILE: its short contract (TOML)"
    )
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
    parser.add_argument("--locks", type=Path, help="folder of the app's locks (default: locks/ by it)")
    parser.add_argument(
        "--cross-arch",
        action="store_true",
        help="under emulation: the pipeline on a crop of each study in the image, the model on chosen "
        "windows of the full study, the full study on the host (PARTIAL)",
    )
    args = parser.parse_args(argv)
    if args.cross_arch and (args.no_host or args.map is not None):
        raise GateError("--cross-arch runs each full study on the host: leave out --no-host and --map")
    spec = shard.parse_spec(args.shard) if args.shard is not None else None
    profile = profiles.load(args.profile)
    if args.map is not None:  # the app's facts, its models included, come from the image's manifests
        if args.model is not None:
            raise GateError(f"{args.map}: a MAP brings its models in its image; leave out --model")
        app = map_contract.load_for_image(args.map, args.image)
        model = app.default_model
    else:
        app = contract.load(args.app)
        generation.check(app, profile)  # an image of the other SDK generation: one line, before any run
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
        app_locks=args.locks,
        cross_arch=args.cross_arch,
    )
    options = [f"-k {args.keyword}"] if args.keyword else []
    options += ["--no-host"] if args.no_host else []
    options += ["--cross-arch"] if args.cross_arch else []
    keyword = args.keyword
    if args.cross_arch:  # the crops are not the studies the references describe: validation/cross_arch.py
        keyword = f"({keyword}) and not test_mask" if keyword else "not test_mask"
    pytest_args = ["-k", keyword] if keyword else []
    # a MAP's image checks are its own: it is no image of a profile, with a profile's pins and labels
    pytest_args.append(f"--ignore={CHECKS_DIR / ('test_image.py' if app.package else 'test_map.py')}")
    if shard_plan is not None:
        options.append(f"--shard {spec}")
        if not shard_plan.image_checks:  # not collected (so not "left out"): shard 1 runs them
            pytest_args += [f"--ignore={CHECKS_DIR / name}" for name in ("test_image.py", "test_map.py")]
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
    # Before any case: a model the image's torch cannot read fails here in one line, not mid-case. (A MAP's
    # manifests were checked against its image when it was read: its command, app and models are there.)
    # Its window, timed in the image, predicts each case's time: the plan is printed, and a case that cannot
    # finish within its timeout is refused, before any case runs (validation/plan.py). The cross-arch tier
    # runs the full studies on the host meanwhile and gates crops of them instead (validation/cross_arch.py).
    tier = cross_arch.Tier(session) if config.cross_arch else None
    if tier is not None:
        config.tier = tier
        tier.start_host_runs()
    if config.app.package is None:
        run_time, platform = cases.run_time(config.app), session.image_facts.platform
        planner = plan.Planner(config.cases, run_time, platform, refuse=tier is None)
        model_check.require_usable_model(
            config.image, config.model, config.app, config.profile.platform, session.labels, planner.update,
            stop_at_prediction=tier is not None,
        )
        if tier is not None:
            config.cases = tier.prepare(planner.prediction.seconds if planner.prediction else None)
            if planner.prediction is not None:
                crops = plan.Planner(config.cases, run_time, platform, ways_out=plan.CROP_WAYS_OUT)
                crops.update(planner.prediction)
    started, clock = datetime.datetime.now(datetime.UTC), time.monotonic()
    evidence = Evidence(session)
    args = [
        str(CHECKS_DIR), "-p", "no:cacheprovider", "-q", "--capture=sys", "--no-header", "-rN", "--tb=line",
        "--assert=plain",  # a check says why in its own words: no introspection of its locals
        f"--junitxml={config.reports / 'junit.xml'}", "-o", "junit_family=xunit2",
        f"--rootdir={CHECKS_DIR}", "-c", "/dev/null", *pytest_args,
    ]  # fmt: skip
    try:
        with progress.step("checks", total=0, unit="checks") as checks:
            exit_code = int(pytest.main(args, plugins=[GatePlugin(session, evidence, checks)]))
    except KeyboardInterrupt:
        session.interrupted = True
        exit_code = int(pytest.ExitCode.INTERRUPTED)
    finally:
        with interrupts.ignored():  # a second Ctrl-C must not cut the cleanup short
            session.stop()
            if tier is not None:
                tier.stop()
    # only a signal is an interrupt: pytest also says INTERRUPTED when a check module fails to import,
    # which is the gate failing (decide: FAIL on any other runner exit than 0 or 1)
    interrupted = session.interrupted
    scope = verdict.Scope(scope.options, list(dict.fromkeys(session.deselected)), scope.shard)
    outcome = verdict.decide(session.checks, scope, exit_code, interrupted)
    gated = gate_results(session, evidence, started, time.monotonic() - clock, outcome, scope)
    recorded = gated.to_dict()
    (config.reports / "metrics.json").write_text(json.dumps(recorded, indent=2, default=str) + "\n")
    junit_extra = shard.junit_properties(recorded)
    verdict.add_junit_properties(config.reports / "junit.xml", outcome, scope, junit_extra)
    html = report.write_report(gated, config.reports)  # the cases with their overlays in memory
    if config.app.package is not None:
        print(map_contract.summary(config.app.package))
    if tier is not None:
        print("\n".join([*tier.record(), tier.scope()]))
    print(report.console_summary(gated))
    print(f"report: {html}")
    return outcome.exit_code


def main(argv: list[str]) -> int:
    config, scope, pytest_args = parse_args(argv)
    return run_gate(config, scope, pytest_args)
