"""The MONAI Deploy application: DICOM in, multi-organ mask.nii.gz and seg.dcm out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import monai.deploy.core as md
from app_config import load_series_selection_text
from monai.deploy.core import Application
from operators.dicom_input import (
    CTAxialSeriesSelectorOperator,
    TimedSeriesToVolumeOperator,
    VettedDICOMDataLoaderOperator,
)
from operators.multiorgan_seg_operator import MultiOrganSegOperator
from operators.result_writers import NiftiMaskWriterOperator, OrganSegWriterOperator

SERIES_LIST = "study_selected_series_list"


@md.resource(cpu=1, memory="4Gi")
@md.env(pip_packages=str(Path(__file__).resolve().parent / "requirements.txt"))
class MultiOrganSegApp(Application):
    """Segments 13 abdominal organs (BTCV labels) in an axial CT series.

    DICOMDataLoader -> DICOMSeriesSelector (CT axial) -> DICOMSeriesToVolume -> MultiOrganSeg
    -> NIfTI mask writer and DICOM SEG writer (both leaves, so both write to the output folder).
    """

    name = "multiorgan-seg"

    def __init__(self, input_dir: Path, dicom_files: Sequence[Path], *args: Any, **kwargs: Any) -> None:
        # compose() runs inside the base constructor, so its inputs must be set first.
        self._input_dir = input_dir
        self._dicom_files = list(dicom_files)
        super().__init__(*args, **kwargs)

    def compose(self) -> None:
        loader = VettedDICOMDataLoaderOperator(self._dicom_files)
        selector = CTAxialSeriesSelectorOperator(load_series_selection_text(), self._input_dir)
        to_volume = TimedSeriesToVolumeOperator()
        segmenter = MultiOrganSegOperator()
        nifti_writer = NiftiMaskWriterOperator()
        seg_writer = OrganSegWriterOperator()

        self.add_flow(loader, selector, {"dicom_study_list": "dicom_study_list"})
        self.add_flow(selector, to_volume, {SERIES_LIST: SERIES_LIST})
        self.add_flow(to_volume, segmenter, {"image": "image"})
        self.add_flow(segmenter, nifti_writer, {"seg_image": "seg_image"})
        self.add_flow(segmenter, seg_writer, {"seg_image": "seg_image"})
        self.add_flow(selector, seg_writer, {SERIES_LIST: SERIES_LIST})
