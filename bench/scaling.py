"""The gate's cost as a validation set grows: a case's marginal time and the gate's own peak memory.

Both gates run copies of one case (the same work per case) with the same flags and --jobs. The time
figure is the marginal cost of a case, (T_many − T_few) / (many − few), over the few-case gate's time
per case, T_few / few: whole wall time per case would hide a per-case cost that grows, since the
gate's fixed cost (start, image checks, report) is spread over more cases. A figure above 1 is the
gate's own cost growing with the case count: a site gating hundreds of its studies must not pay more
per case, nor hold every case's masks in the gate process. The peak memory is the gate process's own
(its VmHWM), not that of the app runs it starts.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Context, run_to_log
from bench.figures import Figure, Headline, Target, failed_runs, median, ratios
from bench.overhead import clean_exit
from validation import build, cases
from validation.errors import GateError

FEW, MANY = 3, 30
TIME_GROWTH = Headline(
    "gate_marginal_case_time_growth",
    f"6  gate time per added case ÷ per case of {FEW}: (T{MANY} − T{FEW}) / {MANY - FEW} ÷ T{FEW} / {FEW}",
    Target("<=", 1.2),
)
MEMORY_GROWTH = Headline(
    "gate_peak_memory_growth", f"6  gate process peak memory, {MANY} ÷ {FEW} cases", Target("<=", 1.2)
)
HEADLINES = (TIME_GROWTH, MEMORY_GROWTH)
# Runs the public gate (`python -m validation ...`) in this process and writes its own peak resident
# size (KiB) to the file named first: VmHWM, the high-water mark of this process's memory since it
# started; children (the app runs) are not counted. Not ru_maxrss: Linux carries the parent's peak
# over to a child at exec, so a gate started from a large bench process would report the bench's size.
GATE_WITH_PEAK = """\
import runpy, sys
peak_file = sys.argv.pop(1)
try:
    runpy.run_module("validation", run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status, open(peak_file, "w") as handle:
        handle.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


def copies(case: cases.Case, count: int, destination: Path) -> Path:
    """`count` copies of one case, each in a folder of its own name (and its case.toml's `name` that
    one): a validation set of equal cases."""
    destination.mkdir(parents=True)
    for index in range(count):
        copy = Path(shutil.copytree(case.path, destination / f"{case.name}-{index:03d}"))
        toml = copy / "case.toml"
        toml.write_text(re.sub(r'(?m)^name = ".*"$', f'name = "{copy.name}"', toml.read_text(), count=1))
    return destination


def gate_command(ctx: Context, cases_dir: Path, reports: Path, peak_file: Path) -> list[str]:
    """The user's gate command (the gate's default --jobs), run under the peak-memory wrapper."""
    command = [sys.executable, "-c", GATE_WITH_PEAK, str(peak_file), "acceptance"]
    command += ["--jobs", str(max(ctx.jobs)), "--profile", ctx.profile.name, "--app", str(ctx.app.path)]
    command += ["--image", ctx.image, "--cases", str(cases_dir), "--model", str(ctx.model)]
    command += ["--reports", str(reports)]
    return command if ctx.host_runs else [*command, "--no-host"]


def timed_gate(ctx: Context, cases_dir: Path, name: str) -> dict[str, Any]:
    """Wall time, exit code and the gate process's peak RSS (bytes) of one gate over `cases_dir`."""
    reports, peak_file, log = ctx.scratch / name, ctx.scratch / f"{name}.peak", ctx.logs / f"{name}.log"
    log.write_text("")
    started = time.monotonic()
    command = gate_command(ctx, cases_dir, reports, peak_file)
    code = run_to_log(command, log, build.ROOT)
    seconds = time.monotonic() - started
    metrics = reports / "metrics.json"
    if not metrics.is_file() or not peak_file.is_file():
        raise GateError(f"the gate could not run (exit {code}): see {log}")
    return {
        "seconds": seconds,
        "exit": clean_exit(code, json.loads(metrics.read_text()), command),
        "peak_rss_bytes": int(peak_file.read_text()) * 1024,
    }


def growth_figures(few: list[dict[str, Any]], many: list[dict[str, Any]], case_name: str) -> list[Figure]:
    """Per-case time and peak memory of the many-case gate over the few-case one, run by run."""
    invalid = failed_runs([run["exit"] for pair in zip(few, many, strict=True) for run in pair])
    few_per_case = [run["seconds"] / FEW for run in few]
    marginal = [(m["seconds"] - f["seconds"]) / (MANY - FEW) for f, m in zip(few, many, strict=True)]
    few_peak = [run["peak_rss_bytes"] / 1e9 for run in few]
    many_peak = [run["peak_rss_bytes"] / 1e9 for run in many]
    same_work = f"copies of case {case_name}, same flags and --jobs"

    def growth(row: Headline, many_values: list[float], few_values: list[float], detail: str) -> Figure:
        shown = f"{median(many_values):.3f} / {median(few_values):.3f} {detail}"
        return row.figure(ratios(many_values, few_values), invalid=invalid, detail=shown)

    return [
        growth(TIME_GROWTH, marginal, few_per_case, f"s per added case / s per case of {FEW}; {same_work}"),
        growth(MEMORY_GROWTH, many_peak, few_peak, "GB, the gate's own peak resident size (VmHWM)"),
        *(
            Figure(
                f"gate_s_{count}_cases",
                f"   gate wall time, {count} cases",
                [r["seconds"] for r in runs],
                unit="s",
                detail="python -m validation acceptance",
            )
            for count, runs in ((FEW, few), (MANY, many))
        ),
    ]


def section_scaling(ctx: Context) -> list[Figure]:
    """A gate of FEW and of MANY copies of one case (the first by name), alternating which goes first."""
    case = min(ctx.cases, key=lambda found: found.name)
    sets = {count: copies(case, count, ctx.scratch / f"scaling-{count}") for count in (FEW, MANY)}
    runs: dict[int, list[dict[str, Any]]] = {FEW: [], MANY: []}
    for index in range(ctx.runs):
        for count in (FEW, MANY) if index % 2 == 0 else (MANY, FEW):
            runs[count].append(timed_gate(ctx, sets[count], f"scaling-{count}-cases-{index}"))
            last = runs[count][-1]
            print(
                f"  gate of {count} cases run {index + 1}: {last['seconds']:.1f} s, "
                f"peak {last['peak_rss_bytes'] / 1e9:.3f} GB (exit {last['exit']})",
                flush=True,
            )
    return growth_figures(runs[FEW], runs[MANY], case.name)
