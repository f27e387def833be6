"""What the report shows, pre-formatted from the gate's typed results, so the template has no logic
beyond loops. Numbers may be missing (a failed run has no mask, no comparisons): they show as a dash.
"""

from __future__ import annotations

import base64
import math
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from validation.compare import CheckOutcome
from validation.label_metrics import LabelMetrics
from validation.metrics import METRICS
from validation.overlays import CONTOUR_COLOURS
from validation.results import REFERENCE_TITLES, CaseResult, Check, Comparison, GateResults, RunSummary

OVERLAY_PANELS = 2  # at most this many references drawn per case
CONSOLE_REASON_CHARS = 160


def number(value: Any, pattern: str = "{:.4g}") -> str:
    """A number for humans; missing or non-finite values become a dash or ∞."""
    if value is None or isinstance(value, bool):
        return "—" if value is None else str(value)
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    try:
        return pattern.format(value)
    except (TypeError, ValueError):
        return str(value)


def size(value: int | None) -> str:
    if value is None:
        return "—"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value} B"


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def verdict(results: GateResults) -> str:
    """PASS, PARTIAL, FAIL or INTERRUPTED; anything unknown reads as FAIL, never as PASS."""
    name = results.verdict
    return name.upper() if name in ("pass", "partial", "fail", "interrupted") else "FAIL"


def scope_line(results: GateResults) -> str:
    """Why a verdict is not a release verdict: what was left out or could not be evaluated."""
    parts = []
    if results.shard:
        parts.append(
            f"shard {results.shard} of the cases only ({len(results.shard_cases)} of "
            f"{len(results.case_set)}: {', '.join(results.shard_cases)}; merge every shard for a verdict)"
        )
    if results.deselected:
        options = " ".join(results.options) or "selection"
        parts.append(f"{len(results.deselected)} checks left out by {options}")
    if results.not_evaluated:
        parts.append(f"{results.not_evaluated} not evaluated")
    if results.verdict == "interrupted":
        parts.append("interrupted")
    return "; ".join(parts) + ": not a release verdict" if parts else ""


def group_state(checks: Iterable[Check]) -> str:
    """pass/fail of one group of checks; '' when the gate recorded none for it."""
    mine = [check for check in checks if not check.skipped]
    if not mine:
        return ""
    return "fail" if any(check.failed for check in mine) else "pass"


def one_line(text: str | None, limit: int = CONSOLE_REASON_CHARS) -> str:
    """The first line of a (pytest) message, shortened: the console gets a hint, the report the rest."""
    first = (text or "").strip().split("\n", 1)[0]
    return first if len(first) <= limit else first[: limit - 1] + "…"


def ordered(comparisons: Mapping[str, Comparison]) -> list[tuple[str, Comparison]]:
    """The named references first (golden, ground truth, host), then any other."""
    keys = [*(key for key in REFERENCE_TITLES if key in comparisons), *comparisons]
    return [(key, comparisons[key]) for key in dict.fromkeys(keys)]


def focus(comparisons: Mapping[str, Comparison]) -> str | None:
    """The comparison to show first: the first with an imperfect label (Dice < 1), else the first measured."""
    measured = [(key, c.worst) for key, c in ordered(comparisons) if c.worst is not None]
    if not measured:
        return None
    return next((key for key, worst in measured if worst.dice < 1.0), measured[0][0])


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def overlay_view(case: CaseResult) -> dict[str, Any] | None:
    """The case's figure from the panels drawn at comparison time; None when there is nothing to show."""
    drawn = [(key, c.overlay) for key, c in ordered(case.comparisons) if c.overlay is not None]
    first = focus(case.comparisons)
    drawn.sort(key=lambda item: item[0] != first)  # stable: the focus first, the others in order
    panels = [
        {
            "title": panel.title,
            "note": panel.note,
            "caption": panel.caption,
            "src": _data_uri(panel.png) if panel.png else "",
        }
        for _, panel in drawn[:OVERLAY_PANELS]
    ]
    return {"panels": panels} if panels else None


def _metric_cells(metrics: LabelMetrics, outcomes: Mapping[str, CheckOutcome]) -> list[dict[str, str]]:
    """One table row's metric cells, each marked by the gate's own check of that metric and label."""
    cells = []
    for metric in METRICS:
        outcome = outcomes.get(f"{metric.name}[{metrics.name}]")
        state = "" if outcome is None else ("pass" if outcome.passed else "fail")
        cells.append({"text": number(getattr(metrics, metric.field), metric.number), "state": state})
    return cells


def _comparison_view(key: str, comparison: Comparison) -> dict[str, Any]:
    tolerances = comparison.tolerances
    by_name = {outcome.name: outcome for outcome in comparison.outcomes}
    headers = []
    for metric in METRICS:
        header = metric.title
        if metric.limit in tolerances:
            header += f" {metric.sign} {number(tolerances[metric.limit])}"
        if metric.name == "nsd":
            header += f" (@ {number(comparison.result.nsd_tolerance_mm)} mm)"
        headers.append(header)
    rows = [
        {
            "label": metrics.label,
            "name": metrics.name,
            "cells": _metric_cells(metrics, by_name),
            "volumes": f"{metrics.output_volume_ml:.2f} / {metrics.reference_volume_ml:.2f}",
        }
        for metrics in comparison.result.per_label
    ]
    failed = any(not outcome.passed for outcome in comparison.outcomes)
    return {
        "key": key,
        "title": REFERENCE_TITLES.get(key, key),
        "reference": comparison.reference or "—",
        "headers": headers,
        "rows": rows,
        "general": [o for o in comparison.outcomes if o.name in ("geometry", "labels")],
        "state": "fail" if failed else ("pass" if comparison.outcomes else ""),
        "tolerances": ", ".join(f"{k} {number(v)}" for k, v in tolerances.items()),
    }


def _run_view(run: RunSummary | None) -> dict[str, Any] | None:
    if run is None:
        return None
    status, state = run.status
    return {
        "where": run.where,
        "status": status,
        "state": state,
        "seconds": seconds(run.seconds),
        "memory": size(run.peak_memory_bytes),
        "command": shlex.join(run.command) if run.command else "—",
        "log_tail": "\n".join(run.log_tail),
    }


def _case_view(case: CaseResult, results: GateResults) -> dict[str, Any]:
    checks = results.checks_of(case.name)
    if case.output_mask is None:
        no_overlay = "No overlay: the run wrote no mask."
    else:
        no_overlay = "No overlay: the output mask was compared with no reference."
    return {
        "name": case.name,
        "state": group_state(checks),
        "dicom_dir": case.dicom_dir or "—",
        "output_mask": case.output_mask or "none: the run wrote no mask",
        "runs": [view for view in (_run_view(case.run), _run_view(case.host_run)) if view],
        "comparisons": [_comparison_view(key, comparison) for key, comparison in ordered(case.comparisons)],
        "seg": list(case.seg or ()),
        "failed": [check for check in checks if check.failed],
        "overlay": overlay_view(case),
        "no_overlay": no_overlay,
    }


def _image_view(results: GateResults) -> dict[str, Any]:
    image = results.image
    facts = [
        ("Profile", image.profile),
        ("Reference", image.reference),
        ("Digest", image.id),
        ("Platform", image.platform),
        ("Size", size(image.size_bytes)),
        ("Revision", image.labels.get("org.opencontainers.image.revision")),
        *((f"MAP {key.replace('_', ' ')}", value) for key, value in (results.app.get("map") or {}).items()),
    ]
    return {
        "facts": [(title, value if value not in (None, "") else "—") for title, value in facts],
        "labels": sorted(image.labels.items()),
        "pins": list(image.pins),
    }


def view_model(results: GateResults) -> dict[str, Any]:
    """Everything the template shows."""
    failed = results.failed
    return {
        "verdict": verdict(results),
        "verdict_class": {"PASS": "pass", "PARTIAL": "partial"}.get(verdict(results), "fail"),
        "scope": scope_line(results),
        "started": results.started or "—",
        "seconds": seconds(results.seconds),
        "counts": {"total": len(results.checks), "failed": len(failed), "skipped": results.not_evaluated},
        "failed": failed,
        "checks": list(results.checks),
        "image": _image_view(results),
        "cases": [_case_view(case, results) for case in results.cases],
        "legend": [(name, "#{:02x}{:02x}{:02x}".format(*rgb)) for name, rgb in CONTOUR_COLOURS.items()],
    }
