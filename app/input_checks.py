"""Upfront checks of the run's folders and model, so a site gets one clear line instead of a traceback.

Policy for unreadable files: every file under the input folder (recursively; hidden files and DICOMDIR
aside) must be a complete DICOM instance. The app fails naming the first bad file instead of skipping it,
because a silently dropped slice changes the volume's geometry and therefore the segmentation.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
MODEL_FILE_NAME = "model.ts"


class AppInputError(Exception):
    """A problem with what the site passed in; the message names the file or folder and the fix."""


def _is_ignored(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return any(part.startswith(".") for part in parts) or path.name.upper() == "DICOMDIR"


def _list_candidate_files(input_dir: Path) -> List[Path]:
    """All regular files under input_dir, sorted so the run does not depend on directory order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(input_dir, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file() and not _is_ignored(path, input_dir):
                found.append(path)
    return found


def _expected_pixel_bytes(dataset) -> Optional[int]:
    """Pixel data length for native (uncompressed) encodings; None when it cannot be known upfront."""
    transfer_syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    bits = int(dataset.get("BitsAllocated", 0) or 0)
    try:
        if transfer_syntax is None or transfer_syntax.is_compressed or bits < 8:
            return None
    except ValueError:  # a private transfer syntax pydicom does not know
        return None
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    return int(dataset.Rows) * int(dataset.Columns) * samples * (bits // 8) * frames


def dicom_file_problem(path: Path) -> Optional[str]:
    """Returns why path is not a complete DICOM instance, or None when it is fine."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        dataset = dcmread(str(path))
    except InvalidDicomError:
        return "is not a DICOM file (no DICM header)"
    except (OSError, ValueError, EOFError, KeyError, TypeError) as error:
        return f"cannot be read as DICOM ({type(error).__name__}: {error})"
    missing = [keyword for keyword in REQUIRED_UIDS if not dataset.get(keyword)]
    if missing:
        return f"is an incomplete or truncated DICOM file (missing {', '.join(missing)})"
    if "Rows" in dataset and "Columns" in dataset:
        if "PixelData" not in dataset:
            return "is a truncated DICOM image (no pixel data)"
        expected = _expected_pixel_bytes(dataset)
        actual = len(dataset.PixelData)
        if expected is not None and actual < expected:
            return f"is a truncated DICOM image ({actual} of {expected} pixel data bytes)"
    return None


def check_input_dir(input_dir: Path) -> List[Path]:
    """Returns the DICOM files to load, or raises AppInputError naming the folder or the bad file."""
    if not input_dir.exists():
        raise AppInputError(
            f"input folder {input_dir} does not exist; fix: pass -i with the DICOM series folder"
        )
    if not input_dir.is_dir():
        raise AppInputError(
            f"input {input_dir} is not a folder; fix: pass -i with the folder holding the DICOM files"
        )
    if not os.access(str(input_dir), os.R_OK | os.X_OK):
        raise AppInputError(
            f"input folder {input_dir} is not readable; fix: grant read access to the app's user"
        )
    files = _list_candidate_files(input_dir)
    problems: List[Tuple[Path, str]] = []
    good: List[Path] = []
    for path in files:
        problem = dicom_file_problem(path)
        if problem is None:
            good.append(path)
        else:
            problems.append((path, problem))
    if not good:
        raise AppInputError(
            f"input folder {input_dir} holds no DICOM files ({len(files)} non-DICOM files); "
            "fix: pass -i with the folder that holds the CT series"
        )
    if problems:
        path, problem = problems[0]
        others = f" (and {len(problems) - 1} more bad files)" if len(problems) > 1 else ""
        raise AppInputError(
            f"input file {path} {problem}{others}; fix: remove or replace it, the app does not segment "
            "a series with missing or damaged slices"
        )
    return good


def resolve_model_file(model_path: Path) -> Path:
    """Returns the TorchScript file to load: model_path, or the model.ts (or only file) in that folder."""
    if model_path.is_dir():
        candidates = (
            [model_path / MODEL_FILE_NAME]
            if (model_path / MODEL_FILE_NAME).is_file()
            else [
                child
                for child in sorted(model_path.iterdir())
                if child.is_file() and not child.name.startswith(".")
            ]
        )
        if len(candidates) != 1:
            raise AppInputError(
                f"model folder {model_path} holds {len(candidates)} candidate files; "
                f"fix: pass -m with the TorchScript file, e.g. {model_path / MODEL_FILE_NAME}"
            )
        model_path = candidates[0]
    if not model_path.is_file():
        raise AppInputError(
            f"model file {model_path} does not exist; fix: pass -m with the TorchScript model.ts"
        )
    _check_torchscript(model_path)
    return model_path


def _check_torchscript(model_file: Path) -> None:
    """Loads the model once here so a wrong file fails before the SDK starts, with a clear line."""
    import torch

    try:
        torch.jit.load(str(model_file), map_location="cpu")
    except Exception:
        raise AppInputError(
            f"model file {model_file} is not a loadable TorchScript model; "
            "fix: pass -m with a file saved by torch.jit.save (model.ts)"
        ) from None


def check_output_dir(output_dir: Path) -> None:
    """Creates output_dir if needed and proves it is writable by writing a probe file."""
    if output_dir.exists() and not output_dir.is_dir():
        raise AppInputError(f"output {output_dir} is a file, not a folder; fix: pass -o with a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=str(output_dir), prefix=".armgate-probe-"):
            pass
    except OSError as error:
        raise AppInputError(
            f"output folder {output_dir} is not writable ({error.strerror or type(error).__name__}); "
            "fix: pass -o with a folder the app's user can write"
        ) from None


def prepare_workdir(requested: Optional[str]) -> Path:
    """Creates this run's private SDK work folder; the caller deletes it after the run.

    The SDK would otherwise create .monai_workdir in the current folder, which fails on a read-only root
    filesystem. The folder goes under MONAI_WORKDIR (or -w) when set, else under the system temp folder;
    a private subfolder keeps concurrent runs apart and leaves nothing behind.
    """
    parent = Path(requested).absolute() if requested else None
    try:
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="armgate-workdir-", dir=None if parent is None else str(parent)))
    except OSError as error:
        where = f"work folder {parent} (MONAI_WORKDIR or -w)" if parent else "the system temp folder"
        raise AppInputError(
            f"{where} is not writable ({error.strerror or error}); "
            "fix: point MONAI_WORKDIR (or TMPDIR) at a writable folder such as a tmpfs"
        ) from None
