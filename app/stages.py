"""The app's stages: their names, the log lines that time them, and the parser that reads them back.

Each stage logs one line when it starts (so a log cut short by a timeout still says where the app
was) and one line with its wall time when it ends, e.g.::

    stage 'inference window 7/15' started
    stage 'inference window 7/15' took 81.20 s

Everything but the seconds is deterministic. The gate (validation/run.py) parses a kept log with
`stage_reached` below, so the names and the line format live only here. Standard library only: the
image imports this module flat from the app's folder, the gate as `app.stages`.
"""

from __future__ import annotations

import logging
import math
import re
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

logger = logging.getLogger("stages")

# The stages in the order the app runs them; {placeholders} are filled per window and per output.
IMPORTS = "imports"  # torch, MONAI and the SDK: minutes under emulation
INPUT_CHECKS = "input checks"  # every file's header, the model loads, the output folder is writable
APP_SET_UP = "app set-up"  # the operators' modules imported, the SDK application composed
DICOM_LOAD = "DICOM load"
SERIES_SELECTION = "series selection"
SERIES_TO_VOLUME = "series to volume"
PRE_TRANSFORMS = "pre-transforms"  # orientation, resampling to the model's spacing, intensity, crop
INFERENCE_WINDOW = "inference window {window}/{windows}"  # {window} is "k", or "k-l" for a batch
POST_TRANSFORMS = "post-transforms"  # softmax, argmax, invert back to the input grid
WRITE_OUTPUT = "write {output}"
STAGES = (
    IMPORTS,
    INPUT_CHECKS,
    APP_SET_UP,
    DICOM_LOAD,
    SERIES_SELECTION,
    SERIES_TO_VOLUME,
    PRE_TRANSFORMS,
    INFERENCE_WINDOW,
    POST_TRANSFORMS,
    WRITE_OUTPUT,
)
# A log without any stage line: the interpreter starting (this app), or an app that logs no stage
# lines (another team's app); stage_reached says only what the log shows.

_STARTED = "stage '{name}' started"
_TOOK = "stage '{name}' took {seconds:.2f} s"
_LINE = re.compile(r"stage '(?P<name>[^']+)' (?:started|took (?P<seconds>\d+(?:\.\d+)?) s)\s*$")


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Logs the start of `name`, then its wall time when the block ends (also when it raises)."""
    logger.info(_STARTED.format(name=name))
    started = time.perf_counter()
    try:
        yield
    finally:
        logger.info(_TOOK.format(name=name, seconds=time.perf_counter() - started))


def window_label(first: int, count: int, windows: int) -> str:
    """The stage name of `count` windows from 1-based `first` on, of `windows` in all."""
    window = str(first) if count == 1 else f"{first}-{first + count - 1}"
    return INFERENCE_WINDOW.format(window=window, windows=windows)


def window_count(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """How many windows MONAI's sliding_window_inference runs on an image (its padding and scan rule:
    a dimension smaller than the window is padded to it; windows step by int(roi * (1 - overlap)))."""
    total = 1
    for size, roi in zip(image_size, roi_size):  # noqa: B905 (strict= needs Python 3.10; the app runs on 3.9)
        padded = max(int(size), int(roi))
        if padded == roi:
            continue
        step = max(int(roi * (1 - overlap)), 1)
        total *= math.ceil((padded - roi) / step) + 1
    return total


def parse(log: str) -> List[Tuple[str, Optional[float]]]:
    """(stage, seconds) per stage line, in log order; seconds is None on a 'started' line."""
    found = []
    for line in log.splitlines():
        match = _LINE.search(line)
        if match:
            seconds = match.group("seconds")
            found.append((match.group("name"), float(seconds) if seconds is not None else None))
    return found


def stage_reached(log: str) -> str:
    """Where the app was when its log ends, as a phrase: "in stage 'X'" (started, not finished),
    "after stage 'X'" (finished, the next not started) or "before any stage line in its log"."""
    lines = parse(log)
    if not lines:
        return "before any stage line in its log"
    name, seconds = lines[-1]
    return f"in stage '{name}'" if seconds is None else f"after stage '{name}'"


def stage_times(log: str) -> Dict[str, float]:
    """Wall seconds of each finished stage, in the order they ran."""
    return {name: seconds for name, seconds in parse(log) if seconds is not None}
