"""Where a run's time goes: the app's per-stage wall times on a clinical-size field of view.

The fixture cases are small (128 x 128 pixels); a site's CT has 512 x 512 pixels over a 50 cm field
of view. This generates such a series from the fixtures' phantom (in a temporary folder, never
committed), runs the app on the host or in the arm64 image, and prints each stage's time from the
app's log (its stage lines: validation/stages.py):

    python -m bench.stage_times                       # on the host
    python -m bench.stage_times --image armgate/multiorgan-seg:bookworm --app-dir app
    python -m bench.stage_times table RUN.json ...     # a Markdown table of runs kept with --json

`--app-dir` mounts that app folder over the image's, to measure an edited app without a rebuild.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import multiprocessing
import os
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

from validation import contract, engine, run


def generated_case(name: str) -> dict[str, Any]:
    """phantoms.toml's [generated.cases.NAME]: rows, fov_mm, slices, slice_mm and its memory limit."""
    from fixtures.phantom import load_config

    return dict(load_config()["generated"]["cases"][name])


def fov_config(rows: int, fov_mm: float, slices: int, slice_mm: float) -> tuple[dict[str, Any], dict]:
    """phantoms.toml with the body widened to an adult's ([generated]), and a case of `rows` x `rows`
    pixels over `fov_mm` (the standard case's position and noise)."""
    from fixtures.phantom import load_config

    config = copy.deepcopy(load_config())
    body = next(structure for structure in config["structures"] if structure["name"] == "body")
    body["semi_axes"] = list(config["generated"]["body_semi_axes_mm"])
    case = {
        **config["cases"]["standard"],
        "description": f"{rows} x {rows} pixels over {fov_mm:g} mm, {slices} slices of {slice_mm:g} mm",
        "rows": rows,
        "columns": rows,
        "slices": slices,
        "pixel_spacing_mm": round(fov_mm / rows, 6),
        "slice_spacing_mm": slice_mm,
    }
    return config, case


def write_fov_series(folder: Path, rows: int, fov_mm: float, slices: int, slice_mm: float) -> Path:
    """A CT axial series of `rows` x `rows` pixels over `fov_mm`, from the standard fixture's phantom."""
    from fixtures.dicom_series import write_ct_series
    from fixtures.phantom import render

    config, case = fov_config(rows, fov_mm, slices, slice_mm)
    seed = config["seed"] + case["seed_offset"]
    phantom = render(config, case, seed)
    dicom = folder / "dicom"
    dicom.mkdir(parents=True)
    write_ct_series(phantom, "fov", case, config["dicom"], seed, dicom)
    return dicom


def write_generated_case(cases_dir: Path, name: str) -> Path:
    """phantoms.toml's generated case NAME as a whole gate case (cases_dir/NAME): DICOM, ground truth,
    the golden from a host run of the app and its measured limits, as `nox -s fixtures` writes the
    committed cases. Its timeout is left to scale with its windows; its memory limit is stated."""
    from fixtures import generate
    from fixtures.make_model import MODEL_FILE

    spec = generated_case(name)
    config, case = fov_config(spec["rows"], spec["fov_mm"], spec["slices"], spec["slice_mm"])
    config["cases"] = {name: case}
    config["case_toml"] = {**config["case_toml"], "run": {"memory": spec["memory"]}}
    digest = hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest()
    generate.generate_case(config, name, cases_dir / name, MODEL_FILE, digest, None)
    return cases_dir / name


def _host_run(app_path: Path, dicom: Path, model: Path, output: Path, timeout: float) -> run.RunResult:
    result = run.run_host(contract.load(app_path), dicom, model, output, timeout)
    # this fresh process's only child, so the largest child's peak is the app run's
    result.peak_memory_bytes = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return result


def host_run_with_peak(
    app_path: Path, dicom: Path, model: Path, output: Path, timeout: float
) -> run.RunResult:
    """run.run_host with the app run's own peak memory: started from a fresh interpreter, because Linux
    carries the parent's peak over to a child at exec (ru_maxrss), and this process may hold a large
    generated series."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_host_run, (app_path, dicom, model, output, timeout))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    app = contract.load(args.app)
    model = Path(args.model) if args.model else app.default_model
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="armgate-fov-") as scratch:
        folder = Path(scratch)
        if args.dicom:
            dicom = Path(args.dicom)
        else:
            dicom = write_fov_series(Path(args.keep) if args.keep else folder, args.rows, args.fov_mm,
                                     args.slices, args.slice_mm)  # fmt: skip
        output = run.writable_output_dir(folder, "out")
        if args.image:
            overlay = Path(args.app_dir) if args.app_dir else None
            result = run.run_container(
                args.image, app, dicom, model, output, args.timeout, args.memory, app_overlay=overlay
            )
        else:
            result = host_run_with_peak(Path(args.app), dicom, model, output, args.timeout)
    stages = result.stage_seconds
    return {
        "command": " ".join(["python -m bench.stage_times", *args.argv]),
        "started": started,
        "loadavg_start": round(load, 2),
        "where": result.where,
        "image": args.image,
        "image_id": engine.inspect_image(args.image).id if args.image else None,
        "model": {"path": str(model), "sha256": hashlib.sha256(model.read_bytes()).hexdigest()},
        "series": {
            "rows": args.rows, "fov_mm": args.fov_mm, "slices": args.slices, "slice_mm": args.slice_mm
        },
        "ok": result.ok,
        "failure": result.failure(),
        "seconds": round(result.seconds, 2),
        "stages": stages,
        "outside_stages_s": round(result.seconds - sum(stages.values()), 2),
        "peak_memory_bytes": result.peak_memory_bytes,
        "log": result.logs if not result.ok else "",
    }


def _stage_group(name: str) -> str:
    """Window calls are summed into one row: their count and split differ between series."""
    return "inference (all window calls)" if name.startswith("inference window") else name


def _when(measured: dict[str, Any]) -> str:
    return f"{measured['started'][:16].replace('T', ' ')} UTC" if measured.get("started") else ""


def _image(measured: dict[str, Any]) -> str:
    if not measured.get("image"):
        return "the host"
    image_id = measured.get("image_id") or ""
    return f"{measured['image']} ({image_id.removeprefix('sha256:')[:12]})" if image_id else measured["image"]


def _gigabytes(count: int | None) -> str:
    return f"{count / 1e9:.2f} GB" if count else "—"


def render_table(runs: list[dict[str, Any]]) -> str:
    """One column per run kept with --json: where, when, image, model and load, then each stage."""
    header = ["stage", *(f"{measured['where']} {_when(measured)}" for measured in runs)]
    rows: dict[str, list[str]] = {}
    for index, measured in enumerate(runs):
        grouped: dict[str, float] = {}
        for name, seconds in measured["stages"].items():
            grouped[_stage_group(name)] = grouped.get(_stage_group(name), 0.0) + seconds
        grouped["outside the finished stages"] = measured["outside_stages_s"]
        grouped["**whole run**"] = measured["seconds"]
        for name, seconds in grouped.items():
            rows.setdefault(name, ["—"] * len(runs))[index] = f"{seconds:.1f} s"
    facts = {
        "image": [_image(measured) for measured in runs],
        "model sha256": [measured.get("model", {}).get("sha256", "not recorded")[:12] for measured in runs],
        "load average at start": [str(measured.get("loadavg_start", "not recorded")) for measured in runs],
        "peak memory": [_gigabytes(measured.get("peak_memory_bytes")) for measured in runs],
    }
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for name, cells in [*facts.items(), *rows.items()]:
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["table"]:
        print(render_table([json.loads(Path(path).read_text()) for path in argv[1:]]))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.stage_times", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--app", default=str(contract.DEFAULT_CONTRACT), help="the app contract")
    parser.add_argument("--model", help="TorchScript model (default: the contract's)")
    parser.add_argument("--image", help="run in this arm64 image instead of on the host")
    parser.add_argument("--app-dir", help="mount this app folder over the image's (with --image)")
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--fov-mm", type=float, default=500.0)
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--slice-mm", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument(
        "--memory", default="8g", help="docker run --memory (8g: a 512 x 512 x 300 series)"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", help="write the generated series under this folder (to reuse with --dicom)")
    parser.add_argument("--dicom", help="measure this series instead of generating one")
    args = parser.parse_args(argv)
    args.argv = list(argv)
    figures = measure(args)
    for name, seconds in figures["stages"].items():
        print(f"{seconds:9.2f} s  {name}")
    outside = "interpreter start, SDK between operators" + ("" if figures["ok"] else ", the stage cut short")
    print(f"{figures['outside_stages_s']:9.2f} s  outside the finished stages ({outside})")
    status = "" if figures["ok"] else " (failed)"
    print(f"{figures['seconds']:9.2f} s  the whole {figures['where']} run{status}")
    if not figures["ok"]:
        print(figures["failure"], file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
