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
        return _missing_handler_pydicom2(dataset)
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


# pydicom 2's pylibjpeg handler decodes a syntax only when the plugin for it is installed.
PYLIBJPEG_PLUGINS = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",
}
# What each pydicom 2 handler needs installed, for the message (keyed by the handler module's name).
PYDICOM2_NEEDS = {
    "numpy_handler": "numpy",
    "rle_handler": "numpy",
    "gdcm_handler": "python-gdcm",
    "jpeg_ls_handler": "CharPyLS (module jpeg_ls)",
}
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
PILLOW_JPEG = ("1.2.840.10008.1.2.4.50", JPEG_EXTENDED)


def _pydicom2_lacks(handler: Any, dataset: Any) -> Optional[str]:
    """None when this pydicom 2 handler can decode the dataset; else what it needs ("" if nothing helps)."""
    syntax = str(dataset.file_meta.TransferSyntaxUID)
    kind = handler.__name__.rsplit(".", 1)[-1]
    if kind == "pylibjpeg_handler":
        plugin = PYLIBJPEG_PLUGINS.get(syntax, "its plugin")
        usable = handler.is_available() and syntax in getattr(handler, "_DECODERS", {})
        return None if usable else f"pylibjpeg with {plugin}"
    if kind == "pillow_handler":
        if not handler.is_available():
            return "Pillow"
        if syntax == JPEG_EXTENDED and int(dataset.BitsAllocated) != 8:
            return ""  # pydicom 2's Pillow handler decodes JPEG extended only with Bits Allocated 8
        codec_ok = handler.HAVE_JPEG if syntax in PILLOW_JPEG else handler.HAVE_JPEG2K
        return None if codec_ok else "Pillow built with its JPEG and JPEG 2000 codecs"
    return None if handler.is_available() else PYDICOM2_NEEDS.get(kind, kind)


def _missing_handler_pydicom2(dataset: Any) -> Optional[Tuple[str, str]]:
    import pydicom.config

    syntax = dataset.file_meta.TransferSyntaxUID
    handlers = [h for h in pydicom.config.pixel_data_handlers if h.supports_transfer_syntax(syntax)]
    lacks = [_pydicom2_lacks(handler, dataset) for handler in handlers]
    if any(lack is None for lack in lacks):
        return None
    if not handlers:
        return _syntax_name(syntax), "pydicom has no decoder for it"
    options = " or ".join(dict.fromkeys(lack for lack in lacks if lack)) or "none on pydicom 2"
    return _syntax_name(syntax), f"no pixel decoder is installed for it (missing decoder: {options})"


def prefer_pylibjpeg_pydicom2() -> None:
    """On pydicom 2, try the pylibjpeg handler before Pillow's, as pydicom 3 orders its plugins.

    pydicom 2 tries Pillow first; Pillow's libjpeg-turbo and pylibjpeg's libjpeg round some lossy JPEG
    baseline pixels differently by one, so the same lossy series would decode differently on the two
    pydicom versions. Lossless syntaxes decode the same either way."""
    import pydicom.config

    if int(pydicom.__version__.split(".")[0]) >= 3:
        return  # pydicom 3 already tries pylibjpeg before Pillow
    from pydicom.pixel_data_handlers import pillow_handler, pylibjpeg_handler

    handlers = pydicom.config.pixel_data_handlers
    if pylibjpeg_handler in handlers and pillow_handler in handlers:
        handlers.remove(pylibjpeg_handler)
        handlers.insert(handlers.index(pillow_handler), pylibjpeg_handler)


def check_decodable(datasets: Sequence[Any], series_name: str) -> None:
    """Raises AppInputError naming the syntax and the missing decoder before any pixel is decoded.

    On pydicom 2 it also puts the pylibjpeg handler first, so the decoder checked is the one that decodes."""
    prefer_pylibjpeg_pydicom2()
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
