"""The app's stages: their names, and the log lines that time them.

Each stage logs one line when it starts (so a log cut short by a timeout still says where the app
was) and one line with its wall time when it ends, e.g.::

    stage 'inference window 7/15' started
    stage 'inference window 7/15' took 81.20 s

Everything but the seconds is deterministic. The line format is armgate's stage-line protocol,
declared in validation/stages.py, which also parses the lines back; the image holds the app alone, so
this module writes them with its own copy of the two templates, and tests/test_stages.py parses what
it emits with the gate's parser. Standard library only: the image imports this module flat from the
app's folder.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from typing import Iterator, Sequence

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
_STARTED = "stage '{name}' started"
_TOOK = "stage '{name}' took {seconds:.2f} s"


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
    """How many windows MONAI's sliding_window_inference runs on an image, to number them in the stage
    names: the gate's window count model (validation/stages.py), which tests/test_stages.py holds equal."""
    total = 1
    for size, roi in zip(image_size, roi_size):  # noqa: B905 (strict= needs Python 3.10; the app runs on 3.9)
        padded = max(int(size), int(roi))
        if padded == roi:
            continue
        step = max(int(roi * (1 - overlap)), 1)
        total *= math.ceil((padded - roi) / step) + 1
    return total
