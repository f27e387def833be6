"""Checks of the selected series' headers and pixel encodings, each failure naming the file and the fix.

They run after series selection and before any pixel is decoded, so a header the pipeline cannot use, or a
transfer syntax this installation cannot decode, ends the run within seconds with one line instead of a
traceback (or a long inference) later. Empty Type 2 attributes are legal and are not checked here.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

from input_checks import AppInputError

logger = logging.getLogger(__name__)

# Attributes the volume and its geometry are built from: keyword -> number of values (Type 1 in CT images).
REQUIRED_NUMBERS: Dict[str, int] = {
    "Rows": 1,
    "Columns": 1,
    "BitsAllocated": 1,
    "BitsStored": 1,
    "PixelRepresentation": 1,
    "SamplesPerPixel": 1,
    "PixelSpacing": 2,
    "ImageOrientationPatient": 6,
    "ImagePositionPatient": 3,
}
# Type 1 in the CT Image module; without them stored values cannot be turned into Hounsfield units.
RESCALE = ("RescaleIntercept", "RescaleSlope")
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


def file_of(dataset: Any) -> str:
    return str(getattr(dataset, "filename", None) or "an instance of the selected series")


def _numbers(dataset: Any, keyword: str) -> Optional[List[float]]:
    """The attribute's values as floats; None when missing or empty; ValueError when malformed."""
    if keyword not in dataset:
        return None
    value = dataset[keyword].value
    if value is None or value == "":
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        value = [value]
    return [float(v) for v in value]


def _stored_text(dataset: Any, keyword: str) -> str:
    """The value as stored in the file, for a message about a value pydicom cannot convert."""
    from pydicom.datadict import tag_for_keyword

    raw = dataset.get_item(tag_for_keyword(keyword))
    value = getattr(raw, "value", raw)
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return repr(text.strip()[:64])


def header_problem(dataset: Any) -> Optional[str]:
    """What makes this image unusable for the volume, or None."""
    for keyword, count in REQUIRED_NUMBERS.items():
        try:
            values = _numbers(dataset, keyword)
        except (TypeError, ValueError):
            return f"has a malformed {keyword} ({_stored_text(dataset, keyword)})"
        if values is None:
            state = "empty" if keyword in dataset else "missing"
            return f"has {keyword} {state} (required to build the volume)"
        if len(values) != count:
            return f"has {len(values)} values in {keyword}, not {count}"
    if int(dataset.SamplesPerPixel) != 1:
        return f"has SamplesPerPixel {int(dataset.SamplesPerPixel)} (a colour image, not CT)"
    photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric not in MONOCHROME:
        return f"has PhotometricInterpretation {photometric or 'empty'}, not MONOCHROME1/MONOCHROME2"
    for keyword in RESCALE:
        try:
            values = _numbers(dataset, keyword)
        except (TypeError, ValueError):
            return f"has a malformed {keyword} ({_stored_text(dataset, keyword)})"
        if values is None:
            state = "empty" if keyword in dataset else "missing"
            return f"has {keyword} {state} (Type 1 in CT images: needed for Hounsfield units)"
    return None


def check_series_headers(datasets: Sequence[Any], series_name: str) -> None:
    """Raises AppInputError naming the first file whose header the pipeline cannot use, or a duplicate."""
    seen: Dict[str, Any] = {}
    for dataset in datasets:
        problem = header_problem(dataset)
        if problem:
            raise AppInputError(
                f"input file {file_of(dataset)} of {series_name} {problem}; "
                "fix: export the series again with complete image headers"
            )
        sop_uid = str(dataset.SOPInstanceUID)
        if sop_uid in seen:
            raise AppInputError(
                f"input files {file_of(seen[sop_uid])} and {file_of(dataset)} are the same instance "
                f"(SOPInstanceUID {sop_uid}); fix: remove the duplicate copy"
            )
        seen[sop_uid] = dataset


def _syntax_name(syntax: Any) -> str:
    name = getattr(syntax, "name", str(syntax))
    return f"{name} ({syntax})" if name != str(syntax) else str(syntax)


def missing_decoder(dataset: Any) -> Optional[Tuple[str, str]]:
    """(transfer syntax, what is missing) when this installation cannot decode the pixel data, else None."""
    syntax = dataset.file_meta.TransferSyntaxUID
    try:
        from pydicom.pixels.decoders.base import get_decoder
    except ImportError:  # pydicom 2 (older bases): the pixel data handlers
        return _missing_handler_pydicom2(syntax)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return _syntax_name(syntax), "pydicom has no decoder for it"
    if decoder.is_available:
        return None
    options = "; ".join(
        dependency.replace(" - requires ", " plugin needs ") for dependency in decoder.missing_dependencies
    )
    return _syntax_name(syntax), f"no pixel decoder is installed for it (missing decoder: {options})"


def _missing_handler_pydicom2(syntax: Any) -> Optional[Tuple[str, str]]:
    import pydicom.config

    handlers = [h for h in pydicom.config.pixel_data_handlers if h.supports_transfer_syntax(syntax)]
    if any(h.is_available() for h in handlers):
        return None
    names = ", ".join(getattr(h, "HANDLER_NAME", h.__name__) for h in handlers) or "none"
    return _syntax_name(syntax), f"no pixel decoder is installed for it (missing decoder: one of {names})"


def check_decodable(datasets: Sequence[Any], series_name: str) -> None:
    """Raises AppInputError naming the syntax and the missing decoder before any pixel is decoded."""
    checked: Dict[str, Optional[Tuple[str, str]]] = {}
    for dataset in datasets:
        syntax = str(dataset.file_meta.TransferSyntaxUID)
        if syntax not in checked:
            checked[syntax] = missing_decoder(dataset)
            if checked[syntax] is None:
                logger.info("Transfer syntax %s: decoder available", syntax)
        found = checked[syntax]
        if found:
            name, missing = found
            raise AppInputError(
                f"input file {file_of(dataset)} of {series_name} is encoded as {name}, which this "
                f"installation cannot decode: {missing}; fix: install the decoder (see the app's README) "
                "or convert the series, e.g. with dcmdjpeg/gdcmconv --raw"
            )
