"""Writers of the app's two results: mask.nii.gz (NIfTI label map) and seg.dcm (DICOM SEG)."""

from __future__ import annotations

import datetime
import gzip
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import monai.deploy.core as md
import numpy as np
from app_config import MASK_FILE_NAME, SEG_FILE_NAME, load_labels
from monai.deploy.core import DataPath, ExecutionContext, Image, InputContext, IOType, Operator, OutputContext
from monai.deploy.core.domain.dicom_series import DICOMSeries
from monai.deploy.operators.dicom_seg_writer_operator import (
    DICOMSegmentationWriterOperator,
    SegmentDescription,
)
from stages import WRITE_OUTPUT, stage
from volume_geometry import ras_affine_from_metadata

logger = logging.getLogger(__name__)

SEG_SERIES_NUMBER = 900
LATERALITY_CODES = {"right": ("24028007", "SCT", "Right"), "left": ("7771000", "SCT", "Left")}


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path: Path, payload: bytes) -> None:
    """Writes via a temp file and rename so a crash never leaves a half-written result behind."""
    handle, temp_name = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
        os.chmod(temp_name, 0o666 & ~_current_umask())  # mkstemp makes 0600; results are for others too
        os.replace(temp_name, str(path))
    except BaseException:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise


def nifti_mask_bytes(labels_dhw: np.ndarray, affine: np.ndarray) -> bytes:
    """Gzipped NIfTI-1 bytes of a (D, H, W) label map, stored as (i, j, k) = (W, H, D); see volume_geometry.

    Compressed here with mtime 0 rather than by nibabel, whose gzip header time is not fixed in older
    releases (the clara-agx base), so identical input gives identical bytes.
    """
    import nibabel as nib

    data = np.ascontiguousarray(np.asarray(labels_dhw, dtype=np.uint8).T)
    image = nib.Nifti1Image(data, affine)
    image.header.set_data_dtype(np.uint8)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


@md.input("seg_image", Image, IOType.IN_MEMORY)
@md.output("mask", DataPath, IOType.DISK)
@md.env(pip_packages=["nibabel"])
class NiftiMaskWriterOperator(Operator):
    """Writes the label map as mask.nii.gz on the input series' voxel grid, with a RAS affine."""

    def compute(self, op_input: InputContext, op_output: OutputContext, context: ExecutionContext) -> None:
        with stage(WRITE_OUTPUT.format(output=MASK_FILE_NAME)):
            self._write(op_input, op_output)

    def _write(self, op_input: InputContext, op_output: OutputContext) -> None:
        seg_image = op_input.get("seg_image")
        output_path = Path(op_output.get().path) / MASK_FILE_NAME
        labels = np.asarray(seg_image.asnumpy())
        write_atomically(
            output_path, nifti_mask_bytes(labels, ras_affine_from_metadata(seg_image.metadata()))
        )
        names = {int(label["value"]): label["name"] for label in load_labels()["labels"]}
        values, counts = np.unique(labels, return_counts=True)
        found = (
            ", ".join(f"{names.get(int(v), v)}={counts[i]}" for i, v in enumerate(values) if v != 0) or "none"
        )
        logger.info("Wrote %s, shape (i, j, k) %s; voxels per organ: %s", output_path, labels.T.shape, found)


def _code(triple: List[str]) -> Any:
    from pydicom.sr.coding import Code

    scheme, value, meaning = triple
    return Code(value, scheme, meaning)


class OrganSegWriterOperator(DICOMSegmentationWriterOperator):
    """The SDK's DICOM SEG writer, writing seg.dcm with one segment per organ present in the mask.

    highdicom rejects described-but-empty segments, so the present labels are renumbered 1..K and only
    their descriptions are written; the segment label keeps the organ's name. An empty mask writes no SEG.
    """

    def __init__(self) -> None:
        config = load_labels()
        algorithm = config["algorithm"]
        self._labels: Dict[int, Dict[str, Any]] = {int(label["value"]): label for label in config["labels"]}
        self._descriptions = {
            value: SegmentDescription(
                segment_label=str(label["name"]).capitalize(),
                segmented_property_category=_code(label["category"]),
                segmented_property_type=_code(label["type"]),
                algorithm_name=str(algorithm["name"]),
                algorithm_version=str(algorithm["version"]),
            )
            for value, label in self._labels.items()
        }
        self._algorithm_version = str(algorithm["version"])
        super().__init__(list(self._descriptions.values()))

    def _segment_description(self, label_value: int, segment_number: int) -> Any:
        import highdicom as hd

        description = self._descriptions[label_value].to_segment_description(segment_number)
        side = self._labels[label_value].get("side")
        if side:
            value, scheme, meaning = LATERALITY_CODES[side]
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept(value, scheme, meaning)
            ]
        return description

    def create_dicom_seg(self, image: np.ndarray, dicom_series: DICOMSeries, output_dir: Path) -> None:
        with stage(WRITE_OUTPUT.format(output=SEG_FILE_NAME)):
            self._create_dicom_seg(image, dicom_series, output_dir)

    def _create_dicom_seg(self, image: np.ndarray, dicom_series: DICOMSeries, output_dir: Path) -> None:
        import highdicom as hd

        labels = np.asarray(image, dtype=np.uint8)
        present = [int(v) for v in np.unique(labels) if v != 0]
        unknown = [v for v in present if v not in self._labels]
        if unknown:
            raise RuntimeError(f"mask holds label values {unknown} that config/labels.json does not define")
        if not present:
            logger.warning(
                "The mask is empty (no organ found): wrote %s only, no %s", MASK_FILE_NAME, SEG_FILE_NAME
            )
            return
        renumber = np.zeros(256, dtype=np.uint8)
        for segment_number, value in enumerate(present, 1):
            renumber[value] = segment_number
        source_images = [instance.get_native_sop_instance() for instance in dicom_series.get_sop_instances()]
        seg = hd.seg.Segmentation(
            source_images=source_images,
            pixel_array=renumber[labels],
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[self._segment_description(v, n) for n, v in enumerate(present, 1)],
            series_instance_uid=hd.UID(),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="ArmGate",
            manufacturer_model_name="MONAI Deploy multi-organ CT segmentation",
            software_versions=self._algorithm_version,
            device_serial_number="0000",
            omit_empty_frames=True,
        )
        # Set as attributes, not constructor arguments, which older highdicom (Python 3.8 bases) lacks.
        seg.ContentLabel = "ORGANS"
        seg.ContentDescription = "BTCV multi-organ segmentation"
        seg.SeriesDescription = "Multi-organ segmentation"
        now = datetime.datetime.now()
        seg.SeriesDate, seg.SeriesTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        output_path = Path(output_dir) / SEG_FILE_NAME
        buffer = io.BytesIO()
        seg.save_as(buffer)
        write_atomically(output_path, buffer.getvalue())
        names = ", ".join(str(self._labels[v]["name"]) for v in present)
        logger.info("Wrote %s with %d segments: %s", output_path, len(present), names)
