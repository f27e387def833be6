"""Before any case runs: how long each case will take in the image, and whether it fits its timeout.

A case's time is the contract's time outside the windows (`[run] start_s`) plus its windows (counted over
the series' whole field of view, as for its timeout) times one window's time in the image, which the
model check predicts while its window runs and then measures (validation/window_probe.py). The plan is
printed as soon as the prediction is known; a case predicted past its timeout is refused then, in one
line with the numbers and the ways out, instead of running into the timeout hours later.
"""

from __future__ import annotations

import platform as host_platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from validation.cases import Case, RunTime
from validation.errors import GateError
from validation.window_probe import Prediction

ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
WAYS_OUT = (
    "gate it natively on an ARM runner (README: Release gate on ARM runners; --shard K/N spreads the cases "
    "over runners), give the case a larger [run] timeout_s in its case.toml, or gate it here with "
    "--cross-arch (PARTIAL: the whole pipeline on a crop of the study, the model on chosen windows of it)"
)
# the cross-arch tier's crops keep a timeout_s their case sets: the ways out of a crop that cannot finish
CROP_WAYS_OUT = (
    "gate it natively on an ARM runner (README: Release gate on ARM runners), or give the case a larger "
    "[run] timeout_s in its case.toml (its crop keeps it), or none (the crop's follows the window's time)"
)


def where(image_platform: str, machine: str | None = None) -> str:
    """How the image runs here: 'native linux/arm64', or 'linux/arm64 under QEMU on x86_64'."""
    machine = machine or host_platform.machine()
    image_arch = image_platform.rsplit("/", 1)[-1]
    if ARCHITECTURES.get(machine, machine) == ARCHITECTURES.get(image_arch, image_arch):
        return f"native {image_platform}"
    return f"{image_platform} under QEMU on {machine}"


@dataclass(frozen=True)
class CasePlan:
    """One case's prediction against its timeout."""

    name: str
    windows: int | None
    predicted_s: float | None  # None: the contract has no [run] table to count windows with
    timeout_s: float
    timeout_basis: str

    @property
    def fits(self) -> bool:
        return self.predicted_s is None or self.predicted_s <= self.timeout_s


def case_plan(case: Case, run_time: RunTime | None, window_s: float) -> CasePlan:
    if run_time is None or case.windows is None:
        return CasePlan(case.name, case.windows, None, case.timeout_s, case.timeout_basis)
    predicted = run_time.start_s + case.windows * window_s
    return CasePlan(case.name, case.windows, predicted, case.timeout_s, case.timeout_basis)


def table(plans: Sequence[CasePlan], late: str = "REFUSED") -> list[str]:
    """The plan as aligned lines: case, windows, predicted time, timeout, and `late` for a case that
    cannot finish within its timeout."""
    rows = [("case", "windows", "predicted", "timeout", "")]
    for plan in plans:
        rows.append(
            (
                plan.name,
                "?" if plan.windows is None else str(plan.windows),
                "not predicted" if plan.predicted_s is None else f"{plan.predicted_s:.0f} s",
                f"{plan.timeout_s:.0f} s",
                "fits" if plan.fits else late,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def refusal(
    plans: Sequence[CasePlan], run_time: RunTime, window_s: float, platform: str, ways_out: str = WAYS_OUT
) -> str:
    """One line: every case predicted past its timeout, with the numbers, and the ways out."""
    late = [plan for plan in plans if not plan.fits]
    one = late[0]
    per_window = f"{window_s:.0f} s a window in {platform}, one thread"
    if len(late) == 1:
        return (
            f"case {one.name}: predicted {one.predicted_s:.0f} s ({run_time.start_s:g} s + {one.windows} "
            f"windows × {per_window}), past its timeout of {one.timeout_s:.0f} s ({one.timeout_basis}); "
            f"{ways_out}"
        )
    listed = ", ".join(f"{plan.name} {plan.predicted_s:.0f} s > {plan.timeout_s:.0f} s" for plan in late)
    return (
        f"{len(late)} cases are predicted past their timeouts ({run_time.start_s:g} s + windows × "
        f"{per_window}): {listed}; {ways_out}"
    )


class Planner:
    """Hears the model check's window time (predicted, then measured), prints the plan each time it
    changes what the gate will do, and refuses the cases that cannot finish."""

    def __init__(
        self,
        cases: Sequence[Case],
        run_time: RunTime | None,
        image_platform: str,
        say: Callable[[str], None] = print,
        refuse: bool = True,
        ways_out: str = WAYS_OUT,
    ) -> None:
        self.cases, self.run_time, self.say, self.refuse = list(cases), run_time, say, refuse
        self.ways_out = ways_out
        self.platform = where(image_platform)
        self.printed: list[CasePlan] | None = None
        self.prediction: Prediction | None = None

    def update(self, prediction: Prediction) -> None:
        self.prediction = prediction
        plans = [case_plan(case, self.run_time, prediction.seconds) for case in self.cases]
        if self.printed is None or [p.fits for p in plans] != [p.fits for p in self.printed]:
            self.say(
                f"plan: one model window takes {prediction.describe()} in {self.platform}, one thread; "
                f"each case {self._basis()}:"
            )
            for line in table(plans, "REFUSED" if self.refuse else "past its timeout: not run whole"):
                self.say(line)
            self.printed = plans
        elif prediction.complete:
            self.say(f"plan: the window measured {prediction.seconds:.0f} s; every case still fits")
        if self.refuse and self.run_time is not None and not all(plan.fits for plan in plans):
            raise GateError(refusal(plans, self.run_time, prediction.seconds, self.platform, self.ways_out))

    def _basis(self) -> str:
        if self.run_time is None:
            return "not predicted: the app contract has no [run] table to count its windows with"
        return f"[run] start_s {self.run_time.start_s:g} s + windows × the window's time"
