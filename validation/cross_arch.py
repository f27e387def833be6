"""`acceptance --cross-arch`: a gate of real-size models that finishes under emulation, and says exactly
what it covered. Its verdict is PARTIAL at best, never PASS.

Under QEMU a real-size network's window takes minutes, and a full study needs tens of them. This tier
splits the work by where it can be done:

- on the host (the reference platform), the app runs each full study, recording every window it hands
  its model (validation/window_recorder/); the full study's label map is the host's, held to the case's
  references (test_full_study_mask);
- in the arm64 image, the app's whole pipeline (DICOM in, SEG and mask out, in the case runs'
  lock-down) runs on a crop of each study (validation/crop.py), and the regular checks hold it to the
  host's run of the same crop; the crops' comparisons with the full study's references are left out;
- in the arm64 image, the model runs on K chosen windows of each full study, and its logits are held
  to the host's (validation/window_check.py, test_full_study_windows).

What it cannot see: a difference in the image that only shows on windows it did not choose, or in a
stage on a full study's size (its memory, its run time), is not covered; the README says how to gate
those on an ARM runner.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from validation import cases, crop, dicom_grid, outputs, plan, run, window_check, window_probe
from validation.errors import GateError
from validation.window_check import Chosen, WindowsResult

RECORDER = Path(__file__).with_name("window_recorder")


@dataclass(frozen=True)
class TierSettings:
    """validation/timing.toml [cross_arch]."""

    windows_max: int
    crop_windows: tuple[int, int, int]
    logit_rtol: float


def load_settings(path: Path = window_probe.TIMING_TOML) -> TierSettings:
    table = tomllib.loads(path.read_text()).get("cross_arch", {})
    try:
        crop_windows = tuple(int(n) for n in table["crop_windows"])
        windows_max, rtol = int(table["windows_max"]), float(table["logit_rtol"])
        settings = TierSettings(windows_max, crop_windows, rtol)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as error:
        fields = "windows_max, crop_windows and logit_rtol"
        raise GateError(f"{path}: [cross_arch] wants {fields} ({error})") from None
    if len(settings.crop_windows) != 3 or settings.windows_max < 1:
        raise GateError(f"{path}: [cross_arch] crop_windows must be 3 whole numbers, windows_max at least 1")
    return settings


@dataclass
class CaseTier:
    """One case's share of the tier: its full study on the host, its crop, its chosen windows."""

    case: cases.Case  # the full study
    host: run.RunResult | None = None
    label_map: Path | None = None
    crop: crop.Crop | None = None
    windows_total: int = 0
    chosen: list[Chosen] = field(default_factory=list)
    comparison: Future[WindowsResult] | None = None
    problem: str = ""  # why the tier could not prepare the case (its host run failed, ...)


class Tier:
    """The tier of one gate run: started before the model check, prepared once its window time is known."""

    def __init__(self, session) -> None:  # session: validation.session.GateSession
        self.session = session
        self.config = session.config
        self.settings = load_settings()
        self.folder = self.config.reports / "cross-arch"
        self.cases = {case.name: CaseTier(case) for case in self.config.cases}
        self.platform = plan.where(session.image_facts.platform)
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.config.jobs))
        self._windows_pool = ThreadPoolExecutor(max_workers=1)
        self._host_runs: dict[str, Future[run.RunResult]] = {}
        self.window_s: float | None = None

    def say(self, text: str) -> None:
        """To the terminal the gate started with: its checks' output is captured meanwhile."""
        print(text, file=self.session.out, flush=True)

    def start_host_runs(self) -> None:
        """The app on each full study on the host, its windows recorded (in the background)."""
        for name, entry in self.cases.items():
            self._host_runs[name] = self._pool.submit(self._host_run, entry.case)

    def _host_run(self, case: cases.Case) -> run.RunResult:
        folder = self.folder / case.name
        windows = folder / "windows"
        windows.mkdir(parents=True, exist_ok=True)
        output = run.writable_output_dir(folder, "host-full")
        path = os.pathsep.join(filter(None, [str(RECORDER), os.environ.get("PYTHONPATH")]))
        extra = {"PYTHONPATH": path, "ARMGATE_RECORD_WINDOWS": str(windows)}
        app, model = self.config.app, self.config.model
        return run.run_host(app, case.dicom_dir, model, output, case.timeout_s, folder / "work", extra)

    def prepare(self, window_s: float | None) -> list[cases.Case]:
        """Wait for the host runs; crop each study, choose its windows, start their comparison; the crop
        cases, which the regular checks then gate (a case whose host run failed keeps its full study,
        and its tier checks say why). `window_s`: the model check's window time, predicted or measured."""
        self.window_s = window_s
        crops = []
        for name, entry in self.cases.items():
            entry.host = self._host_runs[name].result()
            try:
                crops.append(self._prepare_case(entry, window_s))
            except GateError as error:
                entry.problem = str(error)
                crops.append(entry.case)
        self._pool.shutdown(wait=False)
        return crops

    def _prepare_case(self, entry: CaseTier, window_s: float | None) -> cases.Case:
        case, app = entry.case, self.config.app
        if entry.host is None or not entry.host.ok:
            raise GateError(entry.host.failure() if entry.host else "the host run did not start")
        entry.label_map, grid = self._label_map(entry)
        run_time = cases.run_time(app)
        if run_time is None:
            raise GateError(f"{app.path}: the tier sizes its crops by the contract's [run] table; add one")
        box_mm = [n * w * s for n, w, s in zip(self.settings.crop_windows, run_time.window,
                                                 run_time.window_spacing_mm, strict=True)]  # fmt: skip
        labels = np.asarray(nib.load(str(entry.label_map)).dataobj)
        entry.crop = crop.choose(labels, crop.box_voxels(grid, box_mm))
        target = crop.write_case(case, grid, entry.crop, self.folder / "cases" / case.name, app.labels)
        cropped = cases.load_case(target, app.labels, run_time, case.memory)
        explicit = "timeout_s" in tomllib.loads((case.path / "case.toml").read_text()).get("run", {})
        if window_s is not None and not explicit and cropped.windows is not None:
            # the contract's [run] figures hold for its default model: the crop's time follows the window's
            per_window = max(window_s, run_time.seconds_per_window)
            timeout = run_time.margin * (run_time.start_s + cropped.windows * per_window)
            basis = f"{run_time.margin:g} × ({run_time.start_s:g} s + {cropped.windows} × {per_window:.0f} s)"
            crop.set_timeout(target, timeout, f"{basis}, the window's time in the image")
            cropped = cases.load_case(target, app.labels, run_time, case.memory)
        windows = self.folder / case.name / "windows"
        recorded = window_check.recorded(windows)
        entry.windows_total = len(recorded)
        entry.chosen = window_check.choose(recorded, self._k(run_time, cropped, window_s))
        window_check.keep_only(windows, entry.chosen)
        self.say(
            f"cross-arch: {case.name}: crop {entry.crop.describe(app.labels)}, {cropped.windows} window(s); "
            f"{len(entry.chosen)} of the full study's {entry.windows_total} windows: "
            + ", ".join(f"{c.index} ({c.why})" for c in entry.chosen)
        )
        entry.comparison = self._windows_pool.submit(self._compare, entry, windows)
        return cropped

    def _k(self, run_time: cases.RunTime, cropped: cases.Case, window_s: float | None) -> int:
        """As many windows as run beside the crop's run in its time (its prediction), at most windows_max."""
        if window_s is None or window_s <= 0 or cropped.windows is None:
            return self.settings.windows_max
        crop_run = run_time.start_s + cropped.windows * window_s
        return max(1, min(self.settings.windows_max, math.floor(crop_run / window_s)))

    def _label_map(self, entry: CaseTier) -> tuple[Path, dicom_grid.SeriesGrid]:
        """The host's full-study label map on its series' grid: its mask, or its SEG placed there."""
        case, app = entry.case, self.config.app
        found = outputs.find(entry.host.output_dir, app.outputs)  # type: ignore[union-attr]
        grids = dicom_grid.read_grids(case.dicom_dir)
        if app.mask is not None and "mask" in found.files:
            from validation import compare

            mask = compare.load_mask(found.files["mask"])
            atol = case.tolerances["golden"]["affine_atol_mm"]
            grid = grids.locate(mask.affine, mask.labels.shape, atol)
            if grid is None:
                raise GateError(f"{found.files['mask']}: the host's mask lies on no series of the case")
            return found.files["mask"], grid
        if "seg" not in found.files:
            raise GateError(f"the host's run wrote no label map: {'; '.join(found.problems)}")
        import highdicom as hd

        from validation import seg_placement

        dataset = hd.seg.segread(found.files["seg"])
        referenced = [str(item.SeriesInstanceUID) for item in dataset.ReferencedSeriesSequence]
        grid = grids.series.get(referenced[0]) if len(referenced) == 1 else None
        placed = seg_placement.place(dataset, grid, app.labels) if grid is not None else None
        if placed is None or placed.labels is None:
            raise GateError(f"{found.files['seg']}: the host's SEG cannot be placed on the case's series")
        return placed.save(self.folder / case.name / "host-full-labels.nii.gz"), grid

    def _compare(self, entry: CaseTier, windows: Path) -> WindowsResult:
        config = self.config

        def say(text: str) -> None:
            self.say(f"cross-arch: {entry.case.name}: {text}")

        return window_check.compare_windows(
            config.image, config.app, config.model, windows, entry.chosen, self.settings.logit_rtol,
            config.profile.platform, self.session.labels, say, timeout_s=self._windows_timeout(entry),
        )  # fmt: skip

    def _windows_timeout(self, entry: CaseTier) -> float | None:
        """The chosen windows' run may take the contract's margin × their predicted time, plus a start."""
        run_time, window_s = cases.run_time(self.config.app), self.window_s
        if run_time is None or window_s is None:
            return None
        return run_time.margin * (run_time.start_s + len(entry.chosen) * window_s)

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._windows_pool.shutdown(wait=False, cancel_futures=True)

    def record(self) -> list[str]:
        """Each case's window comparison in one line, also kept in <reports>/cross-arch.json."""
        lines, kept = [], {"scope": self.scope(), "logit_rtol": self.settings.logit_rtol, "cases": {}}
        for name, entry in self.cases.items():
            result = entry.comparison.result() if entry.comparison is not None else None
            said = entry.problem or (result.line(entry.windows_total) if result else "not compared")
            lines.append(f"cross-arch: {name}: {said}")
            kept["cases"][name] = {
                "crop": None if entry.crop is None else dataclasses.asdict(entry.crop),
                "windows_total": entry.windows_total,
                "chosen": [{"index": c.index, "why": c.why, "facts": dict(c.facts)} for c in entry.chosen],
                "compared": result.per_window if result else [],
                "problem": entry.problem or (result.problem if result else ""),
            }  # fmt: skip
        (self.config.reports / "cross-arch.json").write_text(json.dumps(kept, indent=2) + "\n")
        return lines

    def scope(self) -> str:
        """What ran where, in one line: the verdict's scope."""
        crops = "; ".join(
            f"{name}: {entry.crop.describe(self.config.app.labels)}"
            for name, entry in self.cases.items()
            if entry.crop is not None
        )
        windows = ", ".join(
            f"{name} {len(entry.chosen)} of {entry.windows_total}" for name, entry in self.cases.items()
        )
        return (
            f"cross-arch tier, PARTIAL by design: in the arm64 image ({self.platform}) the whole pipeline "
            f"on a crop of each study ({crops or 'none'}) and the model on chosen windows of each full "
            f"study ({windows}); on the host the full studies' masks, held to the references; the crops' "
            "comparisons with the full-study references are left out (test_mask)"
        )
