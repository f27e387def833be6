"""Compare an output label mask with a reference one: geometry, label sets, Dice, HD95, NSD, volumes.

`python -m validation compare OUTPUT REFERENCE` prints the figures as a table (or --json) and, given
limits (--dice-min ...), exits 1 when one is violated; definitions in validation/label_metrics.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from validation.compare import CheckOutcome, ComparisonResult, compare_masks, evaluate, labels_outcome
from validation.errors import GateError
from validation.label_metrics import DEFAULT_NSD_TOLERANCE_MM
from validation.masks import DEFAULT_AFFINE_ATOL_MM
from validation.metrics import METRICS


def load_names(path: str | Path) -> dict[int, str]:
    """Label names from a JSON object {"1": "lesion", ...}."""
    path = Path(path)
    try:
        mapping = json.loads(path.read_text())
        return {int(label): str(name) for label, name in mapping.items()}
    except OSError as error:
        raise GateError(f"{path}: cannot read label names ({error.strerror})") from None
    except (ValueError, AttributeError):
        raise GateError(
            f'{path}: label names must be a JSON object of id -> name, e.g. {{"1": "lesion"}}'
        ) from None


def format_table(result: ComparisonResult) -> str:
    """A small human-readable report of the same figures as --json."""
    report = result.report
    assert report is not None
    spacing = "x".join(f"{s:.3g}" for s in report.spacing_mm)
    titles = [metric.title for metric in METRICS]
    titles[-1:-1] = ["out ml", "ref ml"]
    columns = {title: max(len(title), 8) for title in titles}
    lines = [
        f"output:    {result.output_path}",
        f"reference: {result.reference_path}",
        f"geometry:  {result.geometry.reason} (spacing {spacing} mm)",
        f"labels:    {labels_outcome(result).reason}",
        "",
        f"{'label':>5}  {'name':<20}"
        + "".join(f" {title:>{width}}" for title, width in columns.items())
        + f"  (NSD within {result.nsd_tolerance_mm:g} mm)",
    ]
    for m in result.per_label:
        values = [metric.number.format(getattr(m, metric.field)) for metric in METRICS]
        values[-1:-1] = [f"{m.output_volume_ml:.2f}", f"{m.reference_volume_ml:.2f}"]  # beside their diff
        cells = "".join(f" {value:>{width}}" for value, width in zip(values, columns.values(), strict=True))
        lines.append(f"{m.label:>5}  {m.name[:20]:<20}{cells}")
    if not result.per_label:
        lines.append("  (no labels in either mask)")
    return "\n".join(lines)


class _ArgumentParser(argparse.ArgumentParser):
    """Usage errors become one GateError line (exit 2), like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise GateError(f"compare: {message} (see python -m validation compare --help)")


def _label_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--labels wants comma-separated integers, got {text!r}") from None


def main(argv: list[str]) -> int:
    """`python -m validation compare OUTPUT REFERENCE`: 0 = measured (and within any given limits),
    1 = a given limit (--dice-min ...) violated, 2 = bad input (GateError)."""
    parser = _ArgumentParser(prog="python -m validation compare", description=__doc__.splitlines()[0])
    parser.add_argument("output", help="output label mask (.nii/.nii.gz)")
    parser.add_argument("reference", help="reference label mask on the same grid")
    parser.add_argument("--labels", type=_label_list, help="expected label ids, e.g. 1,2,3")
    parser.add_argument("--names", help='JSON file of label names, {"1": "lesion", ...}')
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--nsd-tolerance", type=float, default=DEFAULT_NSD_TOLERANCE_MM, metavar="MM")
    parser.add_argument("--affine-atol", type=float, default=DEFAULT_AFFINE_ATOL_MM, metavar="MM")
    limits = parser.add_argument_group("limits (any given makes the exit code gate: 1 when violated)")
    for metric in METRICS:
        meaning = metric.meaning.replace("%", "%%")  # argparse formats help strings with %
        limits.add_argument(metric.flag, type=float, dest=metric.limit, metavar="LIMIT", help=meaning)
    args = parser.parse_args(argv)

    names = load_names(args.names) if args.names else None
    result = compare_masks(
        args.output,
        args.reference,
        labels=args.labels,
        names=names,
        nsd_tolerance_mm=args.nsd_tolerance,
        affine_atol_mm=args.affine_atol,
    )
    if not result.geometry.matches:
        raise GateError(f"{result.output_path}: {result.geometry.reason} ({result.reference_path})")
    given = {metric.limit: getattr(args, metric.limit) for metric in METRICS}
    given = {key: value for key, value in given.items() if value is not None}
    outcomes = evaluate(result, given) if given else []
    if given and not result.per_label:
        # limits with nothing to hold them against: a gate must not pass what it never measured
        outcomes.append(
            CheckOutcome(
                "measured", False, 0, None, "no label in either mask: nothing to measure under the limits"
            )
        )
    if args.json:
        document = result.to_dict() | ({"checks": [o.to_dict() for o in outcomes]} if given else {})
        print(json.dumps(document, indent=2))
    else:
        print(format_table(result))
        for outcome in outcomes:
            if not outcome.passed:
                print(f"FAIL {outcome.name}: {outcome.reason}")
    return 1 if any(not outcome.passed for outcome in outcomes) else 0
