"""The per-label metrics the gate measures, declared once.

The comparison's checks (`dice[<label name>]` ...), the tolerance keys of case.toml and tolerances.toml,
the compare command's limit flags and table, the gate's check families and the report's columns are
all derived from METRICS, so a metric cannot be checked in one place and forgotten in another.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str  # the check family and prefix: dice[<label name>]
    field: str  # the LabelMetrics attribute and the JSON key of its value
    limit: str  # the tolerance key that bounds it
    at_least: bool  # the value must stay at least the limit (otherwise at most)
    absolute: bool  # bounded as |value| (a signed difference)
    title: str  # the report's and the table's column
    number: str  # how a value is written
    meaning: str  # what the tolerance key means

    @property
    def flag(self) -> str:
        """The compare command's option for the limit: dice_min -> --dice-min, hd95_max_mm -> --hd95-max."""
        return "--" + self.limit.removesuffix("_mm").removesuffix("_pct").replace("_", "-")

    @property
    def sign(self) -> str:
        return "≥" if self.at_least else ("|x| ≤" if self.absolute else "≤")

    def holds(self, value: float, limit: float) -> bool:
        measured = abs(value) if self.absolute else value
        return measured >= limit if self.at_least else measured <= limit


METRICS = (
    Metric("dice", "dice", "dice_min", True, False, "Dice", "{:.4f}", "lowest acceptable Dice per label"),
    Metric(
        "hd95", "hd95_mm", "hd95_max_mm", False, False, "HD95 mm", "{:.2f}",
        "largest acceptable 95th-percentile Hausdorff distance per label, mm",
    ),
    Metric(
        "nsd", "nsd", "nsd_min", True, False, "NSD", "{:.4f}",
        "lowest acceptable normalised surface distance per label",
    ),
    Metric(
        "volume", "volume_diff_pct", "volume_diff_max_pct", False, True, "Volume diff %", "{:+.2f}",
        "largest acceptable |volume difference| per label, % of the reference",
    ),
)  # fmt: skip
BY_NAME = {metric.name: metric for metric in METRICS}

# tolerance keys that set how the comparison measures, not a limit on a metric
SETTINGS = {
    "nsd_tolerance_mm": "distance within which a surface voxel counts as matched for NSD, mm",
    "affine_atol_mm": "largest acceptable difference between the two affines, mm",
}
# every key a tolerance table may hold -> its meaning; anything else is refused, so a typo cannot
# disable a check
TOLERANCE_KEYS = {metric.limit: metric.meaning for metric in METRICS} | SETTINGS
# the gate's check families per comparison: the grid, the label set, then one per metric
FAMILIES = ("geometry", "labels", *BY_NAME)


def families_for(tolerances: dict[str, float]) -> tuple[str, ...]:
    """The check families a tolerance table asks for: the grid, the labels, and each metric it bounds."""
    return ("geometry", "labels", *(metric.name for metric in METRICS if metric.limit in tolerances))
