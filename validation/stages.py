"""The stage-line protocol between armgate and any app it gates, declared here once.

An app may log one line when a stage starts and one with its wall time when it ends:

    stage 'inference window 7/15' started
    stage 'inference window 7/15' took 81.20 s

(anything may precede a line on its log line: a timestamp, a logger name). The gate reads them back
from a kept log: a run cut short by its timeout or its memory limit says where the app was
(`stage_reached`), and metrics.json keeps each finished stage's time (`stage_times`). An app that logs
no stage lines is gated all the same; its failures then say only that its log has none.

The window count model (`window_count`) is MONAI's sliding-window scan, which sizes a case's timeout
from the series' geometry (validation/cases.py). An app that runs inside the image cannot import
this package, so it writes the lines with its own copy of the two templates (the demo app:
app/stages.py); tests/test_stages.py parses what that app emits with the parser below, so a copy that
drifts from this declaration fails there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

STARTED = "stage '{name}' started"
TOOK = "stage '{name}' took {seconds:.2f} s"
LINE = re.compile(r"stage '(?P<name>[^']+)' (?:started|took (?P<seconds>\d+(?:\.\d+)?) s)\s*$")
NO_STAGE_LINE = "before any stage line in its log"


def started_line(name: str) -> str:
    """The line an app logs when stage `name` starts."""
    return STARTED.format(name=name)


def took_line(name: str, seconds: float) -> str:
    """The line an app logs when stage `name` ends, `seconds` after it started."""
    return TOOK.format(name=name, seconds=seconds)


def parse(log: str) -> list[tuple[str, float | None]]:
    """(stage, seconds) per stage line, in log order; seconds is None on a 'started' line."""
    found: list[tuple[str, float | None]] = []
    for line in log.splitlines():
        match = LINE.search(line)
        if match:
            seconds = match.group("seconds")
            found.append((match.group("name"), float(seconds) if seconds is not None else None))
    return found


def stage_reached(log: str) -> str:
    """Where the app was when its log ends, as a phrase: "in stage 'X'" (started, not finished),
    "after stage 'X'" (finished, the next not started) or "before any stage line in its log"."""
    lines = parse(log)
    if not lines:
        return NO_STAGE_LINE
    name, seconds = lines[-1]
    return f"in stage '{name}'" if seconds is None else f"after stage '{name}'"


def stage_times(log: str) -> dict[str, float]:
    """Wall seconds of each finished stage, in the order they ran."""
    return {name: seconds for name, seconds in parse(log) if seconds is not None}


def window_count(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """How many windows MONAI's sliding_window_inference runs on an image (its padding and scan rule:
    a dimension smaller than the window is padded to it; windows step by int(roi * (1 - overlap)))."""
    total = 1
    for size, roi in zip(image_size, roi_size, strict=True):
        padded = max(int(size), int(roi))
        if padded == roi:
            continue
        step = max(int(roi * (1 - overlap)), 1)
        total *= math.ceil((padded - roi) / step) + 1
    return total
