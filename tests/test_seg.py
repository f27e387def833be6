"""DICOM SEG validation against a tiny synthetic CT series built here with pydicom and highdicom."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from validation import seg
from validation.errors import GateError

NAMES = {1: "liver", 2: "right kidney"}
SHAPE = (4, 16, 16)  # slices, rows, columns


def make_ct_series(directory: Path, study_uid: str | None = None) -> list[Dataset]:
    """A 4-slice 16x16 CT series written to `directory`, one file per slice."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, frame_uid = study_uid or generate_uid(), generate_uid(), generate_uid()
    slices = []
    for index in range(SHAPE[0]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
            "Phantom^Tiny",
            "P1",
            "19700101",
            "O",
        )
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", "A1"
        ds.ReferringPhysicianName, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "", "CT", 1, index + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * index]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 2.0
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = (
            SHAPE[1],
            SHAPE[2],
            1,
            "MONOCHROME2",
        )
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.zeros(SHAPE[1:], dtype=np.int16).tobytes()
        ds.save_as(directory / f"slice{index}.dcm", enforce_file_format=True)
        slices.append(ds)
    return slices


def label_map() -> np.ndarray:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[1:3, 2:8, 3:9] = 1
    labels[0:2, 10:14, 10:13] = 2
    return labels


def make_seg(path: Path, source: list[Dataset], labels: np.ndarray, segment_names: list[str]) -> Path:
    """A BINARY SEG like the app's: present labels renumbered 1..K, capitalised organ names."""
    present = [int(v) for v in np.unique(labels) if v]
    renumber = np.zeros(256, dtype=np.uint8)
    renumber[present] = np.arange(1, len(present) + 1)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name.capitalize(),
            segmented_property_category=codes.SCT.Organ,
            segmented_property_type=codes.SCT.Organ,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                "test", codes.DCM.ArtificialIntelligence, "1"
            ),
        )
        for number, name in enumerate(segment_names, 1)
    ]
    segmentation = hd.seg.Segmentation(
        source_images=source,
        pixel_array=renumber[labels],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="ArmGate",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
        omit_empty_frames=True,
    )
    segmentation.save_as(path)
    return path


def write_mask(path: Path, labels: np.ndarray) -> Path:
    """The SEG's NIfTI twin in NIfTI axis order (columns, rows, slices), on the series' grid: columns
    run along patient +x (L), rows along +y (P), slices along +z, so in RAS x and y are negated."""
    nib.save(
        nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)), np.diag([-0.8, -0.8, 2.0, 1.0])),
        path,
    )
    return path


@pytest.fixture
def series(tmp_path: Path) -> tuple[Path, list[Dataset]]:
    return tmp_path / "ct", make_ct_series(tmp_path / "ct")


def outcomes_by_name(outcomes: list) -> dict:
    return {outcome.name: outcome for outcome in outcomes}


def test_correct_seg_passes_every_check(tmp_path: Path, series: tuple[Path, list[Dataset]]) -> None:
    ct_dir, source = series
    seg_path = make_seg(tmp_path / "seg.dcm", source, label_map(), ["liver", "right kidney"])
    outcomes = seg.validate_seg(
        seg_path, ct_dir, NAMES, mask_path=write_mask(tmp_path / "mask.nii.gz", label_map())
    )
    assert [o.name for o in outcomes] == list(seg.CHECK_NAMES)
    assert all(o.passed for o in outcomes), [o.reason for o in outcomes if not o.passed]


def test_seg_of_another_series_fails_the_reference_checks(
    tmp_path: Path, series: tuple[Path, list[Dataset]]
) -> None:
    ct_dir, source = series
    other = make_ct_series(tmp_path / "other", study_uid=source[0].StudyInstanceUID)
    seg_path = make_seg(tmp_path / "seg.dcm", other, label_map(), ["liver", "right kidney"])
    outcomes = outcomes_by_name(seg.validate_seg(seg_path, ct_dir, NAMES))
    assert not outcomes["seg-series"].passed and other[0].SeriesInstanceUID in outcomes["seg-series"].reason
    assert not outcomes["seg-instances"].passed and "4 of 4" in outcomes["seg-instances"].reason
    assert outcomes["seg-parse"].passed and outcomes["seg-labels"].passed


def test_seg_with_wrong_labels_fails_the_label_checks(
    tmp_path: Path, series: tuple[Path, list[Dataset]]
) -> None:
    ct_dir, source = series
    seg_path = make_seg(tmp_path / "seg.dcm", source, label_map(), ["spleen", "right kidney"])
    mask_path = write_mask(tmp_path / "mask.nii.gz", label_map())
    outcomes = outcomes_by_name(seg.validate_seg(seg_path, ct_dir, NAMES, mask_path=mask_path))
    assert not outcomes["seg-labels"].passed
    assert "not declared: spleen" in outcomes["seg-labels"].reason
    assert "organs in the mask without a segment: liver" in outcomes["seg-labels"].reason
    assert not outcomes["seg-pixels"].passed and outcomes["seg-series"].passed


def test_seg_pixels_disagreeing_with_the_mask_fail(
    tmp_path: Path, series: tuple[Path, list[Dataset]]
) -> None:
    ct_dir, source = series
    seg_path = make_seg(tmp_path / "seg.dcm", source, label_map(), ["liver", "right kidney"])
    grown = label_map()
    grown[3, 2:8, 3:9] = 1  # one more slice of liver in the mask than in the SEG
    outcomes = outcomes_by_name(
        seg.validate_seg(seg_path, ct_dir, NAMES, mask_path=write_mask(tmp_path / "mask.nii.gz", grown))
    )
    assert outcomes["seg-labels"].passed
    assert (
        not outcomes["seg-pixels"].passed
        and "Liver: 36 voxels differ (72 in the SEG, 108 in the mask)" in outcomes["seg-pixels"].reason
    )


def test_mask_with_an_organ_the_seg_lacks_fails_labels(
    tmp_path: Path, series: tuple[Path, list[Dataset]]
) -> None:
    ct_dir, source = series
    liver_only = np.where(label_map() == 1, 1, 0).astype(np.uint8)
    seg_path = make_seg(tmp_path / "seg.dcm", source, liver_only, ["liver"])
    mask_path = write_mask(tmp_path / "mask.nii.gz", label_map())
    outcomes = outcomes_by_name(seg.validate_seg(seg_path, ct_dir, NAMES, mask_path=mask_path))
    assert (
        not outcomes["seg-labels"].passed
        and "without a segment: right kidney" in outcomes["seg-labels"].reason
    )
    assert outcomes["seg-pixels"].passed  # the liver segment itself agrees


@pytest.mark.parametrize("kind", ["missing", "ct image", "text"])
def test_unreadable_seg_fails_parse_and_keeps_every_check_name(
    tmp_path: Path, series: tuple[Path, list[Dataset]], kind: str
) -> None:
    ct_dir, _ = series
    seg_path = {
        "missing": tmp_path / "seg.dcm",
        "ct image": ct_dir / "slice0.dcm",
        "text": tmp_path / "x.dcm",
    }[kind]
    if kind == "text":
        seg_path.write_text("not dicom")
    outcomes = seg.validate_seg(seg_path, ct_dir, NAMES)
    assert [o.name for o in outcomes] == list(seg.CHECK_NAMES[:-1])
    assert not any(o.passed for o in outcomes)
    assert str(seg_path) in outcomes[0].reason


def test_missing_input_directory_is_a_gate_error(tmp_path: Path) -> None:
    with pytest.raises(GateError, match="no such directory"):
        seg.validate_seg(tmp_path / "seg.dcm", tmp_path / "nowhere", NAMES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GateError, match="no DICOM instances"):
        seg.read_input_series(tmp_path / "empty")


@pytest.mark.parametrize(
    "move",
    [
        lambda labels: labels[:, :, ::-1],  # frames mirrored left-right
        lambda labels: labels[:, ::-1, :],  # frames upside down
        lambda labels: np.roll(labels, 1, axis=0),  # every frame one slice off
    ],
    ids=["flipped-columns", "flipped-rows", "one-slice-shift"],
)
def test_seg_with_misplaced_frames_fails_pixels_with_equal_counts(
    tmp_path: Path, series: tuple[Path, list[Dataset]], move
) -> None:
    ct_dir, source = series
    moved = np.ascontiguousarray(move(label_map()))
    assert np.bincount(moved.ravel()).tolist() == np.bincount(label_map().ravel()).tolist()
    seg_path = make_seg(tmp_path / "seg.dcm", source, moved, ["liver", "right kidney"])
    mask_path = write_mask(tmp_path / "mask.nii.gz", label_map())
    outcomes = outcomes_by_name(seg.validate_seg(seg_path, ct_dir, NAMES, mask_path=mask_path))
    assert outcomes["seg-labels"].passed and outcomes["seg-series"].passed
    assert not outcomes["seg-pixels"].passed and "voxels differ" in outcomes["seg-pixels"].reason


def test_seg_of_a_series_beside_the_expected_one_fails_series(
    tmp_path: Path, series: tuple[Path, list[Dataset]]
) -> None:
    """Two series in one input folder (a localizer beside the CT): only the expected one may be named."""
    ct_dir, source = series
    localizer = make_ct_series(ct_dir / "localizer", study_uid=source[0].StudyInstanceUID)
    expected = str(source[0].SeriesInstanceUID)
    right = make_seg(tmp_path / "right.dcm", source, label_map(), ["liver", "right kidney"])
    wrong = make_seg(tmp_path / "wrong.dcm", localizer, label_map(), ["liver", "right kidney"])
    passed = outcomes_by_name(seg.validate_seg(right, ct_dir, NAMES, expected_series=expected))
    assert passed["seg-series"].passed
    assert outcomes_by_name(seg.validate_seg(wrong, ct_dir, NAMES))["seg-series"].passed  # any input series
    failed = outcomes_by_name(seg.validate_seg(wrong, ct_dir, NAMES, expected_series=expected))
    assert not failed["seg-series"].passed and f"the case expects {expected}" in failed["seg-series"].reason
