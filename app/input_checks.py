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
NOT_DICOM = "is not a DICOM file"
DAMAGED_FIX = "fix: remove or replace it; the app does not segment a series with missing or damaged slices"


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
    try:
        bits = int(dataset.get("BitsAllocated", 0) or 0)
        if transfer_syntax is None or transfer_syntax.is_compressed or bits < 8:
            return None
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        samples = int(dataset.get("SamplesPerPixel", 1) or 1)
        return int(dataset.Rows or 0) * int(dataset.Columns or 0) * samples * (bits // 8) * frames
    except (ValueError, TypeError):  # a private transfer syntax or a malformed value: judged later
        return None


class NotDicomError(Exception):
    """The file is not DICOM at all (no DICM prefix and no recognisable dataset)."""


def _looks_like_dicom(dataset) -> bool:
    """A file read without the DICM prefix counts as DICOM only if it names a valid SOP Class."""
    from pydicom.uid import UID

    try:
        sop_class = dataset.get("SOPClassUID")
        return bool(sop_class) and UID(str(sop_class)).is_valid and len(dataset) > 3
    except Exception:
        return False


def read_dicom(path: Path, stop_before_pixels: bool = False):
    """Reads a DICOM file, also one without the 128-byte preamble or file meta, as some exporters write it.

    A bare dataset gets the transfer syntax pydicom detected (implicit or explicit VR, little or big endian)
    recorded in its file meta, so its pixel data can be decoded. Raises NotDicomError for anything else.
    """
    from pydicom import dcmread
    from pydicom.dataset import FileMetaDataset
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    try:
        return dcmread(str(path), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        pass
    try:
        dataset = dcmread(str(path), stop_before_pixels=stop_before_pixels, force=True)
    except Exception:
        raise NotDicomError() from None
    if not _looks_like_dicom(dataset):
        raise NotDicomError()
    if not hasattr(dataset, "file_meta"):
        dataset.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in dataset.file_meta:
        if hasattr(dataset, "original_encoding"):  # pydicom 3
            implicit, little = dataset.original_encoding
        else:  # pydicom 2
            implicit, little = dataset.is_implicit_VR, dataset.is_little_endian
        dataset.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return dataset


def dicom_file_problem(path: Path) -> Optional[str]:
    """Returns why path is not a usable DICOM instance, or None when it is fine.

    The messages say what is wrong with a DICOM file (e.g. an empty UID) distinctly from "not DICOM", so an
    anonymized export is not mistaken for a folder of other files.
    """
    try:
        dataset = read_dicom(path)
    except NotDicomError:
        return NOT_DICOM
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as error:
        return f"cannot be read as DICOM ({type(error).__name__}: {_first_line(error)}); {DAMAGED_FIX}"
    for keyword in REQUIRED_UIDS:
        if keyword not in dataset:
            return (
                f"is DICOM but has no {keyword} (a damaged, truncated or incompletely anonymized file); "
                f"fix: export the series again with its UIDs"
            )
        if not str(dataset[keyword].value or "").strip():
            return (
                f"is DICOM but its {keyword} is empty (as some anonymizers leave it); the series cannot be "
                "grouped or referenced by the DICOM SEG without it; fix: export again with UIDs kept or "
                "replaced consistently, not blanked"
            )
    if "Rows" in dataset and "Columns" in dataset:
        if "PixelData" not in dataset:
            return "is a truncated DICOM image (no pixel data); " + DAMAGED_FIX
        expected = _expected_pixel_bytes(dataset)
        actual = len(dataset.PixelData)
        if expected is not None and actual < expected:
            return f"is a truncated DICOM image ({actual} of {expected} pixel data bytes); {DAMAGED_FIX}"
    return None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


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
    dicom_problems = [(path, problem) for path, problem in problems if problem != NOT_DICOM]
    if not good and not dicom_problems:
        found = f"{len(files)} files, none DICOM, e.g. {files[0].name}" if files else "it is empty"
        raise AppInputError(
            f"input folder {input_dir} holds no DICOM files ({found}); "
            "fix: pass -i with the folder that holds the CT series"
        )
    if problems:
        path, problem = (dicom_problems or problems)[0]
        if problem == NOT_DICOM:
            problem = f"is not a DICOM file (no DICM header and no DICOM dataset); {DAMAGED_FIX}"
        others = f" ({len(problems) - 1} more files have problems)" if len(problems) > 1 else ""
        raise AppInputError(f"input file {path} {problem}{others}")
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
