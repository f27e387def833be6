"""The cross-architecture tier's time and verdict on a real-size network and a clinical-size study.

`python -m bench.tier_time --image IMAGE` exports a network of bench/networks.toml (default: the 31 M
DynUNet, built from its seed, nothing downloaded), writes phantoms.toml's generated `full-size` case
(512 x 512 pixels, 300 slices), and gates it with `acceptance --cross-arch --model NETWORK`, timing the
whole gate from its start to its exit as a user would see it. With `--perturb SCALE` the image is first
derived with its numerics changed on purpose (bench/perturbed_numerics/: the last weight of every
model it loads scaled by SCALE), and the tier must fail on the windows' logits.

The network's weights are its seed's, not trained: its full-study mask is no organ, so the full study's
reference checks (test_full_study_mask) are left out of this measurement (`-k`), and said so in the
record. What it measures is what the tier costs and what it compares: the crop's whole pipeline in the
image against the host's, and the image's logits against the host's on the chosen windows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import networks, stage_times
from validation import engine, profiles
from validation.errors import GateError

PERTURBATION = Path(__file__).with_name("perturbed_numerics") / "sitecustomize.py"
LEFT_OUT = "test_full_study_mask"  # the network is untrained: its mask is held to no reference here
CASE = "full-size"
REPORT = profiles.ROOT / "reports" / "bench-tier.json"
SAID = ("plan:", "cross-arch:", "  ", "armgate:")  # the gate's lines the record keeps


def perturbation(scale: float) -> tuple[str, dict[str, bytes]]:
    """The Dockerfile steps and files that derive an image whose numerics are changed on purpose."""
    steps = f"COPY sitecustomize.py /opt/perturb/\nENV PYTHONPATH=/opt/perturb ARMGATE_PERTURB_SCALE={scale}"
    return steps, {"sitecustomize.py": PERTURBATION.read_bytes()}


def _prepared(work: Path, network: str, case: str) -> tuple[Path, Path]:
    """The network's TorchScript and the generated case's folder, made once under `work`."""
    model = work / f"{network}.ts"
    if not model.is_file():
        networks.get(network).export(model)
    cases_dir = work / "cases"
    if not (cases_dir / case / "case.toml").is_file():
        stage_times.write_generated_case(cases_dir, case)
    return model, cases_dir


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _gate(image: str, model: Path, cases_dir: Path, reports: Path, log: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "validation", "acceptance", "--cross-arch", "--image", image,
               "--model", str(model), "--cases", str(cases_dir), "--reports", str(reports),
               "-k", f"not {LEFT_OUT}"]  # fmt: skip
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    with log.open("w") as output:
        code = subprocess.run(command, cwd=profiles.ROOT, stdout=output, stderr=subprocess.STDOUT,
                              check=False).returncode  # fmt: skip
    seconds = time.monotonic() - started
    metrics, tier = (_json(reports / name) for name in ("metrics.json", "cross-arch.json"))
    checks = {check["name"]: check["status"] for check in metrics.get("checks", [])}
    return {
        "command": " ".join(command[1:]),
        "exit_code": code,
        "wall_s": round(seconds, 1),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "failed": sorted(name for name, status in checks.items() if status not in ("passed", "skipped")),
        "checks": len(checks),
        "cases": tier.get("cases", {}),
        "said": [line for line in log.read_text().splitlines() if line.startswith(SAID)][:40],
        "log": str(log),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="armgate-tier-"))
    work.mkdir(parents=True, exist_ok=True)
    model, cases_dir = _prepared(work, args.network, CASE)
    label = "perturbed" if args.perturb else "image"
    reports = work / f"reports-{label}"
    record: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "network": args.network,
        "parameters": networks.parameters(networks.get(args.network).build()),
        "case": CASE,
        "image": args.image,
        "perturb_scale": args.perturb,
        "left_out": f"{LEFT_OUT}: the network's weights are its seed's, its mask is no organ",
    }
    if args.perturb:
        steps, files = perturbation(args.perturb)
        context = work / f"perturbed-{time.monotonic_ns()}"
        with engine.derived_image(args.image, "linux/arm64", steps, context, files) as image:
            record["gate"] = _gate(image, model, cases_dir, reports, work / f"gate-{label}.log")
    else:
        record["gate"] = _gate(args.image, model, cases_dir, reports, work / f"gate-{label}.log")
    return record


def _comparison(case: dict[str, Any]) -> str:
    compared = case.get("compared") or []
    if not compared:
        return case.get("problem") or "not compared"
    worst = max(compared, key=lambda window: window["max_abs"] / window["scale"])
    ratio = worst["max_abs"] / worst["scale"]
    return f"{ratio:.2g} ({worst['labels_differ']} of {worst['voxels']} labels differ)"


HEADER = (
    "| image side | gate wall time | crop in the image | full-study windows in the image "
    "| largest \\|Δ logit\\| ÷ largest \\|host logit\\| | windows check | failed checks | load average |"
)


def _row(side: str, name: str, case: dict[str, Any], gate: dict[str, Any]) -> str:
    crop = case.get("crop") or {}
    size = [high - low for low, high in zip(crop.get("low", []), crop.get("high", []), strict=True)]
    windows_failed = any(check.startswith("test_full_study_windows") for check in gate["failed"])
    cells = [
        f"{side} ({name})",
        f"{gate['wall_s'] / 60:.1f} min",
        "×".join(map(str, size)) + " of " + "×".join(map(str, crop.get("grid_shape", []))),
        f"{len(case['chosen'])} of {case['windows_total']}",
        _comparison(case),
        "failed" if windows_failed else "passed",
        ", ".join(gate["failed"]) or "none",
        " → ".join(f"{value:g}" for value in gate["load_average"]),
    ]
    return "| " + " | ".join(cells) + " |"


def table(records: list[dict[str, Any]]) -> str:
    """The README's rows: one per case of each gate timed, from the records `--json` kept."""
    rows = [HEADER, "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for record in records:
        side = f"last weight × {record['perturb_scale']:g}" if record.get("perturb_scale") else "as built"
        rows += [_row(side, name, case, record["gate"]) for name, case in record["gate"]["cases"].items()]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tier_time", description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="the arm64 image to gate")
    parser.add_argument("--network", default="dynunet", help="a network of bench/networks.toml")
    parser.add_argument("--perturb", type=float, help="scale the image side's last weight by this first")
    parser.add_argument("--keep", help="work under this folder (the case and model are reused)")
    parser.add_argument("--json", default=str(REPORT), help="append the record to this JSON list file")
    parser.add_argument("--table", help="print the README's rows from this JSON list file, and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    if not args.image:
        parser.error("give --image (the arm64 image to gate), or --table FILE")
    try:
        record = measure(args)
    except GateError as error:
        print(f"armgate: {error}", file=sys.stderr)
        return 2
    print(json.dumps(record, indent=2))
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps([*kept, record], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
