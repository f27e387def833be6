"""The app's data files (labels, series selection rules) and the few fixed pipeline settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

APP_DIR = Path(__file__).resolve().parent
CONFIG_DIR = APP_DIR / "config"
LABELS_FILE = CONFIG_DIR / "labels.json"
SERIES_SELECTION_FILE = CONFIG_DIR / "series_selection.json"

MASK_FILE_NAME = "mask.nii.gz"
SEG_FILE_NAME = "seg.dcm"

# Model contract: N x 1 x 96^3 float in 0..1 -> N x (1 + labels) x 96^3 logits.
ROI_SIZE = (96, 96, 96)
TARGET_SPACING_MM = (1.5, 1.5, 2.0)
HU_WINDOW = (-175.0, 250.0)
# 0.25 overlap and 2 windows per batch keep the CPU run short under QEMU emulation.
SW_OVERLAP = 0.25
SW_BATCH_SIZE = 2


def _read_json(path: Path) -> Dict[str, Any]:
    with path.open("r", encoding="utf-8") as handle:
        return json.load(handle)


def load_labels() -> Dict[str, Any]:
    """Returns labels.json, checked: label values must run 1..N so they equal the model's output channels."""
    config = _read_json(LABELS_FILE)
    values = [int(label["value"]) for label in config["labels"]]
    if values != list(range(1, len(values) + 1)):
        raise ValueError(f"{LABELS_FILE}: label values must be 1..N in order, got {values}")
    return config


def label_names() -> Dict[int, str]:
    """Maps mask voxel value to organ name, e.g. {1: 'spleen', ...}."""
    return {int(label["value"]): str(label["name"]) for label in load_labels()["labels"]}


def load_series_selection_text() -> str:
    """Returns the selection rules as JSON text, the form the SDK's selector operator takes."""
    return SERIES_SELECTION_FILE.read_text(encoding="utf-8")


def selections() -> List[Dict[str, Any]]:
    return list(_read_json(SERIES_SELECTION_FILE)["selections"])
