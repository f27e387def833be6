"""`python -m bench` (`nox -s bench`): what the gate costs, as ratios against baselines run alongside.

Absolute times on a shared, emulating host mean little; a ratio against a baseline taken minutes
apart on the same machine does. Each figure is the median over --runs repeats of a per-run value,
with min and max beside it. Writes reports/bench.json and prints the table; `python -m bench readme`
puts that table in README.md. Exit 1 when a figure is invalid (a gate run that did not pass), or with
--strict when a target is missed.

Sections: gate (bench/overhead.py), rebuild (bench/rebuild.py), size (bench/size.py), compare
(bench/compare_speed.py), scaling (bench/scaling.py), realsize (bench/realsize.py: real-size networks'
windows under QEMU and on the host). This package imports the gate; the gate never
imports it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import common, figures
from bench.figures import Figure, Headline
from validation import build, contract, interrupts, profiles
from validation.errors import GateError

REPORT = build.REPORTS / "bench.json"
SECTIONS = ("gate", "rebuild", "size", "compare", "scaling", "realsize")


def section_functions() -> dict[str, Callable[[common.Context], list[Figure]]]:
    from bench import compare_speed, overhead, realsize, rebuild, scaling, size

    return {
        "gate": overhead.section_gate,
        "rebuild": rebuild.section_rebuild,
        "size": size.section_size,
        "compare": compare_speed.section_compare,
        "scaling": scaling.section_scaling,
        "realsize": realsize.section_realsize,
    }


def failed_rows(section: str, jobs: list[int]) -> list[Headline]:
    """The headline rows of a section that failed, as its module declares them (the gate's: one per
    --jobs value), so the table still has every headline row."""
    from bench import compare_speed, overhead, realsize, rebuild, scaling, size

    if section == "gate":
        return [overhead.headline(j) for j in jobs]
    modules = {
        "rebuild": rebuild, "size": size, "compare": compare_speed, "scaling": scaling, "realsize": realsize,
    }  # fmt: skip
    return list(modules[section].HEADLINES)


def default_jobs() -> list[int]:
    """--jobs 1 and the gate's default (as many runs at a time as it starts unasked)."""
    return sorted({1, min(2, os.cpu_count() or 1)})


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repeats per figure (default 3; median reported)")
    parser.add_argument(
        "--compare-runs",
        type=int,
        help="repeats of the compare section (default --runs; ~1 min of MONAI per pair)",
    )
    parser.add_argument(
        "--scaling-runs",
        type=int,
        default=1,
        help="repeats of the scaling section (default 1: one run gates 33 cases, ~25 min under QEMU)",
    )
    parser.add_argument("--quick", action="store_true", help="one run of each, for development")
    parser.add_argument("--profile", default=profiles.DEFAULT_PROFILE, help="a wheelhouse profile")
    parser.add_argument("--image", help="image to gate (default: the one in reports/build.json)")
    parser.add_argument("--app", type=Path, default=contract.DEFAULT_CONTRACT, help="app contract (TOML)")
    parser.add_argument("--cases", type=Path, help="folder of case folders (default: the app's)")
    parser.add_argument(
        "--case", action="append", dest="case_names", help="case to run (repeatable; default all)"
    )
    parser.add_argument("--model", type=Path, help="TorchScript model (default: the app's)")
    parser.add_argument(
        "--jobs", help="comma-separated --jobs values for the gate figure (default 1 and the gate's)"
    )
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"subset of {','.join(SECTIONS)}")
    parser.add_argument("--no-host-runs", action="store_true", help="skip host runs (and the QEMU penalty)")
    parser.add_argument("--no-probes", action="store_true", help="skip the gate-time breakdown probes")
    parser.add_argument("--report", type=Path, default=REPORT, help="where to write bench.json")
    parser.add_argument("--strict", action="store_true", help="exit 1 also when a target is missed")
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if args.quick:
        args.runs = args.scaling_runs = 1
    args.compare_runs = args.runs if args.quick or args.compare_runs is None else args.compare_runs
    if min(args.runs, args.compare_runs, args.scaling_runs) < 1:
        parser.error("--runs, --compare-runs and --scaling-runs must be at least 1")
    try:
        args.jobs = sorted({int(j) for j in args.jobs.split(",")}) if args.jobs else default_jobs()
    except ValueError:
        parser.error(f"--jobs {args.jobs}: expected comma-separated whole numbers")
    if min(args.jobs) < 1:
        parser.error("--jobs values must be at least 1")
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def write_report(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def run_bench(args: argparse.Namespace) -> int:
    from validation import gate

    profile, app = profiles.load(args.profile), contract.load(args.app)
    if profile.install != "wheelhouse" or profile.base.kind != "debootstrap":
        raise GateError(
            f"profile {profile.name}: the bench needs a hermetic (wheelhouse, debootstrap) profile"
        )
    build.require_engine()
    needs_image = {"gate", "size", "scaling", "realsize"} & set(args.sections)
    image = gate.resolve_image(args.image, profile, app) if needs_image else (args.image or "")
    clock = time.monotonic()
    logs = args.report.with_name(args.report.stem + "-logs")
    report: dict[str, Any] = {
        "command": " ".join(["python -m bench", *args.argv]),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "revision": build.git_revision()[0],  # the figures hold for this commit of armgate
        "runs": args.runs,
        "compare_runs": args.compare_runs,
        "scaling_runs": args.scaling_runs,
        "jobs": args.jobs,
        "image": {"reference": image, "size_bytes": common.image_size(image) if image else None},
        "machine": common.machine(),
        "sections": args.sections,
        "logs": str(logs),
        "errors": {},
        "figures": [],
    }
    found: list[Figure] = []
    sections: dict[str, str] = {}  # figure key -> the section that measured it
    functions = section_functions()
    with tempfile.TemporaryDirectory(prefix="armgate-bench-") as scratch:
        scratch_dir = Path(scratch)
        ctx = common.Context(
            profile=profile,
            app=app,
            image=image,
            runs=args.runs,
            scratch=scratch_dir,
            cases=common.select_cases(
                args.cases or app.default_cases, args.case_names, scratch_dir / "cases"
            ),
            model=(args.model or app.default_model).resolve(),
            host_runs=not args.no_host_runs,
            probes=not args.no_probes,
            jobs=args.jobs,
            logs=logs,
        )
        repeats = {"compare": args.compare_runs, "scaling": args.scaling_runs}  # others: --runs
        try:
            for section in (s for s in SECTIONS if s in args.sections):
                ctx.runs = repeats.get(section, args.runs)
                print(f"[{section}] {ctx.runs} run(s)", flush=True)
                started = time.monotonic()
                try:
                    found += functions[section](ctx)
                except GateError as error:
                    report["errors"][section] = str(error)
                    rows = failed_rows(section, args.jobs)
                    found += [row.missing(str(error)) for row in rows]
                    print(f"  {section} failed: {error}", flush=True)
                report.setdefault("section_seconds", {})[section] = round(time.monotonic() - started, 1)
                for figure in found:
                    sections.setdefault(figure.key, section)
                report["figures"] = [{**f.to_dict(), "section": sections[f.key]} for f in found]
                write_report(args.report, report)  # after every section: a late failure keeps the rest
        finally:
            common.cleanup(ctx)
    report["seconds"] = round(time.monotonic() - clock, 1)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["summary"] = figures.summarise(found)
    report["leftover_containers"] = [c for c in ctx.containers if common.docker("inspect", c).returncode == 0]
    write_report(args.report, report)
    print()
    print(figures.format_table(found))
    print(
        f"\n{args.runs} run(s) per figure: median, min – max; {report['machine']['nproc']} CPUs "
        f"{report['machine']['uname_m']}; {report['seconds'] / 60:.1f} min"
    )
    print(f"report: {args.report}  (README table: python -m bench readme)")
    summary = report["summary"]
    if summary["invalid"]:
        print(f"INVALID figures (a gate run did not pass): {', '.join(summary['invalid'])}")
    if summary["missed"] or summary["no_data"]:
        print(f"targets missed or not measured: {', '.join(summary['missed'] + summary['no_data'])}")
    return figures.exit_code(summary, args.strict)


def main(argv: list[str]) -> int:
    """One line and exit code 2 for a user-fixable problem, 130 on Ctrl-C or SIGTERM, as every armgate
    command."""
    try:
        if argv[:1] in (["readme"], ["merge"]):
            from bench import readme

            return (readme.main if argv[0] == "readme" else readme.merge_main)(argv[1:])
        with interrupts.terminate_as_interrupt():  # as the gate: its gates and images are cleaned up
            return run_bench(parse_args(argv))
    except GateError as error:
        print(f"armgate bench: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("armgate bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
