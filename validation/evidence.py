"""What each case's runs wrote, read once and judged once: outputs, label maps, series, SEG, STL, comparisons.

The contract says which outputs an app writes and how they are named; this module finds them in a run's
output folder, turns them into the label map the references are compared with (the app's NIfTI mask, or
its SEG placed on the series' grid), and says whether the app used the series the case expects. Every
check asks here, so each fact is computed once, and a check whose input is missing is *not evaluated*,
pointing at the one check that failed for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydicom import Dataset

from validation import compare, dicom_grid, outputs, overlays, results, seg, seg_placement
from validation.verdict import NOT_EVALUATED

if TYPE_CHECKING:
    from validation.contract import AppContract
    from validation.session import GateSession


@dataclass(frozen=True)
class ReadSeg:
    """The SEG a run wrote, read once: the dataset, or why it could not be read."""

    path: Path
    dataset: Dataset | None
    error: str = ""


class Evidence:
    """The gate run's per-case facts, computed on first use and kept."""

    def __init__(self, session: GateSession) -> None:
        self.session = session
        self._found: dict[tuple[str, str], outputs.FoundOutputs] = {}
        self._grids: dict[str, dicom_grid.CaseGrids] = {}
        self._segs: dict[tuple[str, str], ReadSeg] = {}
        self._placed: dict[tuple[str, str], seg_placement.PlacedSeg | None] = {}
        self.comparisons: dict[tuple[str, str], results.Comparison] = {}
        self.seg_checks: dict[str, list[compare.CheckOutcome]] = {}

    @property
    def app(self) -> AppContract:
        return self.session.config.app

    def found(self, name: str, where: str = "container") -> outputs.FoundOutputs:
        """The run's outputs by kind (the run must have succeeded)."""
        if (name, where) not in self._found:
            folder = self.session.succeeded(name, where).output_dir
            self._found[(name, where)] = outputs.find(folder, self.app.outputs)
        return self._found[(name, where)]

    def output(self, name: str, kind: str, where: str = "container") -> Path:
        path = self.found(name, where).files.get(kind)
        if path is None:
            see = f"test_outputs[{name}]" if where == "container" else "the host run's output folder"
            pytest.skip(f"{NOT_EVALUATED}no {kind} output to read (see {see})")
        return path

    def grids(self, name: str) -> dicom_grid.CaseGrids:
        if name not in self._grids:
            self._grids[name] = dicom_grid.read_grids(self.session.case(name).dicom_dir)
        return self._grids[name]

    def seg(self, name: str, where: str = "container") -> ReadSeg:
        if (name, where) not in self._segs:
            path = self.output(name, "seg", where)
            try:
                import highdicom as hd

                self._segs[(name, where)] = ReadSeg(path, hd.seg.segread(path))
            except Exception as error:  # pydicom/highdicom raise many types for a file that is not a SEG
                self._segs[(name, where)] = ReadSeg(path, None, f"{type(error).__name__}: {error}")
        return self._segs[(name, where)]

    def referenced_series(self, name: str, where: str = "container") -> list[str]:
        dataset = self.seg(name, where).dataset
        items = getattr(dataset, "ReferencedSeriesSequence", []) if dataset is not None else []
        return sorted(str(item.SeriesInstanceUID) for item in items)

    def placed(self, name: str, where: str = "container") -> seg_placement.PlacedSeg | None:
        """The SEG on the grid of the series it references; None when it cannot be read or references
        no one series that is a volume of the case (the SEG checks say which)."""
        if (name, where) not in self._placed:
            dataset, referenced = self.seg(name, where).dataset, self.referenced_series(name, where)
            grid = self.grids(name).series.get(referenced[0]) if len(referenced) == 1 else None
            placed = None
            if dataset is not None and grid is not None:
                placed = seg_placement.place(dataset, grid, self.app.labels)
            self._placed[(name, where)] = placed
        return self._placed[(name, where)]

    def label_map(self, name: str, where: str = "container") -> Path:
        """The label map the references are compared with: the app's mask, or its SEG on the grid."""
        if self.app.mask is not None:
            return self.output(name, "mask", where)
        placed = self.placed(name, where)
        if placed is None or placed.labels is None:
            see = f"test_dicom_seg[{name}]" if where == "container" else "the host run's SEG"
            pytest.skip(f"{NOT_EVALUATED}the SEG could not be placed on the series' grid (see {see})")
        path = self.session.case_dir(name) / f"{where}-seg-labels.nii.gz"
        return path if path.is_file() else placed.save(path)

    def expected_grid(self, name: str) -> dicom_grid.SeriesGrid | None:
        uid = self.session.case(name).expected_series_uid
        return self.grids(name).series.get(uid) if uid else None

    def series_problem(self, name: str) -> str:
        """Why the app did not use the series the case expects (empty when it did): the mask's grid and
        the SEG's referenced series, against the expected series' grid."""
        case = self.session.case(name)
        expected = self.expected_grid(name)
        if expected is None:
            uid, folder = case.expected_series_uid, case.dicom_dir
            return f"the case expects series {uid}, which is not a volume in {folder}"
        problems = []
        if self.app.mask is not None:
            mask = compare.load_mask(self.output(name, "mask"))
            atol = case.tolerances["golden"]["affine_atol_mm"]
            found = self.grids(name).locate(mask.affine, mask.labels.shape, atol)
            if found is not expected:
                shape = "x".join(map(str, mask.labels.shape))
                where = found.label if found else f"no series of the case (its shape {shape})"
                problems.append(f"the mask lies on {where}; the case expects {expected.label}")
        if self.app.seg is not None and self.seg(name).dataset is not None:
            referenced = self.referenced_series(name)
            if referenced != [expected.series_uid]:
                named = ", ".join(referenced) or "(none)"
                problems.append(f"the SEG references series {named}; the case expects {expected.label}")
        return "; ".join(problems)

    def comparison(self, name: str, kind: str) -> results.Comparison:
        """The container's label map against a reference ("golden", "ground_truth", or the "host" run's)."""
        key = (name, kind)
        if key not in self.comparisons:
            case = self.session.case(name)
            if kind != "host" and case.expected_series_uid and self.series_problem(name):
                pytest.skip(f"{NOT_EVALUATED}the app used another series (see test_series[{name}])")
            output = self.label_map(name)
            reference = self.label_map(name, "host") if kind == "host" else case.reference(kind)
            # the overlay is drawn now, from the masks loaded for the comparison: nothing keeps them after
            self.comparisons[key] = overlays.compare_with_overlay(
                kind, output, reference, case.tolerances[kind], dicom_dir=case.dicom_dir,
                out_dir=self.session.case_dir(name), labels=case.labels, names=self.app.labels,
                window=self.app.window_hu,
            )  # fmt: skip
        return self.comparisons[key]

    def seg_outcomes(self, name: str) -> list[compare.CheckOutcome]:
        """The SEG checks (validation/seg.py); with no mask to hold it to, `seg-grid` instead of
        `seg-pixels`: every segment pixel on a voxel of the series it references, under a declared label."""
        if name not in self.seg_checks:
            case = self.session.case(name)
            mask = self.output(name, "mask") if self.app.mask is not None else None
            checks = seg.validate_seg(self.seg(name).path, case.dicom_dir, self.app.labels, mask_path=mask)
            if mask is None and self.seg(name).dataset is not None:
                checks += self._grid_outcome(name)
            self.seg_checks[name] = checks
        return self.seg_checks[name]

    def _grid_outcome(self, name: str) -> list[compare.CheckOutcome]:
        """`seg-grid` for an app whose SEG is its label map. A SEG of another series than the case expects
        is test_series' failure, not this one's."""
        placed = self.placed(name)
        if placed is not None:
            return [placed.outcome()]
        if self.session.case(name).expected_series_uid and self.series_problem(name):
            return []
        referenced = ", ".join(self.referenced_series(name)) or "no series"
        reason = f"the SEG references {referenced}, not one series that stacks into a volume in the case"
        return [compare.CheckOutcome("seg-grid", False, None, None, reason)]

    def stl_problem(self, name: str) -> str:
        """Why the STL mesh is not a surface of the case's series (empty when it is)."""
        grid = self.expected_grid(name)
        if grid is None and self.app.mask is not None:
            mask = compare.load_mask(self.output(name, "mask"))
            grid = self.grids(name).locate(mask.affine, mask.labels.shape, compare.DEFAULT_AFFINE_ATOL_MM)
        if grid is None and self.app.seg is not None:
            referenced = self.referenced_series(name)
            grid = self.grids(name).series.get(referenced[0]) if len(referenced) == 1 else None
        if grid is None:
            return "no series to hold the mesh to: name it in case.toml (input.expected_series_instance_uid)"
        return outputs.stl_problem(self.output(name, "stl"), grid)

    def label_map_file(self, name: str) -> str | None:
        """The container's label map as a file, when the gate has one (for the report)."""
        for path in (self.session.case_dir(name) / "container-seg-labels.nii.gz",):
            if path.is_file():
                return str(path)
        found = self._found.get((name, "container"))
        mask = found.files.get("mask") if found else None
        return str(mask) if mask else None
