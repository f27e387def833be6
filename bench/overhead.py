"""Gate overhead at equal concurrency, and where the gate's time goes.

The baseline runs the gate's own `docker run` command (same image, cases, flags) for every case,
`--jobs` at a time exactly as the gate schedules them, with nothing else: what a user pays to run
the cases without a gate. A gate run that does not pass all it was asked to run invalidates its
figure (`clean_exit`: the gate runs --no-host, so PASS there is PARTIAL with only the host checks left
out, nothing failed and nothing unevaluated).
"""

from __future__ import annotations

import itertools
import json
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import CONTAINER_PREFIX, Context, docker, run_to_log
from bench.figures import Figure, Headline, Target, failed_runs, median, ratios
from validation import build, cases, engine, model_check, run
from validation.errors import GateError


def headline(jobs: int) -> Headline:
    """The gate's overhead row for one --jobs value."""
    return Headline(
        f"gate_overhead_jobs{jobs}", f"1  gate ÷ bare docker runs, --jobs {jobs}", Target("<=", 1.10)
    )


IMAGE_CHECKS = "test_image"  # -k expression: the image checks alone (no case runs)


def bare_run_command(gate_command: Sequence[str]) -> list[str]:
    """The gate's `docker run` with its flags unchanged, run in the foreground and removed on exit."""
    command = list(gate_command)
    if "--detach" not in command:
        raise ValueError("expected the gate's detached docker run command")
    command[command.index("--detach")] = "--rm"
    return command


def gate_command(ctx: Context, jobs: int, reports: Path, keyword: str | None = None) -> list[str]:
    """The public gate command as a user runs it, on the bench's copy of the cases."""
    command = [
        sys.executable,
        "-m",
        "validation",
        "acceptance",
        "--no-host",
        "--jobs",
        str(jobs),
        "--profile",
        ctx.profile.name,
        "--app",
        str(ctx.app.path),
        "--image",
        ctx.image,
        "--cases",
        str(ctx.scratch / "cases"),
        "--model",
        str(ctx.model),
        "--reports",
        str(reports),
    ]
    return [*command, "-k", keyword] if keyword else command


def check_durations(junit_xml: Path) -> dict[str, float]:
    """Seconds per check (setup, call and teardown) from the gate's junit.xml, slowest first."""
    timed = [
        (case.get("name", "?"), float(case.get("time", 0)))
        for case in ElementTree.parse(junit_xml).getroot().iter("testcase")
    ]
    return dict(sorted(timed, key=lambda item: -item[1]))


def case_run_seconds(metrics: dict[str, Any]) -> dict[str, float]:
    """Each case's container run as the gate timed it, from its metrics.json."""
    found = {name: (case.get("run") or {}).get("seconds") for name, case in metrics.get("cases", {}).items()}
    if not found or any(seconds is None for seconds in found.values()):
        raise GateError("the gate's metrics.json has a case without a container run")
    return {name: float(seconds) for name, seconds in found.items()}


def _asked_for(option: str, command: Sequence[str]) -> bool:
    """Whether a selection option metrics.json records ("--no-host", "-k EXPR") is in the gate's command."""
    if option == "--no-host":
        return option in command
    keyword = option.removeprefix("-k ")
    return option != keyword and any(a == "-k" and b == keyword for a, b in itertools.pairwise(command))


def clean_exit(code: int, metrics: dict[str, Any], command: Sequence[str]) -> int:
    """0 when the gate passed everything it was asked to run, else its exit code: the bench's rule is
    that any other outcome makes a figure INVALID. PASS is 0; PARTIAL (3) reads as 0 only when the
    bench's own narrowing made it partial (each selection option metrics.json records, `--no-host` or
    `-k`, is in `command`) and no check failed or went unevaluated. A PARTIAL for any other reason (a
    check not evaluated, a shard) stays 3."""
    if code != 3:
        return code
    counts = metrics.get("counts") or {}
    selection = metrics.get("selection") or {}
    options = list(selection.get("options") or [])
    narrowed_as_asked = bool(options) and all(_asked_for(option, command) for option in options)
    clean = counts.get("failed") == 0 and counts.get("not_evaluated") == 0 and not selection.get("shard")
    return 0 if narrowed_as_asked and clean else code


def timed_gate(ctx: Context, jobs: int, index: int, keyword: str | None = None) -> dict[str, Any]:
    """Wall time and exit code of one gate run, with its per-check and per-case durations."""
    name = f"gate-jobs{jobs}-{index}" if keyword is None else f"gate-{keyword}-{index}"
    reports = ctx.scratch / name
    log = ctx.logs / f"{name}.log"
    log.write_text("")
    started = time.monotonic()
    command = gate_command(ctx, jobs, reports, keyword)
    code = run_to_log(command, log, build.ROOT)
    seconds = time.monotonic() - started
    junit, metrics = reports / "junit.xml", reports / "metrics.json"
    if not junit.is_file() or not metrics.is_file():
        raise GateError(f"the gate could not run (exit {code}): see {log}")
    (ctx.logs / f"{name}-junit.xml").write_bytes(junit.read_bytes())
    (ctx.logs / f"{name}-metrics.json").write_bytes(metrics.read_bytes())
    data = json.loads(metrics.read_text())
    return {
        "seconds": seconds,
        "exit": clean_exit(code, data, command),
        "checks_s": check_durations(junit),
        "case_runs_s": case_run_seconds(data) if keyword is None else {},
    }


def timed_bare_run(ctx: Context, case: cases.Case, label: str) -> float:
    """One plain `docker run --rm` of exactly the gate's command for this case, timed."""
    name = f"{CONTAINER_PREFIX}{ctx.token}-{label}-{case.name}"
    ctx.containers.append(name)
    output = run.writable_output_dir(ctx.scratch / "bare", f"{label}-{case.name}")
    command = bare_run_command(
        run.docker_run_command(
            ctx.image, name, ctx.app.mounts, case.dicom_dir, ctx.model, output, case.memory,
            ctx.profile.platform, True,
        )
    )  # fmt: skip
    try:
        started = time.monotonic()
        done = engine.execute(command, timeout=case.timeout_s)
        seconds = time.monotonic() - started
    except subprocess.TimeoutExpired:
        raise GateError(
            f"bare docker run of case {case.name} timed out after {case.timeout_s:.0f} s"
        ) from None
    finally:
        docker("rm", "--force", name)
    (ctx.logs / f"bare-{label}-{case.name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise GateError(f"bare docker run of case {case.name} exited {done.returncode}: see {ctx.logs}")
    return seconds


def timed_bare_batch(ctx: Context, jobs: int, index: int) -> tuple[float, dict[str, float]]:
    """Every case, `jobs` at a time in the gate's order (by name): wall time and each case's time."""
    ordered = sorted(ctx.cases, key=lambda case: case.name)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        seconds = list(pool.map(lambda case: timed_bare_run(ctx, case, f"jobs{jobs}-{index}"), ordered))
    return time.monotonic() - started, {case.name: s for case, s in zip(ordered, seconds, strict=True)}


def timed_host_runs(ctx: Context, index: int) -> dict[str, float]:
    """The same cases run natively, one after another (informational: the QEMU penalty)."""
    found = {}
    for case in ctx.cases:
        output = run.writable_output_dir(ctx.scratch / "host", f"{case.name}-{index}")
        result = run.run_host(ctx.app, case.dicom_dir, ctx.model, output, case.timeout_s)
        (ctx.logs / f"host-{case.name}-{index}.log").write_text(result.logs)
        if not result.ok:
            raise GateError(f"host run of case {case.name}: {result.failure()}")
        found[case.name] = result.seconds
    return found


def below_floor(per_run: list[float], floor: float = 1.0) -> str:
    """Why per-run gate ÷ bare ratios cannot stand: '' unless one is below 1. The gate performs the same
    docker runs as its baseline plus its checks, so a gate faster than its baseline measures a change
    in the machine's load between the two, not the gate."""
    low = [(index + 1, value) for index, value in enumerate(per_run) if value < floor]
    if not low:
        return ""
    listed = ", ".join(f"run {index}: {value:.3f}" for index, value in low)
    return (
        f"below the physical floor of {floor:g} ({listed}): the load changed between the gate and its "
        "baseline; measure again on a quiet machine"
    )


def overhead_figures(
    jobs: int, gate: list[dict[str, Any]], bare_s: list[float], cases_text: str
) -> list[Figure]:
    """Gate ÷ bare for one --jobs value; invalid when any gate run did not exit 0, or when a run's
    ratio is below its physical floor (the gate runs the same docker runs and more)."""
    gate_s = [g["seconds"] for g in gate]
    codes = [g["exit"] for g in gate]
    per_run = ratios(gate_s, bare_s)
    overhead = headline(jobs).figure(
        per_run,
        invalid=failed_runs(codes) or below_floor(per_run),
        detail=f"gate {median(gate_s):.1f} s / bare {median(bare_s):.1f} s, {jobs} at a time; {cases_text}",
        extra={"gate_s": gate_s, "bare_s": bare_s, "gate_exit": codes},
    )
    return [
        overhead,
        Figure(
            f"gate_s_jobs{jobs}",
            f"   gate wall time, --jobs {jobs}",
            gate_s,
            unit="s",
            detail="python -m validation acceptance --no-host",
        ),
        Figure(
            f"bare_s_jobs{jobs}",
            f"   bare docker runs, --jobs {jobs}",
            bare_s,
            unit="s",
            detail=f"the gate's docker run per case, --rm, {jobs} at a time",
        ),
    ]


def run_probes(ctx: Context) -> dict[str, Any]:
    """Where the gate's time goes beyond the case runs: starts, imports, the image checks alone."""
    probes: dict[str, Any] = {}
    started = time.monotonic()
    docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--platform",
        ctx.profile.platform,
        "--entrypoint",
        "true",
        ctx.image,
    )
    probes["container_start_true_s"] = round(time.monotonic() - started, 2)
    started = time.monotonic()
    docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--platform",
        ctx.profile.platform,
        "--entrypoint",
        "python3",
        ctx.image,
        "-c",
        "pass",
    )
    probes["container_python_start_s"] = round(time.monotonic() - started, 2)
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import validation.gate, validation.report"], check=False)
    probes["gate_import_s"] = round(time.monotonic() - started, 2)
    image_only = timed_gate(ctx, 1, 0, IMAGE_CHECKS)
    probes["image_checks_only"] = {
        "seconds": round(image_only["seconds"], 1),
        "exit": image_only["exit"],
        "checks_s": image_only["checks_s"],
    }
    return probes


def section_gate(ctx: Context) -> list[Figure]:
    """Gate vs bare docker runs at each --jobs value; host runs; the gate-time breakdown."""
    names = sorted(case.name for case in ctx.cases)
    cases_text = f"{len(names)} case(s): {', '.join(names)}"
    gate: dict[int, list[dict[str, Any]]] = {jobs: [] for jobs in ctx.jobs}
    bare: dict[int, list[float]] = {jobs: [] for jobs in ctx.jobs}
    bare_by_case: dict[int, list[dict[str, float]]] = {jobs: [] for jobs in ctx.jobs}
    host: list[dict[str, float]] = []
    # The gate checks a model once per image and model and remembers the pass: remembered before the
    # first timed gate, every timed gate does the same work. Its own cost is the row after the gates'.
    model = model_check.check_and_remember(ctx.image, ctx.model, ctx.app, ctx.profile.platform)
    if not model.ok:
        raise GateError(model.line)
    print(f"  model check: {model.seconds:.1f} s (once per image and model)", flush=True)
    for index in range(ctx.runs):
        for jobs in ctx.jobs:
            # Alternate which goes first so drift in the host's load favours neither side.
            for step in ("bare", "gate") if index % 2 == 0 else ("gate", "bare"):
                if step == "gate":
                    gate[jobs].append(timed_gate(ctx, jobs, index))
                    last = gate[jobs][-1]
                    print(
                        f"  gate --jobs {jobs} run {index + 1}: {last['seconds']:.1f} s "
                        f"(exit {last['exit']})",
                        flush=True,
                    )
                else:
                    seconds, by_case = timed_bare_batch(ctx, jobs, index)
                    bare[jobs].append(seconds)
                    bare_by_case[jobs].append(by_case)
                    print(f"  bare runs --jobs {jobs} run {index + 1}: {seconds:.1f} s", flush=True)
        if ctx.host_runs:
            host.append(timed_host_runs(ctx, index))
            print(f"  host runs {index + 1}: {sum(host[-1].values()):.1f} s", flush=True)
    figures: list[Figure] = []
    for jobs in ctx.jobs:
        figures += overhead_figures(jobs, gate[jobs], bare[jobs], cases_text)
        figures[-3].extra["bare_by_case_s"] = bare_by_case[jobs]
    breakdown = {
        f"jobs{jobs}": [{"checks_s": g["checks_s"], "case_runs_s": g["case_runs_s"]} for g in gate[jobs]]
        for jobs in ctx.jobs
    }
    for figure in figures:
        if figure.key.startswith("gate_overhead_jobs"):
            figure.extra["breakdown"] = breakdown[figure.key.removeprefix("gate_overhead_")]
    figures.append(
        Figure(
            "model_check_s",
            "   model check (once per image and model)",
            [model.seconds],
            unit="s",
            detail="the gate's model load and forward in the image, before its first gate; "
            "remembered for the gate runs above",
        )
    )
    if ctx.probes:
        print("  probes: container start, gate import, image checks alone", flush=True)
        probes = run_probes(ctx)
        figures.append(
            Figure(
                "image_checks_s",
                "   image checks alone (no case runs)",
                [probes["image_checks_only"]["seconds"]],
                unit="s",
                detail=f"acceptance -k {IMAGE_CHECKS} --jobs 1; per-check times in bench.json",
                extra={"probes": probes},
            )
        )
    if host:
        sequential = bare_by_case[min(ctx.jobs)]
        host_s = [sum(h.values()) for h in host]
        figures.append(
            Figure(
                "host_s",
                "   host runs (native, one at a time)",
                host_s,
                unit="s",
                detail=f"run.run_host per case on {platform.machine()}",
                extra={"by_case_s": host},
            )
        )
        figures.append(
            Figure(
                "emulation_penalty",
                "5  container (QEMU) ÷ host run",
                ratios([sum(b.values()) for b in sequential], host_s),
                detail=f"bare runs at --jobs {min(ctx.jobs)} ÷ host runs; informational",
            )
        )
    return figures
