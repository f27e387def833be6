"""What a run wrote, found by the contract's patterns: exactly one file per declared output kind.

An app names its files as it likes (a DICOM SEG is often `<SOPInstanceUID>.dcm`, new each run), so the
contract gives a glob pattern per kind and the gate finds the file; none or several matching one pattern
is one failure that names the pattern and what the folder holds. An STL mesh, where declared, is parsed
and must lie inside the selected series' patient-space box.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from validation.dicom_grid import SeriesGrid

LISTED_FILES = 6  # how many of the folder's files a failure names
STL_MARGIN_MM = 1.0  # marching cubes and smoothing may push a surface a little past the outer voxel centres


@dataclass(frozen=True)
class FoundOutputs:
    """Each declared kind's one file, and a line per pattern that did not match exactly once."""

    files: dict[str, Path] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def _listing(folder: Path) -> str:
    found = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    if not found:
        return "the output folder is empty"
    more = f" and {len(found) - LISTED_FILES} more" if len(found) > LISTED_FILES else ""
    return f"the output folder holds {', '.join(found[:LISTED_FILES])}{more}"


def find(folder: Path, patterns: Mapping[str, str]) -> FoundOutputs:
    """Match every declared pattern in `folder`; a kind is found only when exactly one file matches."""
    files, problems = {}, []
    for kind, pattern in patterns.items():
        matches = sorted(p for p in folder.glob(pattern) if p.is_file())
        if len(matches) == 1:
            files[kind] = matches[0]
        elif not matches:
            problems.append(f"{kind}: nothing matches {pattern!r}; {_listing(folder)}")
        else:
            names = ", ".join(str(p.relative_to(folder)) for p in matches[:LISTED_FILES])
            problems.append(f"{kind}: {len(matches)} files match {pattern!r} ({names}); exactly one must")
    return FoundOutputs(files, tuple(problems))


def stl_problem(path: Path, grid: SeriesGrid) -> str:
    """Why an STL mesh is not a surface of this series (empty when it is): unreadable, empty, not
    finite, or lying outside the series' patient-space box (LPS mm, half a voxel out, plus a margin)."""
    from stl import mesh

    try:
        vertices = mesh.Mesh.from_file(str(path)).vectors.reshape(-1, 3).astype(np.float64)
    except Exception as error:  # numpy-stl raises many types for a file that is not STL
        return f"{path.name}: not a readable STL mesh ({type(error).__name__}: {error})"
    if not vertices.size:
        return f"{path.name}: the mesh has no triangles"
    if not np.isfinite(vertices).all():
        return f"{path.name}: the mesh has vertices that are not finite numbers"
    low, high = grid.patient_box_lps()
    outside = ((vertices < low - STL_MARGIN_MM) | (vertices > high + STL_MARGIN_MM)).any(axis=1)
    if outside.any():
        span = "; ".join(f"{axis} {a:.1f}..{b:.1f}" for axis, a, b in
                         zip("xyz", vertices.min(axis=0), vertices.max(axis=0), strict=True))  # fmt: skip
        box = "; ".join(f"{axis} {a:.1f}..{b:.1f}" for axis, a, b in zip("xyz", low, high, strict=True))
        return (
            f"{path.name}: {int(outside.sum())} of {len(vertices)} vertices lie outside {grid.label}'s "
            f"patient-space box (LPS mm: mesh {span}; series {box})"
        )
    return ""
