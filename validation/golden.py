"""`python -m validation golden`: a case's golden label map from the app's output on the reference platform.

A golden is what the app writes on the team's workstation, on the DICOM grid, as NIfTI: the gate holds
the arm64 image's output to it. An app that writes a NIfTI mask has it already; for an app that writes
only a DICOM SEG, this turns the SEG into that label map exactly as the gate places SEGs (one value per
segment, by the contract's label names), so a team makes its references without writing code:

    python -m validation golden --app CONTRACT --seg OUT/1.2.3.dcm --dicom CASE/dicom \
        -o CASE/reference/golden.nii.gz
    python -m validation golden --app CONTRACT --run CASE     # run the app on the host first

`--run` runs the app as the gate's host run does (its own working folder, the contract's command line)
on CASE/dicom with the contract's default model (or --model), then writes CASE/reference/golden.nii.gz
from the output the contract declares: the mask as it is, else the SEG placed on the grid.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from validation import contract, dicom_grid, outputs, run, seg_placement
from validation.compare import load_mask
from validation.errors import GateError

RUN_TIMEOUT_S = 3600.0  # a reference run on the workstation; the gate's own limits are per case


def seg_to_label_map(
    seg_path: Path, dicom_dir: Path, names: Mapping[int, str], out: Path, series_uid: str | None = None
) -> Path:
    """Write the SEG's segments as one NIfTI label map on the grid of the series it references (or
    `series_uid`); any segment that cannot be placed exactly is a GateError naming the SEG."""
    import highdicom as hd

    try:
        dataset = hd.seg.segread(seg_path)
    except FileNotFoundError:
        raise GateError(f"{seg_path}: no such file; pass the SEG the app wrote") from None
    except Exception as error:  # pydicom/highdicom raise many types for a file that is not a SEG
        kind = type(error).__name__
        raise GateError(f"{seg_path}: not a DICOM Segmentation ({kind}); pass the app's SEG") from None
    grids = dicom_grid.read_grids(dicom_dir)
    items = getattr(dataset, "ReferencedSeriesSequence", [])
    referenced = sorted(str(item.SeriesInstanceUID) for item in items)
    uid = series_uid or (referenced[0] if len(referenced) == 1 else None)
    grid = grids.series.get(uid) if uid else None
    if grid is None:
        found = ", ".join(grids.series) or "none"
        raise GateError(
            f"{seg_path}: references series {', '.join(referenced) or '(none)'}, which is not a volume in "
            f"{dicom_dir} (volumes there: {found}); pass the DICOM folder the app read"
        )
    placed = seg_placement.place(dataset, grid, names)
    if placed.labels is None:
        raise GateError(f"{seg_path}: {'; '.join(placed.problems)}")
    return placed.save(out)


def golden_from_run(case_dir: Path, app: contract.AppContract, model: Path) -> Path:
    """Run the app on the host on CASE/dicom and write CASE/reference/golden.nii.gz from its output."""
    dicom_dir, target = case_dir / "dicom", case_dir / "reference" / "golden.nii.gz"
    if not dicom_dir.is_dir():
        raise GateError(f"{dicom_dir}: missing; a case folder holds its series in dicom/")
    with tempfile.TemporaryDirectory(prefix="armgate-golden-") as scratch:
        output = Path(scratch) / "output"
        output.mkdir()
        result = run.run_host(app, dicom_dir, model, output, RUN_TIMEOUT_S, work_dir=Path(scratch) / "work")
        if not result.ok:
            raise GateError(f"{case_dir}: the app's host run failed: {result.failure()}")
        found = outputs.find(output, app.outputs)
        if "mask" in found.files:
            load_mask(found.files["mask"])  # a mask that is not a label map is refused here, not in the gate
            target.parent.mkdir(parents=True, exist_ok=True)
            return Path(shutil.copyfile(found.files["mask"], target))
        if "seg" not in found.files:
            problems = "; ".join(found.problems)
            raise GateError(f"{case_dir}: the app's output does not match its contract: {problems}")
        return seg_to_label_map(found.files["seg"], dicom_dir, app.labels, target)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m validation golden", description=__doc__.splitlines()[0])
    parser.add_argument("--app", type=Path, default=contract.DEFAULT_CONTRACT, help="app contract (TOML)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--seg", type=Path, help="the SEG the app wrote on the reference platform")
    source.add_argument("--run", type=Path, metavar="CASE", help="a case folder: run the app on its dicom/")
    parser.add_argument("--dicom", type=Path, help="with --seg: the DICOM folder the app read")
    parser.add_argument("-o", "--out", type=Path, help="with --seg: where to write the label map (.nii.gz)")
    parser.add_argument("--series", help="with --seg: the series whose grid to use (default: the SEG's)")
    parser.add_argument("--model", type=Path, help="with --run: the model (default: the contract's)")
    args = parser.parse_args(argv)
    app = contract.load(args.app)
    if args.seg is not None:
        if args.dicom is None or args.out is None:
            parser.error("--seg needs --dicom DIR and -o OUT.nii.gz")
        written = seg_to_label_map(args.seg, args.dicom, app.labels, args.out, args.series)
    else:
        model = args.model or app.default_model
        if not model.is_file():
            raise GateError(f"{model}: model not found; pass --model PATH")
        written = golden_from_run(args.run, app, model)
    print(f"golden: {written}")
    return 0
