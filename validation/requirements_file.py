"""An app's own requirements.txt, as the Clara AGX recipe installs it with `pip install -r`.

armgate locks these requirements with the profile's packages (validation/app_lock.py), so the file
may hold only what a hash-locked, offline build can honour: one PEP 508 requirement per line, with
comments and blank lines. Every other line fails here, naming the file, the line and the fix.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from validation.errors import GateError

# pip's rule: a comment starts with '#' at the start of a line or after whitespace (not inside a URL)
COMMENT = re.compile(r"(^|\s+)#.*$")


@dataclass(frozen=True)
class AppRequirement:
    """One requirement of the file, with where it was written (for one-line errors)."""

    path: Path
    line: int
    requirement: Requirement

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text without comment) of each requirement line; a trailing `\\` continues it."""
    lines, pending, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        start = start or number
        content = COMMENT.sub("", raw).rstrip()
        if content.endswith("\\"):
            pending += content[:-1] + " "
            continue
        logical = (pending + content).strip()
        if logical:
            lines.append((start, logical))
        pending, start = "", 0
    if pending.strip():
        lines.append((start, pending.strip()))
    return lines


def read(path: Path) -> tuple[AppRequirement, ...]:
    """Every requirement of the file; the first line armgate cannot lock raises one GateError."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise GateError(f"{path}: cannot read the app's requirements ({type(error).__name__})") from None
    found = []
    for number, line in _logical_lines(text):
        where = f"{path}: line {number} {line!r}"
        if line.startswith("-"):
            raise GateError(
                f"{where} is a pip option; armgate locks requirement lines only: write each package "
                "on its own line (e.g. scikit-image>=0.19) instead of -r/-c/-e/--index-url/--hash"
            )
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            raise GateError(
                f"{where} is not a requirement; write NAME[SPECIFIER] as pip does, e.g. scikit-image>=0.19"
            ) from None
        if requirement.url:
            raise GateError(
                f"{where} installs from a URL, which an offline, hash-locked build cannot; name a "
                f"released version instead, e.g. {requirement.name}==1.2.3"
            )
        found.append(AppRequirement(path, number, requirement))
    return tuple(found)


def digest(path: Path) -> str:
    """sha256 of the file as written: an app lock records it, so an edit makes the lock stale."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
