"""DICOM loading and series selection: the SDK operators, made strict and deterministic."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from input_checks import AppInputError, read_dicom
from monai.deploy.core import ExecutionContext, InputContext, OutputContext
from monai.deploy.core.domain.dicom_series import DICOMSeries
from monai.deploy.core.domain.dicom_series_selection import SelectedSeries, StudySelectedSeries
from monai.deploy.core.domain.dicom_study import DICOMStudy
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
from series_checks import check_decodable, check_series_headers
from stages import DICOM_LOAD, SERIES_SELECTION, SERIES_TO_VOLUME, stage
from volume_geometry import check_series_geometry, is_axial

logger = logging.getLogger(__name__)

ORIENTATION_CHECKS: Dict[str, Callable[[Sequence[float]], bool]] = {"axial": is_axial}
MAX_SERIES_LISTED = 5
SERIES_TEXT_ATTRIBUTES = (
    "SeriesDate",
    "SeriesTime",
    "Modality",
    "SeriesDescription",
    "BodyPartExamined",
    "PatientPosition",
    "Laterality",
)


def _floats(value: Any, count: int) -> Optional[List[float]]:
    """count floats from a multi-valued DS, or None when empty, short or malformed (checked later)."""
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return values if len(values) == count else None


def _integer(value: Any) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class VettedDICOMDataLoaderOperator(DICOMDataLoaderOperator):
    """Loads only the files input_checks vetted, in sorted order, taking headers as scanners write them.

    The SDK lists the folder itself in directory order and would choke on DICOMDIR or damaged files; it also
    refuses files without the 128-byte preamble and fails on empty Type 2 attributes such as SeriesNumber.
    """

    def __init__(self, dicom_files: Sequence[Path], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._dicom_files = [str(path) for path in dicom_files]

    def compute(self, op_input: InputContext, op_output: OutputContext, context: ExecutionContext) -> None:
        with stage(DICOM_LOAD):
            super().compute(op_input, op_output, context)

    def _list_files(self, path: Any, files: List[str]) -> None:
        files.extend(self._dicom_files)

    def _load_data(self, files: List[str]) -> List[DICOMStudy]:
        """The SDK's grouping by Study and Series Instance UID (vetted non-empty), read with read_dicom."""
        studies: Dict[str, DICOMStudy] = {}
        series_by_uid: Dict[Tuple[str, str], DICOMSeries] = {}
        for file in files:
            dataset = read_dicom(Path(file))
            study_uid, series_uid = str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID)
            if study_uid not in studies:
                studies[study_uid] = DICOMStudy(study_uid)
                self.populate_study_attributes(studies[study_uid], dataset)
            key = (study_uid, series_uid)
            if key not in series_by_uid:
                series_by_uid[key] = DICOMSeries(series_uid)
                self.populate_series_attributes(series_by_uid[key], dataset)
                studies[study_uid].add_series(series_by_uid[key])
            series_by_uid[key].add_sop_instance(dataset)
        return list(studies.values())

    def populate_series_attributes(self, series: DICOMSeries, sop_instance: Any) -> None:
        """The SDK's series attributes; empty Type 2 values (SeriesNumber, PixelSpacing...) are left unset."""
        for keyword in SERIES_TEXT_ATTRIBUTES:
            value = sop_instance.get(keyword)
            if value is not None:
                setattr(series, keyword, value)
        number = _integer(sop_instance.get("SeriesNumber"))
        if number is not None:
            series.SeriesNumber = number
        spacing = _floats(sop_instance.get("PixelSpacing") or sop_instance.get("ImagerPixelSpacing"), 2)
        if spacing:
            series.row_pixel_spacing, series.col_pixel_spacing = spacing
        orientation = _floats(sop_instance.get("ImageOrientationPatient"), 6)
        if orientation:
            series.row_direction_cosine = orientation[:3]
            series.col_direction_cosine = orientation[3:]


def _orientation_of(series: DICOMSeries) -> str:
    first = series.get_sop_instances()[0].get_native_sop_instance()
    orientation = first.get("ImageOrientationPatient")
    if not orientation:
        return "no orientation"
    return "axial" if is_axial([float(v) for v in orientation]) else "non-axial"


def describe_series(series: DICOMSeries) -> str:
    """One short phrase per series for error messages, e.g. "MR 'T2 ax' ['ORIGINAL', ...] 20 images axial"."""
    first = series.get_sop_instances()[0].get_native_sop_instance()
    image_type = list(first.get("ImageType", []) or [])
    return (
        f"{series.Modality or '?'} '{series.SeriesDescription or ''}' {image_type} "
        f"{len(series.get_sop_instances())} images {_orientation_of(series)}"
    )


class CTAxialSeriesSelectorOperator(DICOMSeriesSelectorOperator):
    """Selects exactly one CT axial series with the SDK's rule matching plus this app's orientation check.

    Rules come from config/series_selection.json. All SDK matches are collected, those failing a
    selection's "slice_orientation" are dropped, and the series with the most instances wins (ties: lowest
    SeriesInstanceUID) so the choice does not depend on file order. No match is an AppInputError.
    """

    def __init__(self, rules: str, input_dir: Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(rules, True, *args, **kwargs)
        self._input_dir = input_dir

    def compute(self, op_input: InputContext, op_output: OutputContext, context: ExecutionContext) -> None:
        with stage(SERIES_SELECTION):
            super().compute(op_input, op_output, context)

    def filter(self, selection_rules: Any, dicom_study_list: List[DICOMStudy], all_matched: bool = False):
        matches = super().filter(selection_rules, dicom_study_list, True)
        wanted_orientation = {
            str(selection.get("name", "")).strip(): selection.get("slice_orientation")
            for selection in selection_rules.get("selections", [])
        }
        candidates: List[Tuple[DICOMStudy, SelectedSeries]] = []
        for study_selected in matches:
            for selected in study_selected.selected_series:
                orientation = wanted_orientation.get(selected.selection_name)
                if orientation and _orientation_of(selected.series) != orientation:
                    continue
                candidates.append((study_selected.study, selected))
        if not candidates:
            raise AppInputError(self._no_match_message(dicom_study_list))
        study, chosen = min(
            candidates,
            key=lambda c: (-len(c[1].series.get_sop_instances()), str(c[1].series.SeriesInstanceUID)),
        )
        series = chosen.series
        logger.info("Selected series %s: %s", series.SeriesInstanceUID, describe_series(series))
        if len(candidates) > 1:
            logger.warning(
                "%d series matched the CT axial rules; using the one with most images", len(candidates)
            )
        datasets = [instance.get_native_sop_instance() for instance in series.get_sop_instances()]
        series_name = f"selected series {series.SeriesInstanceUID} in {self._input_dir}"
        if len(datasets) > 1:  # a single image is refused by the geometry check with its own line
            check_series_headers(datasets, series_name)
        check_series_geometry(datasets, series_name)
        check_decodable(datasets, series_name)
        result = StudySelectedSeries(study)
        result.add_selected_series(chosen)
        return [result]

    def _no_match_message(self, dicom_study_list: List[DICOMStudy]) -> str:
        all_series = [series for study in dicom_study_list for series in study.get_all_series()]
        found = "; ".join(describe_series(series) for series in all_series[:MAX_SERIES_LISTED])
        if len(all_series) > MAX_SERIES_LISTED:
            found += f"; and {len(all_series) - MAX_SERIES_LISTED} more"
        return (
            f"input folder {self._input_dir} has no CT axial series (found: {found}); "
            "fix: supply a study with an axial CT series, or adapt app/config/series_selection.json"
        )


class TimedSeriesToVolumeOperator(DICOMSeriesToVolumeOperator):
    """The SDK's series-to-volume operator, timed as a stage of its own."""

    def compute(self, op_input: InputContext, op_output: OutputContext, context: ExecutionContext) -> None:
        with stage(SERIES_TO_VOLUME):
            super().compute(op_input, op_output, context)
