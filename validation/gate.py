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
import subprocess
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from validation import build, cases, compare, model_check, profiles, run
from validation.errors import GateError

CHECKS_DIR = Path(__file__).with_name("checks")
APP_LABELS_JSON = profiles.ROOT / "app" / "config" / "labels.json"


@dataclass
class GateConfig:
    profile: profiles.Profile
    image: str
    cases: list[cases.Case]
    model: Path
    reports: Path
    hardened: bool = True
    jobs: int = 2


def label_names() -> dict[int, str]:
    data = json.loads(APP_LABELS_JSON.read_text())
    return {int(entry["value"]): entry["name"] for entry in data["labels"]}


@dataclass
class Comparison:
    reference: Path
    tolerances: dict[str, float]
    result: compare.ComparisonResult
    outcomes: list[compare.CheckOutcome]

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": str(self.reference),
            "tolerances": self.tolerances,
            "result": self.result.to_dict(),
            "outcomes": [outcome.to_dict() for outcome in self.outcomes],
        }


@dataclass
class GateSession:
    """Shared state of one gate run; fixtures hand it to the checks, which never redo its work."""

    config: GateConfig
    names: dict[int, str] = field(default_factory=label_names)
    inspect_name: str = field(default_factory=lambda: f"{run.CONTAINER_PREFIX}inspect-{uuid.uuid4().hex[:8]}")
    checks: list[dict[str, Any]] = field(default_factory=list)
    pins: list[dict[str, Any]] = field(default_factory=list)
    _runs: dict[tuple[str, str], Future[run.RunResult]] = field(default_factory=dict)
    _executor: ThreadPoolExecutor | None = None
    _comparisons: dict[tuple[str, str], Comparison | None] = field(default_factory=dict)
    _image_facts: dict[str, Any] | None = None
    _seg: dict[str, list[compare.CheckOutcome]] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # for checks that share one slow query

    @property
    def image_facts(self) -> dict[str, Any]:
        if self._image_facts is None:
            facts = build.image_inspect(self.config.image)
            if facts is None:
                raise GateError(f"image {self.config.image} not found; build it with `nox -s build`")
            self._image_facts = facts
        return self._image_facts

    def case(self, name: str) -> cases.Case:
        return next(case for case in self.config.cases if case.name == name)

    def case_dir(self, name: str) -> Path:
        return self.config.reports / "cases" / name

    def start_inspection_container(self) -> str:
        """A sleeping container of the image for testinfra's docker:// backend."""
        config = self.config
        command = ["docker", "run", "--detach", "--name", self.inspect_name, "--network", "none"]
        command += ["--platform", config.profile.platform, "--entrypoint", "sleep", config.image, "infinity"]
        started = subprocess.run(command, capture_output=True, text=True, check=False)
        if started.returncode != 0:
            raise GateError(f"cannot start image {self.config.image}: {run.docker_error(started.stderr)}")
        return self.inspect_name

    def stop_inspection_container(self) -> None:
        subprocess.run(["docker", "rm", "--force", self.inspect_name], capture_output=True, check=False)

    def container_name(self, name: str) -> str:
        return f"{self.inspect_name.replace('inspect', 'case')}-{name}"

    def _run(self, name: str, where: str) -> run.RunResult:
        case = self.case(name)
        output = run.writable_output_dir(self.case_dir(name), where)
        if where == "host":
            return run.run_host(case.dicom_dir, self.config.model, output, case.timeout_s)
        return run.run_container(
            self.config.image, case.dicom_dir, self.config.model, output, case.timeout_s, case.memory,
            self.config.profile.platform, self.config.hardened, name=self.container_name(name),
        )  # fmt: skip

    def start_runs(self, keys: list[tuple[str, str]]) -> None:
        """Start the selected checks' runs in the background: one case uses one core (the app runs
        single-threaded for determinism), so the others run cases and image checks meanwhile."""
        self._executor = self._executor or ThreadPoolExecutor(max_workers=self.config.jobs)
        for key in keys:
            if key not in self._runs:
                self._runs[key] = self._executor.submit(self._run, *key)

    def stop_runs(self) -> None:
        """Remove this gate's case containers (which ends their runs) and wait for the workers."""
        names = [self.container_name(name) for name, where in self._runs if where == "container"]
        if names:
            subprocess.run(["docker", "rm", "--force", *names], capture_output=True, check=False)
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def container_run(self, name: str) -> run.RunResult:
        self.start_runs([(name, "container")])
        return self._runs[(name, "container")].result()

    def host_run(self, name: str) -> run.RunResult:
        self.start_runs([(name, "host")])
        return self._runs[(name, "host")].result()

    def comparison(self, name: str, kind: str) -> Comparison | None:
        """The container's mask against a reference ("golden", "ground_truth" or the "host" run's mask)."""
        key = (name, kind)
        if key not in self._comparisons:
            case = self.case(name)
            mask = self.container_run(name).output_dir / "mask.nii.gz"
            reference = (
                self.host_run(name).output_dir / "mask.nii.gz" if kind == "host" else case.reference(kind)
            )
            self._comparisons[key] = None
            if mask.is_file() and reference.is_file():
                tolerances = case.tolerances[kind]
                result, outcomes = compare.gate(
                    mask, reference, tolerances, labels=case.labels, names=self.names
                )
                self._comparisons[key] = Comparison(reference, tolerances, result, outcomes)
        return self._comparisons[key]

    def seg_outcomes(self, name: str) -> list[compare.CheckOutcome]:
        if name not in self._seg:
            from validation import seg

            output = self.container_run(name).output_dir
            self._seg[name] = seg.validate_seg(
                output / "seg.dcm", self.case(name).dicom_dir, self.names, mask_path=output / "mask.nii.gz"
            )
        return self._seg[name]

    def _finished(self, key: tuple[str, str]) -> run.RunResult | None:
        future = self._runs.get(key)
        return future.result() if future is not None and future.done() and not future.exception() else None

    def metrics(self, started: datetime.datetime, seconds: float, exit_code: int) -> dict[str, Any]:
        facts = self._image_facts or {}
        per_case = {}
        for case in self.config.cases:
            container, host = (self._finished((case.name, where)) for where in ("container", "host"))
            mask = container.output_dir / "mask.nii.gz" if container else None
            per_case[case.name] = {
                "dicom_dir": str(case.dicom_dir),
                "output_mask": str(mask) if mask and mask.is_file() else None,
                "run": _run_dict(container),
                "host_run": _run_dict(host),
                "comparisons": {
                    kind: comparison.to_dict()
                    for (name, kind), comparison in self._comparisons.items()
                    if name == case.name and comparison is not None
                },
                "seg": {"outcomes": [o.to_dict() for o in self._seg[case.name]]}
                if case.name in self._seg
                else None,
            }
        return {
            "verdict": "pass" if exit_code == 0 else "fail",
            "started": started.isoformat(timespec="seconds"),
            "seconds": round(seconds, 1),
            "image": {
                "reference": self.config.image,
                "id": facts.get("Id"),
                "profile": self.config.profile.name,
                "platform": f"{facts.get('Os')}/{facts.get('Architecture')}" if facts else None,
                "size_bytes": facts.get("Size"),
                "labels": (facts.get("Config") or {}).get("Labels") or {},
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
    return data


GATE_SESSION = pytest.StashKey[GateSession]()


class GatePlugin:
    """Registered with pytest.main: the session (for the `gate` fixture) and parametrization."""

    def __init__(self, session: GateSession) -> None:
        self.session = session
        self.case_of: dict[str, str | None] = {}

    def pytest_configure(self, config: pytest.Config) -> None:
        config.stash[GATE_SESSION] = self.session

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        config = self.session.config
        if "case" in metafunc.fixturenames:
            metafunc.parametrize("case", [case.name for case in config.cases])
        if "pin" in metafunc.fixturenames:
            metafunc.parametrize("pin", sorted(config.profile.pins))

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self.case_of = {item.nodeid: getattr(item, "callspec", None) and item.callspec.params.get("case")
                        for item in items}  # fmt: skip

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Start every run the selected checks need before the first check asks for one."""
        keys = []
        for item in session.items:
            case = self.case_of.get(item.nodeid)
            if case:
                keys.append((case, "container"))
                if item.name.startswith("test_host_agreement"):
                    keys.append((case, "host"))
        self.session.start_runs(sorted(set(keys), key=lambda key: (key[1] == "host", key[0])))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """One record per check: its call, or the setup phase that failed or skipped it."""
        if report.when != "call" and report.outcome == "passed":
            return
        reason = ""
        if report.outcome != "passed":
            crash = getattr(report.longrepr, "reprcrash", None)
            reason = crash.message if crash is not None else str(report.longrepr)[-500:]
        self.session.checks.append({
            "name": report.nodeid.split("::")[-1],
            "group": self.case_of.get(report.nodeid) or "image",
            "passed": report.outcome == "passed",
            "skipped": report.outcome == "skipped",
            "reason": reason.strip(),
        })  # fmt: skip


def resolve_image(image: str | None, profile: profiles.Profile) -> str:
    if image:
        return image
    record = build.REPORTS / "build.json"
    if not record.is_file():
        raise GateError(f"{record}: no build record; run `nox -s build` first or pass --image REF")
    data = json.loads(record.read_text())
    if data.get("profile") != profile.name:
        raise GateError(
            f"{record}: the last build was of profile {data.get('profile')}, not {profile.name}; "
            f"run `nox -s build -- --profile {profile.name}` or pass --image REF"
        )
    return data["image_id"]


def parse_args(argv: list[str]) -> tuple[GateConfig, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m validation acceptance", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--profile", default=profiles.DEFAULT_PROFILE, help="profile name or TOML path")
    parser.add_argument("--image", help="image to gate (default: the one in reports/build.json)")
    parser.add_argument("--cases", type=Path, default=cases.CASES_DIR, help="folder of case folders")
    parser.add_argument("--model", type=Path, default=cases.DEFAULT_MODEL, help="TorchScript model.ts")
    parser.add_argument("--reports", type=Path, default=build.REPORTS / "acceptance", help="output folder")
    parser.add_argument("-k", dest="keyword", help="only checks matching this pytest -k expression")
    parser.add_argument(
        "--no-host", action="store_true", help="skip the host runs (cross-architecture agreement)"
    )
    parser.add_argument("--not-hardened", action="store_true", help="run without --read-only/--cap-drop/...")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="runs at a time")
    args = parser.parse_args(argv)
    profile = profiles.load(args.profile)
    if not args.model.is_file():
        raise GateError(f"{args.model}: model not found; pass --model PATH to a TorchScript model.ts")
    config = GateConfig(
        profile=profile,
        image=resolve_image(args.image, profile),
        cases=cases.discover(args.cases),
        model=args.model.resolve(),
        reports=args.reports.resolve(),
        hardened=not args.not_hardened,
        jobs=max(1, args.jobs),
    )
    expressions = [f"({args.keyword})"] if args.keyword else []
    if args.no_host:
        expressions.append("not host")
    return config, ["-k", " and ".join(expressions)] if expressions else []


def run_gate(config: GateConfig, pytest_args: list[str]) -> int:
    from validation import report

    build.require_engine()
    if config.reports.exists():
        shutil.rmtree(config.reports)
    config.reports.mkdir(parents=True)
    session = GateSession(config)
    session.image_facts  # noqa: B018 - fail fast, with one line, when the image is missing
    # Before any case: a model the image's torch cannot read fails here in one line, not mid-case.
    model_check.require_usable_model(config.image, config.model, config.profile.platform)
    started, clock = datetime.datetime.now(datetime.UTC), time.monotonic()
    args = [
        str(CHECKS_DIR), "-p", "no:cacheprovider", "-q", "--no-header", "-rN", "--tb=line",
        f"--junitxml={config.reports / 'junit.xml'}", "-o", "junit_family=xunit2",
        f"--rootdir={CHECKS_DIR}", "-c", "/dev/null", *pytest_args,
    ]  # fmt: skip
    try:
        exit_code = int(pytest.main(args, plugins=[GatePlugin(session)]))
    finally:
        session.stop_inspection_container()
        session.stop_runs()
    metrics = session.metrics(started, time.monotonic() - clock, exit_code)
    (config.reports / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    html = report.write_report(metrics, config.reports)
    print(report.console_summary(metrics))
    print(f"report: {html}")
    return 0 if exit_code == 0 else 1


def main(argv: list[str]) -> int:
    config, pytest_args = parse_args(argv)
    return run_gate(config, pytest_args)
