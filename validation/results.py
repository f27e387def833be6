"""The gate's results as the report reads them: typed, never a dict taken apart by string keys.

The gate builds them while it runs (each comparison with its overlay already drawn, see overlays.py);
`merge` reads them back from the shards' metrics.json through `GateResults.from_dict`, the one place
that knows metrics.json's keys besides the `to_dict` methods that write them. Overlays travel as PNG
files named in metrics.json (cases/<case>/overlay-<reference>.png), never as masks: a report is drawn
from these results alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from validation.compare import CheckOutcome, ComparisonResult, LabelMetrics
from validation.verdict import Check

__all__ = [
    "CaseResult", "Check", "Comparison", "GateResults", "ImageSummary", "OverlayPanel", "Pin", "RunSummary",
]  # fmt: skip

# comparison kind -> title; the report shows them in this order
REFERENCE_TITLES = {"golden": "golden (host)", "ground_truth": "ground truth", "host": "host run"}


@dataclass(frozen=True)
class OverlayPanel:
    """One comparison's picture: the PNG (None when it could not be drawn), which slice and why, a note."""

    title: str
    caption: str
    note: str = ""
    png: bytes | None = None
    path: str | None = None  # where the gate wrote the PNG; metrics.json names it, merge reads it back

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "caption": self.caption, "note": self.note, "png": self.path}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OverlayPanel:
        path, png, note = data.get("png"), None, str(data.get("note") or "")
        if path:
            try:
                png = Path(path).read_bytes()
            except OSError as error:
                note = f"overlay image not readable: {path} ({error.strerror})"
        return cls(str(data.get("title") or ""), str(data.get("caption") or ""), note, png, path)


@dataclass(frozen=True)
class Comparison:
    """The output mask against one reference: what was measured, the checks on it and its overlay."""

    reference: str
    tolerances: Mapping[str, float]
    result: ComparisonResult
    outcomes: tuple[CheckOutcome, ...]
    overlay: OverlayPanel | None = None

    @property
    def worst(self) -> LabelMetrics | None:
        """The label with the lowest Dice, None without per-label metrics."""
        return min(self.result.per_label, key=lambda metrics: metrics.dice, default=None)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "reference": str(self.reference),
            "tolerances": dict(self.tolerances),
            "result": self.result.to_dict(),
            "outcomes": [outcome.to_dict() for outcome in self.outcomes],
        }
        return data | ({"overlay": self.overlay.to_dict()} if self.overlay else {})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        overlay = data.get("overlay")
        return cls(
            str(data.get("reference") or ""),
            dict(data.get("tolerances") or {}),
            ComparisonResult.from_dict(data["result"]),
            tuple(CheckOutcome.from_dict(o) for o in data.get("outcomes") or [] if o),
            OverlayPanel.from_dict(overlay) if overlay else None,
        )


@dataclass(frozen=True)
class RunSummary:
    """One run of the app; `record` is everything run.py recorded, written to metrics.json as it is."""

    where: str
    exit_code: int | None
    seconds: float | None
    peak_memory_bytes: int | None
    timed_out: bool
    oom_killed: bool
    command: tuple[str, ...]
    failure: str
    log_tail: tuple[str, ...]
    record: Mapping[str, Any] = field(repr=False)

    @property
    def status(self) -> tuple[str, str]:
        """(text, pass/fail); run.py's own failure line when it gave one."""
        if self.failure:
            return self.failure, "fail"
        if self.timed_out:
            return "timed out", "fail"
        if self.oom_killed:
            return "killed: out of memory", "fail"
        if self.exit_code == 0:
            return "exit 0", "pass"
        return f"exit {'—' if self.exit_code is None else self.exit_code}", "fail"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.record)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RunSummary | None:
        if not data:
            return None
        return cls(
            str(data.get("where") or "?"),
            data.get("exit_code"),
            data.get("seconds"),
            data.get("peak_memory_bytes"),
            bool(data.get("timed_out")),
            bool(data.get("oom_killed")),
            tuple(str(part) for part in data.get("command") or []),
            str(data.get("failure") or ""),
            tuple(data.get("log_tail") or []),
            dict(data),
        )


@dataclass(frozen=True)
class CaseResult:
    """One case: its runs, its comparisons (each with its overlay) and its DICOM SEG checks."""

    name: str
    dicom_dir: str | None = None
    output_mask: str | None = None  # None when the run wrote no mask
    run: RunSummary | None = None
    host_run: RunSummary | None = None
    comparisons: Mapping[str, Comparison] = field(default_factory=dict)  # kind -> comparison
    seg: tuple[CheckOutcome, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dicom_dir": self.dicom_dir,
            "output_mask": self.output_mask,
            "run": self.run.to_dict() if self.run else None,
            "host_run": self.host_run.to_dict() if self.host_run else None,
            "comparisons": {kind: comparison.to_dict() for kind, comparison in self.comparisons.items()},
            "seg": None if self.seg is None else {"outcomes": [o.to_dict() for o in self.seg]},
        }

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any] | None) -> CaseResult:
        data = data or {}
        seg = data.get("seg")
        return cls(
            name,
            data.get("dicom_dir"),
            data.get("output_mask"),
            RunSummary.from_dict(data.get("run")),
            RunSummary.from_dict(data.get("host_run")),
            {kind: Comparison.from_dict(c) for kind, c in (data.get("comparisons") or {}).items() if c},
            None if seg is None else tuple(CheckOutcome.from_dict(o) for o in seg.get("outcomes") or [] if o),
        )


@dataclass(frozen=True)
class Pin:
    """A pin test_pin checked: the profile's (or the app's) specifier and the version the image holds."""

    name: str
    expected: str
    found: str | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "expected": self.expected, "found": self.found, "passed": self.passed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pin:
        name, expected = str(data.get("name")), str(data.get("expected"))
        return cls(name, expected, data.get("found"), bool(data.get("passed")))


@dataclass(frozen=True)
class ImageSummary:
    """The gated image as the gate inspected it, with the pins its checks compared."""

    reference: str | None = None
    id: str | None = None
    profile: str | None = None
    platform: str | None = None
    size_bytes: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    pins: tuple[Pin, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "id": self.id,
            "profile": self.profile,
            "platform": self.platform,
            "size_bytes": self.size_bytes,
            "labels": dict(self.labels),
            "pins": [pin.to_dict() for pin in self.pins],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ImageSummary:
        data = data or {}
        pins = tuple(Pin.from_dict(p) for p in data.get("pins") or [] if p)
        return cls(
            data.get("reference"),
            data.get("id"),
            data.get("profile"),
            data.get("platform"),
            data.get("size_bytes"),
            dict(data.get("labels") or {}),
            pins,
        )


@dataclass(frozen=True)
class GateResults:
    """Everything the report shows: the verdict, its scope, the image, every check and every case."""

    verdict: str  # pass, partial, fail or interrupted
    started: str | None
    seconds: float | None
    image: ImageSummary
    checks: tuple[Check, ...]
    cases: tuple[CaseResult, ...]
    options: tuple[str, ...] = ()  # the selection options (-k, --no-host, --shard)
    deselected: tuple[str, ...] = ()
    shard: str | None = None  # "K/N" when this is one shard's run
    shard_cases: tuple[str, ...] = ()
    case_set: tuple[str, ...] = ()  # every case of the sharded set
    counts: Mapping[str, Any] = field(default_factory=dict)  # the verdict's counts and exit code
    app: Mapping[str, Any] = field(default_factory=dict)  # the contract's name, outputs, window
    shard_record: Mapping[str, Any] | None = None  # the shard's identity (shard.ShardPlan.record)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.failed]

    @property
    def not_evaluated(self) -> int:
        return sum(1 for check in self.checks if check.skipped)

    def checks_of(self, group: str) -> list[Check]:
        return [check for check in self.checks if check.group == group]

    def to_dict(self) -> dict[str, Any]:
        """metrics.json: what `from_dict` (and `nox -s merge`) reads back."""
        return {
            "verdict": self.verdict,
            "counts": dict(self.counts),
            "selection": {"options": list(self.options), "deselected": list(self.deselected)}
            | {"shard": self.shard},
            "shard": dict(self.shard_record) if self.shard_record else None,
            "started": self.started,
            "app": dict(self.app),
            "seconds": self.seconds,
            "image": self.image.to_dict(),
            "checks": [check.to_dict() for check in self.checks],
            "cases": {case.name: case.to_dict() for case in self.cases},
        }

    @classmethod
    def from_dict(
        cls, metrics: Mapping[str, Any], cases: Sequence[CaseResult] | None = None
    ) -> GateResults:
        """From metrics.json; `cases` given (the gate's own, overlays in memory) replace its cases."""
        selection = metrics.get("selection") or {}
        shard = metrics.get("shard") or {}
        if cases is None:
            cases = [CaseResult.from_dict(name, case) for name, case in (metrics.get("cases") or {}).items()]
        return cls(
            str(metrics.get("verdict") or "fail"),
            metrics.get("started"),
            metrics.get("seconds"),
            ImageSummary.from_dict(metrics.get("image")),
            tuple(Check.from_dict(check) for check in metrics.get("checks") or [] if check),
            tuple(cases),
            tuple(selection.get("options") or []),
            tuple(selection.get("deselected") or []),
            selection.get("shard"),
            tuple(shard.get("cases") or []),
            tuple((shard.get("case_set") or {}).get("names") or []),
            dict(metrics.get("counts") or {}),
            dict(metrics.get("app") or {}),
            metrics.get("shard"),
        )
