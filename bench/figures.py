"""Figures of the bench: per-run samples, their summary, a target, and what makes one invalid.

Pure logic, unit-tested in tests/test_bench.py. A figure is the median of per-run values (a ratio
pairs a measurement with the baseline taken in the same repeat); min and max are kept beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


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


def failed_runs(exit_codes: Sequence[int]) -> str:
    """Why timings of runs that did not exit 0 cannot stand: '' when every run exited 0."""
    bad = [(index + 1, code) for index, code in enumerate(exit_codes) if code != 0]
    if not bad:
        return ""
    listed = ", ".join(f"run {index} exited {code}" for index, code in bad)
    return f"the gate did not pass ({listed}): a failed gate's time measures nothing"


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
    """One row of the table: per-run samples, how they are summarised, its baseline and target."""

    key: str
    label: str
    samples: list[float]
    unit: str = "x"  # "x" ratio, "s" seconds, "GB", "abs" (an absolute difference)
    target: Target | None = None
    detail: str = ""  # the measurement and its baseline, in words and numbers
    aggregate: str = "median"  # "max" where the worst case is what matters
    invalid: str = ""  # why the samples cannot stand (e.g. the gate failed); the figure then fails
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float | None:
        if not self.samples:
            return None
        return max(self.samples) if self.aggregate == "max" else median(self.samples)

    @property
    def status(self) -> str:
        if self.invalid:
            return "INVALID"
        value = self.value
        if value is None:
            return "no data"
        if self.target is None:
            return "info"
        return "met" if self.target.met(value) else "MISSED"

    def _format(self, value: float) -> str:
        if self.unit == "x":
            return f"{value:.3g}×"
        if self.unit == "s":
            return f"{value:.1f} s"
        if self.unit == "GB":
            return f"{value:.3f} GB"
        return f"{value:.1e}"

    def formatted(self) -> str:
        value = self.value
        return "—" if value is None else self._format(value)

    def spread(self) -> str:
        """'min–max' of the runs, or '' for a single run."""
        if len(self.samples) < 2:
            return ""
        return f"{self._format(min(self.samples))} – {self._format(max(self.samples))}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "value": self.value,
            "min": min(self.samples) if self.samples else None,
            "max": max(self.samples) if self.samples else None,
            "unit": self.unit,
            "aggregate": self.aggregate,
            "samples": self.samples,
            "target": None if self.target is None else {"op": self.target.op, "limit": self.target.limit},
            "status": self.status,
            "invalid": self.invalid,
            "detail": self.detail,
            **({"extra": self.extra} if self.extra else {}),
        }


@dataclass(frozen=True)
class Headline:
    """A row the table always has, declared once by its section: measured, or "no data" with the
    reason when the section fails."""

    key: str
    label: str
    target: Target | None = None

    def figure(self, samples: list[float], **details: Any) -> Figure:
        return Figure(self.key, self.label, samples, target=self.target, **details)

    def missing(self, reason: str) -> Figure:
        return no_data(self.key, self.label, reason, self.target)


def no_data(key: str, label: str, reason: str, target: Target | None = None) -> Figure:
    """A figure whose measurement failed: it stays in the table, with the reason."""
    return Figure(key, label, [], target=target, detail=f"not measured: {reason}")


def format_table(figures: Sequence[Figure]) -> str:
    """The console table: one row per figure, its spread, baseline and verdict at a glance."""
    rows = [("figure", "value", "min – max", "target", "status", "measurement / baseline")]
    rows += [
        (f.label, f.formatted(), f.spread(), str(f.target or "—"), f.status, f.invalid or f.detail)
        for f in figures
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for index, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[5]
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths) + "  " + "-" * 6)
    return "\n".join(line.rstrip() for line in lines)


def summarise(figures: Sequence[Figure]) -> dict[str, list[str]]:
    """Keys of the figures by outcome, for bench.json and the exit code."""
    outcome: dict[str, list[str]] = {"met": [], "missed": [], "info": [], "no_data": [], "invalid": []}
    names = {"met": "met", "MISSED": "missed", "info": "info", "INVALID": "invalid"}
    for figure in figures:
        outcome[names.get(figure.status, "no_data")].append(figure.key)
    return outcome


def exit_code(summary: dict[str, list[str]], strict: bool) -> int:
    """1 when a figure is invalid (always) or, with --strict, when a target is missed or unmeasured."""
    if summary["invalid"]:
        return 1
    return 1 if strict and (summary["missed"] or summary["no_data"]) else 0
