"""`nox -s bench`: what the gate costs, as ratios against baselines measured in the same run (issue 5).

Absolute times on a shared, emulating CI host mean little; a ratio against a baseline taken minutes
apart on the same machine does. Every figure is the median over --runs repeats of a per-run value
(a ratio pairs a measurement with the baseline of the same repeat). Writes reports/bench.json and
prints a table; a figure that misses its target stays in the table, marked MISSED.

Sections: gate (gate wall time vs bare `docker run`, host runs, emulation penalty), rebuild (no-op,
app-code-only vs cold), size (image vs a naive seed-style image), compare (validation/bench_compare.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from validation import build, cases, contract, lock, profiles, run
from validation.errors import GateError

REPORT = build.REPORTS / "bench.json"
NAIVE_DOCKERFILE = profiles.ROOT / "container" / "bench" / "naive.Dockerfile"
BENCH_REPOSITORY = "armgate/bench"  # every image the bench makes is tagged here and removed at the end
CONTAINER_PREFIX = "armgate-bench-"
SECTIONS = ("gate", "rebuild", "size", "compare")
# One case keeps 3 runs within ~25 min under QEMU (~70 s per case run); with fewer cases the gate's
# fixed cost (image checks) weighs more, so the overhead ratio is conservative. --case adds more.
APP_FILE_TO_EDIT = "app/seg_app.py"  # in the temporary tree only
EQUAL_MAX_ABS_DIFF = 1e-6  # "values equal": armgate's metrics vs MONAI's, float noise only
TREE_PATHS = ("app", "container", ".dockerignore")  # what the app image's build context needs


# --- figures: pure logic, unit-tested in tests/test_bench.py ------------------------------------


def median(values: Sequence[float]) -> float:
    """The median, refusing an empty list: a figure with no runs is 'no data', never 0."""
    if not values:
        raise ValueError("median of no runs")
    return float(statistics.median(values))


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Per-run ratios: each measurement over the baseline taken in the same repeat."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} measurements but {len(denominators)} baselines")
    if any(d <= 0 for d in denominators):
        raise ValueError("a baseline of zero or less cannot be divided by")
    return [n / d for n, d in zip(numerators, denominators, strict=True)]


@dataclass(frozen=True)
class Target:
    """A figure's goal: `<=` for costs, `>=` for speed-ups."""

    op: str
    limit: float

    def __post_init__(self) -> None:
        if self.op not in ("<=", ">="):
            raise ValueError(f"target operator {self.op!r}: expected <= or >=")

    def met(self, value: float) -> bool:
        return value <= self.limit if self.op == "<=" else value >= self.limit

    def __str__(self) -> str:
        return f"{'≤' if self.op == '<=' else '≥'} {self.limit:g}"


@dataclass
class Figure:
    """One row of the table: per-run samples, how they are summarised, and the target if any."""

    key: str
    label: str
    samples: list[float]
    unit: str = "x"  # "x" ratio, "s" seconds, "GB", "abs" (an absolute difference)
    target: Target | None = None
    detail: str = ""
    aggregate: str = "median"  # "max" where the worst run is what matters (value equality)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float | None:
        if not self.samples:
            return None
        return max(self.samples) if self.aggregate == "max" else median(self.samples)

    @property
    def status(self) -> str:
        value = self.value
        if value is None:
            return "no data"
        if self.target is None:
            return "info"
        return "met" if self.target.met(value) else "MISSED"

    def formatted(self) -> str:
        value = self.value
        if value is None:
            return "—"
        if self.unit == "x":
            return f"{value:.3g}×"
        if self.unit == "s":
            return f"{value:.1f} s"
        if self.unit == "GB":
            return f"{value:.2f} GB"
        return f"{value:.1e}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "value": self.value,
            "unit": self.unit,
            "aggregate": self.aggregate,
            "samples": self.samples,
            "target": None if self.target is None else {"op": self.target.op, "limit": self.target.limit},
            "status": self.status,
            "detail": self.detail,
            **({"extra": self.extra} if self.extra else {}),
        }


def no_data(key: str, label: str, reason: str, target: Target | None = None) -> Figure:
    """A figure whose measurement failed: it stays in the table, with the reason."""
    return Figure(key, label, [], target=target, detail=f"not measured: {reason}")


def format_table(figures: Sequence[Figure]) -> str:
    """The console table: one row per figure, missed targets visible at a glance."""
    rows = [("figure", "value", "target", "status", "detail")]
    rows += [(f.label, f.formatted(), str(f.target or "—"), f.status, f.detail) for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for index, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4]
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths) + "  " + "-" * 6)
    return "\n".join(line.rstrip() for line in lines)


def summarise(figures: Sequence[Figure]) -> dict[str, list[str]]:
    """Keys of the figures by outcome, for bench.json and the exit code of --strict."""
    outcome: dict[str, list[str]] = {"met": [], "missed": [], "info": [], "no_data": []}
    for figure in figures:
        outcome[{"met": "met", "MISSED": "missed", "info": "info"}.get(figure.status, "no_data")].append(
            figure.key
        )
    return outcome


def bare_run_command(gate_command: Sequence[str]) -> list[str]:
    """The gate's `docker run` with its flags unchanged, run in the foreground and removed on exit."""
    command = list(gate_command)
    if "--detach" not in command:
        raise ValueError("expected the gate's detached docker run command")
    command[command.index("--detach")] = "--rm"
    return command


def append_comment(path: Path, text: str) -> None:
    """An app-code-only change that alters no behaviour: a comment at the end of one file."""
    with path.open("a") as handle:
        handle.write(f"\n# {text}\n")


# --- the machinery: Docker, builds, runs --------------------------------------------------------


@dataclass
class Context:
    """What the sections share: the profile, the image, scratch space and what to clean up."""

    profile: profiles.Profile
    image: str
    runs: int
    scratch: Path
    cases: list[cases.Case]
    model: Path
    host_runs: bool
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    tags: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    app_sizes: list[int] = field(default_factory=list)  # the app image built in each repeat (rebuild)
    logs: Path | None = None  # kept after the run (next to bench.json), unlike the scratch folder

    def __post_init__(self) -> None:
        self.logs = self.logs or self.scratch / "logs"
        if self.logs.exists():
            shutil.rmtree(self.logs)
        self.logs.mkdir(parents=True)

    def tag(self, what: str) -> str:
        reference = f"{BENCH_REPOSITORY}:{what}-{self.token}"
        self.tags.append(reference)
        return reference


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def image_size(reference: str) -> int:
    facts = build.image_inspect(reference)
    if not facts:
        raise GateError(f"image {reference} not found")
    return int(facts["Size"])


def remove_image(reference: str) -> None:
    """Untag one of our tags; the image goes only if nothing else (e.g. the real tags) names it."""
    _docker("image", "rm", reference)


def buildx(args: list[str], log: Path) -> float:
    """`docker buildx build` with its log in a file (the table stays readable); seconds taken."""
    command = ["docker", "buildx", "build", "--progress", "plain", *args]
    started = time.monotonic()
    with log.open("w") as handle:
        handle.write("+ " + " ".join(command) + "\n")
        handle.flush()
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
    seconds = time.monotonic() - started
    if code != 0:
        raise GateError(f"docker buildx build failed: see {log}")
    return seconds


def export_tree(destination: Path) -> Path:
    """The committed app, Dockerfile and .dockerignore in a temporary folder: edits there touch no one."""
    destination.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD", *TREE_PATHS],
        cwd=build.ROOT,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise GateError(f"git archive HEAD failed: {archive.stderr.decode().strip()[-300:]}")
    subprocess.run(["tar", "-x", "-C", str(destination)], input=archive.stdout, check=True)
    return destination


def build_app_image(ctx: Context, tree: Path, tag: str, no_cache: bool, log_name: str) -> float:
    """What `python -m validation build` does (engine check, base, wheelhouse check, buildx), timed.

    In-process and with the bench's own tag and the tree's context, so the real image, its tags
    and reports/build.json are left alone.
    """
    started = time.monotonic()
    build.require_engine()
    base = build.make_debootstrap_base(ctx.profile)
    wheels = lock.ensure_wheelhouse(ctx.profile)
    labels = {"org.armgate.bench": ctx.token}
    iidfile = ctx.scratch / f"iid-{uuid.uuid4().hex[:8]}"
    app = replace(contract.load(), source=tree / "app")  # the default app, from the copied tree
    context = build.stage_context(app, Path(tempfile.mkdtemp(dir=ctx.scratch)))
    args = build.buildx_args(ctx.profile, app, base, wheels, [tag], labels, iidfile, context)
    buildx(["--no-cache", *args] if no_cache else args, ctx.logs / log_name)
    return time.monotonic() - started


def container_seconds(metrics: dict[str, Any]) -> float:
    """Σ of the gate's own container runs, from its metrics.json: the drift-free part of its wall time."""
    runs = [case.get("run") or {} for case in metrics.get("cases", {}).values()]
    if not runs or any("seconds" not in r for r in runs):
        raise GateError("the gate's metrics.json has a case without a container run")
    return float(sum(r["seconds"] for r in runs))


def slowest_checks(junit_xml: Path, count: int = 6) -> list[tuple[str, float]]:
    """Where the gate's time goes: its slowest junit test cases (the case runs land in the first use)."""
    import xml.etree.ElementTree as ElementTree

    cases_ = ElementTree.parse(junit_xml).getroot().iter("testcase")
    timed = [(case.get("name", "?"), float(case.get("time", 0))) for case in cases_]
    return sorted(timed, key=lambda item: -item[1])[:count]


def timed_gate(ctx: Context, cases_dir: Path, index: int) -> tuple[float, int, float]:
    """Wall time of the public gate command, as a user runs it (Python start-up included).

    Also returns the time its own container runs took, read from its metrics.json.
    """
    reports = ctx.scratch / f"gate-reports-{index}"
    command = [
        sys.executable,
        "-m",
        "validation",
        "acceptance",
        "--no-host",
        "--profile",
        ctx.profile.name,
        "--image",
        ctx.image,
        "--cases",
        str(cases_dir),
        "--model",
        str(ctx.model),
        "--reports",
        str(reports),
    ]
    log = ctx.logs / f"gate-{index}.log"
    started = time.monotonic()
    with log.open("w") as handle:
        code = subprocess.run(
            command, cwd=build.ROOT, stdout=handle, stderr=subprocess.STDOUT, check=False
        ).returncode
    seconds = time.monotonic() - started
    if code not in (0, 1):  # 1 = a check failed: the timing still counts; 2 = it could not run
        raise GateError(f"the gate could not run (exit {code}): see {log}")
    metrics_path = reports / "metrics.json"
    shutil.copy(metrics_path, ctx.logs / f"gate-{index}-metrics.json")
    shutil.copy(reports / "junit.xml", ctx.logs / f"gate-{index}-junit.xml")
    return seconds, code, container_seconds(json.loads(metrics_path.read_text()))


def timed_bare_run(ctx: Context, case: cases.Case, index: int) -> float:
    """One plain `docker run --rm` of exactly the gate's command for this case, timed."""
    name = f"{CONTAINER_PREFIX}{ctx.token}-{index}-{case.name}"
    ctx.containers.append(name)
    app = contract.load()
    model_dir, holder = run.model_mount(ctx.model, app.mounts)
    output = run.writable_output_dir(ctx.scratch / "bare", f"{case.name}-{index}")
    command = bare_run_command(
        run.docker_run_command(
            ctx.image, name, app.mounts, case.dicom_dir, model_dir, output, case.memory,
            ctx.profile.platform, True,
        )
    )
    try:
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, timeout=case.timeout_s, check=False)
        seconds = time.monotonic() - started
    except subprocess.TimeoutExpired:
        raise GateError(
            f"bare docker run of case {case.name} timed out after {case.timeout_s:.0f} s"
        ) from None
    finally:
        _docker("rm", "--force", name)
        if holder is not None:
            holder.cleanup()
    (ctx.logs / f"bare-{case.name}-{index}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise GateError(f"bare docker run of case {case.name} exited {done.returncode}: see {ctx.logs}")
    return seconds


def timed_host_run(ctx: Context, case: cases.Case, index: int) -> float:
    output = run.writable_output_dir(ctx.scratch / "host", f"{case.name}-{index}")
    result = run.run_host(contract.load(), case.dicom_dir, ctx.model, output, case.timeout_s)
    (ctx.logs / f"host-{case.name}-{index}.log").write_text(result.logs)
    if not result.ok:
        raise GateError(f"host run of case {case.name}: {result.failure()}")
    return result.seconds


# --- sections ------------------------------------------------------------------------------------


def section_gate(ctx: Context) -> list[Figure]:
    """1 and 5: the gate against bare docker runs of the same cases; host runs; the QEMU penalty."""
    cases_dir = ctx.scratch / "cases"
    names = [case.name for case in ctx.cases]
    gate_s: list[float] = []
    gate_codes: list[int] = []
    inner_s: list[float] = []
    bare_s: list[float] = []
    bare_by_case: dict[str, list[float]] = {name: [] for name in names}
    host_s: list[float] = []
    host_by_case: dict[str, list[float]] = {name: [] for name in names}
    for index in range(ctx.runs):
        # Alternate which goes first so drift in the host's load does not favour either side.
        steps = ("bare", "gate") if index % 2 == 0 else ("gate", "bare")
        for step in steps:
            if step == "gate":
                seconds, code, inner = timed_gate(ctx, cases_dir, index)
                gate_s.append(seconds)
                gate_codes.append(code)
                inner_s.append(inner)
                print(
                    f"  gate run {index + 1}: {seconds:.1f} s, its case runs {inner:.1f} s (exit {code})",
                    flush=True,
                )
            else:
                total = 0.0
                for case in ctx.cases:
                    seconds = timed_bare_run(ctx, case, index)
                    bare_by_case[case.name].append(seconds)
                    total += seconds
                bare_s.append(total)
                print(f"  bare docker runs {index + 1}: {total:.1f} s", flush=True)
        if ctx.host_runs:
            total = 0.0
            for case in ctx.cases:
                seconds = timed_host_run(ctx, case, index)
                host_by_case[case.name].append(seconds)
                total += seconds
            host_s.append(total)
            print(f"  host runs {index + 1}: {total:.1f} s", flush=True)
    cases_text = f"{len(names)} case(s): {', '.join(names)}"
    verdict = "gate passed" if all(code == 0 for code in gate_codes) else f"gate exit codes {gate_codes}"
    figures = [
        Figure(
            "gate_overhead",
            "1  gate ÷ Σ bare docker run",
            ratios(gate_s, bare_s),
            target=Target("<=", 1.15),
            detail=f"gate {median(gate_s):.1f} s / bare {median(bare_s):.1f} s; --no-host; {cases_text}; "
            f"{verdict}",
            extra={
                "gate_s": gate_s,
                "bare_s": bare_s,
                "bare_by_case_s": bare_by_case,
                "gate_exit": gate_codes,
                "slowest_checks_last_run_s": slowest_checks(ctx.logs / f"gate-{ctx.runs - 1}-junit.xml"),
            },
        ),
        Figure(
            "gate_s",
            "   gate wall time",
            gate_s,
            unit="s",
            detail="python -m validation acceptance --no-host",
        ),
        Figure("bare_s", "   Σ bare docker run", bare_s, unit="s", detail="same command, --rm, foreground"),
        Figure(
            "gate_over_own_runs",
            "   gate ÷ Σ its own container runs",
            ratios(gate_s, inner_s),
            detail="cross-check immune to load drift between gate and bare runs (same process, same minutes)",
            extra={"container_runs_s": inner_s},
        ),
    ]
    if ctx.host_runs:
        figures.append(
            Figure(
                "host_s",
                "   Σ host runs (native, separate)",
                host_s,
                unit="s",
                detail=f"run.run_host per case on {platform.machine()}",
                extra={"by_case_s": host_by_case},
            )
        )
        by_case = {name: median(ratios(bare_by_case[name], host_by_case[name])) for name in names}
        figures.append(
            Figure(
                "emulation_penalty",
                "5  container (QEMU) ÷ host run",
                ratios(bare_s, host_s),
                detail="informational; per case: " + ", ".join(f"{n} {v:.2f}×" for n, v in by_case.items()),
                extra={"by_case": by_case},
            )
        )
    return figures


def section_rebuild(ctx: Context) -> list[Figure]:
    """2: no-op and app-code-only rebuilds, and a --no-cache (cold) build, from a temporary tree."""
    tree = export_tree(ctx.scratch / "tree")
    app_tag = ctx.tag("app")
    cold_s: list[float] = []
    noop_s: list[float] = []
    change_s: list[float] = []
    for index in range(ctx.runs):
        cold_tag = f"{BENCH_REPOSITORY}:cold-{ctx.token}-{index}"
        ctx.tags.append(cold_tag)
        cold_s.append(build_app_image(ctx, tree, cold_tag, True, f"cold-{index}.log"))
        ctx.app_sizes.append(image_size(cold_tag))
        remove_image(cold_tag)  # ~1 GB each; only its size is needed
        noop_s.append(build_app_image(ctx, tree, app_tag, False, f"noop-{index}.log"))
        append_comment(tree / APP_FILE_TO_EDIT, f"armgate bench {ctx.token}: app-code-only change {index}")
        change_s.append(build_app_image(ctx, tree, app_tag, False, f"change-{index}.log"))
        print(
            f"  builds {index + 1}: cold {cold_s[-1]:.1f} s, no-op {noop_s[-1]:.1f} s, "
            f"app change {change_s[-1]:.1f} s",
            flush=True,
        )
    cached = "base image and wheelhouse cached; cold = --no-cache of everything after the base"
    return [
        Figure(
            "noop_rebuild_s",
            "2  no-op rebuild",
            noop_s,
            unit="s",
            target=Target("<=", 10.0),
            detail="engine check + base + wheelhouse hash check + buildx, all cached",
        ),
        Figure(
            "app_rebuild_over_cold",
            "2  app-code rebuild ÷ cold build",
            ratios(change_s, cold_s),
            target=Target("<=", 0.10),
            detail=f"app change {median(change_s):.1f} s / cold {median(cold_s):.1f} s; {cached}",
            extra={"app_change_s": change_s, "cold_s": cold_s},
        ),
        Figure("cold_build_s", "   cold build", cold_s, unit="s", detail=cached),
    ]


def section_size(ctx: Context) -> list[Figure]:
    """3: the image against a naive single-stage image of the same packages on the same base."""
    tree = ctx.scratch / "tree" if (ctx.scratch / "tree").is_dir() else export_tree(ctx.scratch / "tree")
    base = build.make_debootstrap_base(ctx.profile)
    wheels = lock.ensure_wheelhouse(ctx.profile)
    naive_tag = ctx.tag("naive")
    naive_sizes: list[int] = []
    naive_s: list[float] = []
    app_sizes: list[int] = []
    for index in range(ctx.runs):
        args = [
            "--platform",
            ctx.profile.platform,
            "--load",
            "--network",
            "none",
            "--file",
            str(NAIVE_DOCKERFILE),
            "--build-context",
            f"wheels={wheels}",
            "--build-context",
            f"locks={ctx.profile.lock_path.parent}",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "--build-arg",
            f"LOCK_FILE={ctx.profile.lock_path.name}",
            "--tag",
            naive_tag,
            str(tree),
        ]
        naive_s.append(buildx(args, ctx.logs / f"naive-{index}.log"))
        naive_sizes.append(image_size(naive_tag))
        # The app image of the same repeat: the cold build's when the rebuild section ran.
        app_sizes.append(ctx.app_sizes[index] if index < len(ctx.app_sizes) else image_size(ctx.image))
        print(f"  naive image {index + 1}: {naive_sizes[-1] / 1e9:.2f} GB, built in {naive_s[-1]:.1f} s")
    return [
        Figure(
            "size_over_naive",
            "3  image size ÷ naive image",
            ratios(app_sizes, naive_sizes),
            target=Target("<=", 0.90),
            detail=f"{median(app_sizes) / 1e9:.2f} GB / {median(naive_sizes) / 1e9:.2f} GB "
            f"(naive: {NAIVE_DOCKERFILE.relative_to(build.ROOT)}; built in {naive_s[0]:.0f} s, cache on)",
            extra={"app_bytes": app_sizes, "naive_bytes": naive_sizes, "naive_build_s": naive_s},
        ),
    ]


def section_compare(ctx: Context) -> list[Figure]:
    """4: validation/bench_compare.py's measurement, repeated on the same seeded pair."""
    from validation import bench_compare

    monai_s: list[float] = []
    armgate_s: list[float] = []
    load_s: list[float] = []
    diffs: list[float] = []
    by_metric: list[dict[str, float]] = []
    for index in range(ctx.runs):
        result = bench_compare.run_benchmark(seed=0, with_monai=True)
        monai_s.append(result["monai_s"])
        armgate_s.append(result["armgate_s"])
        load_s.append(result["load_s"])
        metric_diffs = {k: v for k, v in result.items() if k.startswith("max_abs_diff_")}
        by_metric.append(metric_diffs)
        diffs.append(max(metric_diffs.values()))
        print(
            f"  compare {index + 1}: armgate {armgate_s[-1]:.2f} s, MONAI {monai_s[-1]:.1f} s, "
            f"load {load_s[-1]:.2f} s",
            flush=True,
        )
    shape = "×".join(map(str, bench_compare.SHAPE))
    return [
        Figure(
            "speedup_vs_monai",
            "4  MONAI ÷ armgate (speed-up)",
            ratios(monai_s, armgate_s),
            target=Target(">=", 20.0),
            detail=f"MONAI {median(monai_s):.1f} s / armgate {median(armgate_s):.2f} s; {shape}, "
            f"{len(bench_compare.ORGANS)} labels",
            extra={"monai_s": monai_s, "armgate_s": armgate_s},
        ),
        Figure(
            "max_abs_diff_vs_monai",
            "4  max |armgate − MONAI|",
            diffs,
            unit="abs",
            target=Target("<=", EQUAL_MAX_ABS_DIFF),
            aggregate="max",
            detail="Dice, HD95, NSD over labels and runs (worst run)",
            extra={"by_run": by_metric},
        ),
        Figure(
            "armgate_over_load",
            "4  armgate ÷ NIfTI load",
            ratios(armgate_s, load_s),
            target=Target("<=", 3.0),
            detail=f"armgate {median(armgate_s):.2f} s (from the files) / load {median(load_s):.2f} s",
            extra={"load_s": load_s},
        ),
    ]


SECTION_FUNCTIONS: dict[str, Callable[[Context], list[Figure]]] = {
    "gate": section_gate,
    "rebuild": section_rebuild,
    "size": section_size,
    "compare": section_compare,
}
# Shown when a section fails, so the table still has every row the issue asks for.
SECTION_ROWS: dict[str, list[tuple[str, str, Target | None]]] = {
    "gate": [("gate_overhead", "1  gate ÷ Σ bare docker run", Target("<=", 1.15))],
    "rebuild": [
        ("noop_rebuild_s", "2  no-op rebuild", Target("<=", 10.0)),
        ("app_rebuild_over_cold", "2  app-code rebuild ÷ cold build", Target("<=", 0.10)),
    ],
    "size": [("size_over_naive", "3  image size ÷ naive image", Target("<=", 0.90))],
    "compare": [
        ("speedup_vs_monai", "4  MONAI ÷ armgate (speed-up)", Target(">=", 20.0)),
        ("armgate_over_load", "4  armgate ÷ NIfTI load", Target("<=", 3.0)),
    ],
}


# --- the command ---------------------------------------------------------------------------------


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
    engine = _docker("version", "--format", "{{.Server.Version}}").stdout.strip()
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
    """Copy the chosen cases (default: all) aside, so fixtures regenerated mid-bench change no measurement."""
    found = {case.name: case for case in cases.discover(directory)}
    names = names or sorted(found)
    unknown = [name for name in names if name not in found]
    if unknown:
        raise GateError(f"{directory}: no case named {', '.join(unknown)}; have {', '.join(sorted(found))}")
    destination.mkdir(parents=True)
    for name in names:
        shutil.copytree(found[name].path, destination / name)
    return [case for case in cases.discover(destination) if case.name in names]


def cleanup(ctx: Context) -> None:
    """Remove the bench's tags (never the real ones) and any container of ours still present."""
    for name in ctx.containers:
        _docker("rm", "--force", name)
    for tag in dict.fromkeys(ctx.tags):
        remove_image(tag)


def write_report(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m validation bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repeats per figure (default 3; median reported)")
    parser.add_argument("--quick", action="store_true", help="one run of each, for development")
    parser.add_argument("--profile", default=profiles.DEFAULT_PROFILE, help="a wheelhouse profile")
    parser.add_argument("--image", help="image to gate (default: the one in reports/build.json)")
    parser.add_argument("--cases", type=Path, default=contract.load().default_cases, help="case folders")
    parser.add_argument(
        "--case",
        action="append",
        dest="case_names",
        help="case to run (repeatable; default: every case in --cases)",
    )
    parser.add_argument("--model", type=Path, default=contract.load().default_model, help="TorchScript model")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument("--no-host-runs", action="store_true", help="skip host runs (and emulation penalty)")
    parser.add_argument("--report", type=Path, default=REPORT, help="where to write bench.json")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if args.quick:
        args.runs = 1
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def bench(args: argparse.Namespace) -> int:
    from validation import gate

    profile = profiles.load(args.profile)
    if profile.install != "wheelhouse" or profile.base.kind != "debootstrap":
        raise GateError(
            f"profile {profile.name}: the bench needs a hermetic (wheelhouse, debootstrap) profile"
        )
    build.require_engine()
    image = gate.resolve_image(args.image, profile, contract.load())
    started_at = datetime.datetime.now(datetime.UTC)
    clock = time.monotonic()
    report: dict[str, Any] = {
        "command": " ".join(["python -m validation bench", *args.argv]),
        "started": started_at.isoformat(timespec="seconds"),
        "runs": args.runs,
        "image": {"reference": image, "size_bytes": image_size(image)},
        "machine": machine(),
        "sections": args.sections,
        "logs": str(args.report.with_name(args.report.stem + "-logs")),
        "errors": {},
        "figures": [],
    }
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="armgate-bench-") as scratch:
        scratch_dir = Path(scratch)
        ctx = Context(
            profile=profile,
            image=image,
            runs=args.runs,
            scratch=scratch_dir,
            cases=select_cases(args.cases, args.case_names, scratch_dir / "cases"),
            model=args.model.resolve(),
            host_runs=not args.no_host_runs,
            logs=args.report.with_name(args.report.stem + "-logs"),
        )
        try:
            for section in SECTIONS:
                if section not in args.sections:
                    continue
                print(f"[{section}] {args.runs} run(s)", flush=True)
                section_started = time.monotonic()
                try:
                    figures += SECTION_FUNCTIONS[section](ctx)
                except GateError as error:
                    report["errors"][section] = str(error)
                    figures += [no_data(key, label, str(error), t) for key, label, t in SECTION_ROWS[section]]
                    print(f"  {section} failed: {error}", flush=True)
                report.setdefault("section_seconds", {})[section] = round(
                    time.monotonic() - section_started, 1
                )
                report["figures"] = [figure.to_dict() for figure in figures]
                write_report(args.report, report)  # after every section: a late failure keeps the rest
        finally:
            cleanup(ctx)
    report["seconds"] = round(time.monotonic() - clock, 1)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["summary"] = summarise(figures)
    report["leftover_containers"] = [c for c in ctx.containers if _docker("inspect", c).returncode == 0]
    write_report(args.report, report)
    print()
    print(format_table(figures))
    print(
        f"\n{args.runs} run(s) per figure, median (worst for value equality); "
        f"{report['machine']['nproc']} CPUs {report['machine']['uname_m']}; {report['seconds'] / 60:.1f} min"
    )
    print(f"report: {args.report}")
    missed = report["summary"]["missed"] + report["summary"]["no_data"]
    if missed:
        print(f"targets missed or not measured: {', '.join(missed)}")
    return 1 if args.strict and missed else 0


def main(argv: list[str]) -> int:
    """`python -m validation bench`: GateError and Ctrl-C are handled there, as for every subcommand."""
    return bench(parse_args(argv))
