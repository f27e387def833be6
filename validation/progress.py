"""Progress for armgate's long steps (debootstrap, wheel downloads, buildx, case and host runs).

On a terminal each open step is one live line drawn by rich: a spinner or a bar, "k/n unit", the
elapsed time, the peak memory reported so far and a short detail (the tool's last output line, the
case running). When stdout is not a terminal (CI logs, pipes, tests) nothing is drawn: each step
prints exactly one line when it ends, with its time, e.g. `case runs: 3/3 cases in 212.4 s, peak
1.52 GB`. A step that fails says so: `debootstrap bookworm arm64: failed after 41.0 s`.

API:

    from validation import progress

    with progress.step("case runs", total=len(cases), unit="cases") as runs:
        ...                                          # from any thread:
        runs.update(detail="standard, shifted running", memory_bytes=peak)  # peak kept as a maximum
        runs.advance()                               # one more case done: "case k of n"

    returncode = progress.run_command(step, command, log_path)  # stream a tool's output into `step`

Steps may be open at the same time (threads, or one inside another); they share one live display.
`update` and `advance` are thread-safe. `step.elapsed` is the seconds since the step began.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

DETAIL_CHARS = 70  # the live line's detail is cut to this many characters


def _memory(value: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value} B"


class _Display:
    """One rich Progress shared by every open step; started with the first, stopped with the last."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.progress: Progress | None = None
        self.open_steps = 0

    def add(self, description: str, total: int | None, out: TextIO) -> TaskID | None:
        with self.lock:
            if self.progress is None and not out.isatty():
                return None
            if self.progress is None:
                self.progress = Progress(
                    SpinnerColumn(),
                    TextColumn("[bold]{task.description}"),
                    BarColumn(bar_width=24),
                    TextColumn("{task.fields[count]}"),  # "k/n unit"; empty when n is unknown
                    TimeElapsedColumn(),
                    TextColumn("{task.fields[detail]}", style="dim"),
                    console=Console(file=out),
                    transient=True,
                )
                self.progress.start()
            self.open_steps += 1
            return self.progress.add_task(description, total=total, count="", detail="")

    def update(self, task: TaskID | None, **fields: object) -> None:
        with self.lock:
            if task is not None and self.progress is not None:
                self.progress.update(task, **fields)

    def remove(self, task: TaskID | None) -> None:
        with self.lock:
            if task is None or self.progress is None:
                return
            self.progress.remove_task(task)
            self.open_steps -= 1
            if self.open_steps == 0:
                self.progress.stop()
                self.progress = None


_DISPLAY = _Display()


class Step:
    """A running step: what it has done so far, its peak memory and a short detail line."""

    def __init__(self, title: str, total: int | None, unit: str, out: TextIO | None = None) -> None:
        """`out`: where the step is drawn and summed up; the caller's stdout at the time by default.
        Steps opened while pytest captures output pass the stdout from before (the gate's runs)."""
        self.title, self.total, self.unit = title, total, unit
        self.out = out or sys.stdout
        self.completed = 0
        self.peak_memory_bytes: int | None = None
        self.detail = ""
        self.closed = False
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._task = _DISPLAY.add(title, total, self.out)
        self.update()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def update(
        self, detail: str | None = None, memory_bytes: int | None = None, completed: int | None = None
    ) -> None:
        """Set the detail line, report a memory reading (the step keeps the maximum), set the count."""
        with self._lock:
            if detail is not None:
                self.detail = detail
            before = (self.completed, self.peak_memory_bytes)
            if memory_bytes is not None:
                self.peak_memory_bytes = max(self.peak_memory_bytes or 0, memory_bytes)
            if completed is not None:
                self.completed = completed
            shown = self.detail if len(self.detail) <= DETAIL_CHARS else self.detail[: DETAIL_CHARS - 1] + "…"
            if self.peak_memory_bytes is not None:
                shown = f"peak {_memory(self.peak_memory_bytes)}" + (f" · {shown}" if shown else "")
            # a new count or peak is drawn at once; a tool's chatter waits for the next refresh (10/s)
            refresh = before != (self.completed, self.peak_memory_bytes)
            count = f"{self.completed}/{self.total} {self.unit}" if self.total is not None else ""
            _DISPLAY.update(self._task, completed=self.completed, count=count, detail=shown, refresh=refresh)

    def grow(self, amount: int) -> None:
        """`amount` more units to do (work found after the step began: the checks pytest collected)."""
        with self._lock:
            self.total = (self.total or 0) + amount
            _DISPLAY.update(self._task, total=self.total)
        self.update()

    def advance(self, amount: int = 1, detail: str | None = None) -> None:
        """`amount` more units done (one more case, one more wheel)."""
        with self._lock:
            completed = self.completed + amount
        self.update(detail=detail, completed=completed)

    def summary(self, failed: bool, ended: str = "failed") -> str:
        """The one line printed when the step ends; `ended` says how a step that did not finish ended."""
        if failed:
            return f"{self.title}: {ended} after {self.elapsed:.1f} s"
        done = f"{self.completed}/{self.total} {self.unit} " if self.total is not None else ""
        memory = f", peak {_memory(self.peak_memory_bytes)}" if self.peak_memory_bytes is not None else ""
        return f"{self.title}: {done}in {self.elapsed:.1f} s{memory}"

    def close(self, failed: bool, ended: str = "failed") -> None:
        """Take the live line down and print the summary; a second close does nothing."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        _DISPLAY.remove(self._task)
        print(self.summary(failed, ended), file=self.out, flush=True)


@contextmanager
def step(title: str, total: int | None = None, unit: str = "", out: TextIO | None = None) -> Iterator[Step]:
    """A step shown live on a terminal and summed up in one line (with its time) when it ends."""
    current = Step(title, total, unit, out)
    try:
        yield current
    except BaseException:
        current.close(failed=True)
        raise
    current.close(failed=False)


def run_command(
    current: Step, command: Sequence[str], log: Path, advance_on: str | tuple[str, ...] | None = None
) -> int:
    """Run `command` with stdout and stderr into `log` (the command first); its last line is the detail.

    `advance_on`: a line starting with this prefix (or one of these) advances the step by one.
    Returns the exit code; the full output stays in `log` for the error message to point at.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as sink:
        sink.write(f"+ {shlex.join(command)}\n")
        sink.flush()
        process = subprocess.Popen(
            list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        assert process.stdout is not None
        try:
            for line in process.stdout:
                sink.write(line)
                text = line.strip()
                if not text:
                    continue
                if advance_on is not None and text.startswith(advance_on):
                    current.advance(detail=text)
                else:
                    current.update(detail=text)
        except BaseException:
            process.kill()
            raise
        finally:
            process.stdout.close()
            returncode = process.wait()
    return returncode


def tail(log: Path, lines: int = 15) -> str:
    """The last lines of a step's log, for the error message of a failed tool."""
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
