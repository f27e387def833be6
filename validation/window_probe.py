"""How long one model window takes in the image, known before the window ends.

A real-size network's window under QEMU takes minutes (a 31 M-parameter DynUNet: about ten), so the
gate cannot wait for a whole window before it says whether the cases fit their timeouts. The probe runs
the window in the image with every torch operation timed as it ends (a TorchDispatchMode, torch >= 1.13;
it sees each aten call of a TorchScript model too), and prints one line per operation with its FLOPs
(convolutions, matrix products). The host runs the same window meanwhile, which lists every operation the
window will run. Once the image has spent `budget_s` in the window, each operation still to come costs
its FLOPs at the image's own rate on the like operations it already ran (same name and output shape,
else same name, else all), or, for an operation without FLOPs, its host time times the image's slowdown
on the like ones. A U-Net runs its highest-resolution layers first, which hold most of its work, so their
rate is measured before the prediction is made. Why this and not a smaller input or one FLOP rate per
platform: README "Predicting a case's time".
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from validation.errors import GateError

OP_MARKER = "ARMGATE_OP "
STAGE_MARKER = "ARMGATE_PROBE "
HOST_TIMEOUT_S = 600.0  # the host's own window of a real-size network takes seconds
TIMING_TOML = Path(__file__).with_name("timing.toml")

# Shared by every probe that runs a model window (Python >= 3.9): `_forward(model, window)` runs one
# window with each torch operation timed as it ends (one ARMGATE_OP line each) and returns (output,
# seconds, whether operations were timed: torch < 1.13 has no TorchDispatchMode, and its window is
# timed whole).
OP_TIMER = """
import json, time
import torch

def _say(marker, **fields):
    print(marker + json.dumps(fields), flush=True)

try:
    from torch.utils._python_dispatch import TorchDispatchMode as _Mode
except ImportError:
    _Mode = None

def _shape(value):
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    if isinstance(value, (list, tuple)):
        return next((list(v.shape) for v in value if isinstance(v, torch.Tensor)), [])
    return []

def _flops(name, args, out):
    try:
        if name in ("convolution", "_convolution"):
            transposed = len(args) > 6 and bool(args[6])
            per_element = 1
            for size in args[1].shape[1:]:
                per_element *= int(size)
            return 2 * (args[0] if transposed else out).numel() * per_element
        if name in ("mm", "bmm"):
            return 2 * args[0].numel() * int(args[1].shape[-1])
        if name == "addmm":
            return 2 * args[1].numel() * int(args[2].shape[-1])
    except Exception:
        pass
    return 0

if _Mode is not None:
    class _OpTimes(_Mode):
        count = 0
        started = time.perf_counter()
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            begin = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            end = time.perf_counter()
            name = str(getattr(func, "overloadpacket", func)).replace("aten.", "")
            _say("ARMGATE_OP ", i=self.count, op=name, shape=_shape(out), s=round(end - begin, 6),
                 f=_flops(name, args, out), t=round(end - self.started, 3))
            self.count += 1
            return out

def _forward(model, window):
    begin = time.perf_counter()
    with torch.no_grad():
        if _Mode is None:
            output = model(window)
        else:
            mode = _OpTimes()
            mode.started = begin
            with mode:
                output = model(window)
    return output, time.perf_counter() - begin, _Mode is not None
"""

# Runs windows of a model (the bench, the cross-architecture tier): one ARMGATE_PROBE line when the model
# has loaded and one per window; each window's output saved when OUTPUTS names files.
WINDOWS = """
_inputs, _outputs = INPUTS, OUTPUTS
print("ARMGATE_TORCH " + torch.__version__, flush=True)
torch.set_num_threads(THREADS)
begin = time.perf_counter()
model = torch.jit.load(MODEL_PATH, map_location="cpu").eval()
_say("ARMGATE_PROBE ", stage="loaded", s=round(time.perf_counter() - begin, 3))
for index in range(len(_inputs) if _inputs else 1):
    if _inputs:
        window = torch.load(_inputs[index])
    else:
        window = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0))
    cpu = time.process_time()
    output, seconds, timed = _forward(model, window)
    cpu = round(time.process_time() - cpu, 3)  # every thread's CPU seconds: steady on a busy machine
    shape = _shape(output)
    seconds = round(seconds, 3)
    _say("ARMGATE_PROBE ", stage="window", index=index, s=seconds, cpu=cpu, shape=shape, timed=timed)
    if _outputs:
        torch.save(output, _outputs[index])
"""


def fill(script: str, values: dict[str, object]) -> str:
    """Each placeholder of `script` (longest first, so that none is part of another) as its repr."""
    for key in sorted(values, key=len, reverse=True):
        script = script.replace(key, repr(values[key]))
    return script


def windows_script(
    model_path: str,
    shape: Sequence[int],
    threads: int,
    windows: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
) -> str:
    """The probe for one model: one window of noise of `shape`, or each input file of `windows` (its
    output saved to the matching file of `outputs`)."""
    return OP_TIMER + fill(
        WINDOWS,
        {
            "MODEL_PATH": model_path,
            "SHAPE": list(shape),
            "THREADS": int(threads),
            "INPUTS": list(windows) if windows else None,
            "OUTPUTS": list(outputs) if outputs else None,
        },
    )


@dataclass(frozen=True)
class Op:
    """One torch operation of a window as the probe timed it."""

    index: int
    name: str
    shape: tuple[int, ...]
    seconds: float
    flops: int = 0  # convolutions and matrix products: multiply-adds × 2 (0 for any other operation)
    wall: float = 0.0  # seconds since the window began, when it ended (0: not recorded)

    @property
    def key(self) -> tuple[str, tuple[int, ...]]:
        return (self.name, self.shape)


def parse_op(line: str) -> Op | None:
    """An operation from one line of the probe's output (anything may precede the marker)."""
    at = line.find(OP_MARKER)
    if at < 0:
        return None
    try:
        data = json.loads(line[at + len(OP_MARKER) :])
        shape = tuple(int(n) for n in data["shape"])
        flops, wall = int(data.get("f", 0)), float(data.get("t", 0.0))
        return Op(int(data["i"]), str(data["op"]), shape, float(data["s"]), flops, wall)
    except (ValueError, KeyError, TypeError):
        return None


def parse_ops(lines: Iterable[str]) -> list[Op]:
    return [op for op in map(parse_op, lines) if op is not None]


def parse_stages(lines: Iterable[str]) -> list[dict]:
    """The probe's own lines (loaded, window) in order."""
    found = []
    for line in lines:
        at = line.find(STAGE_MARKER)
        if at >= 0:
            try:
                found.append(json.loads(line[at + len(STAGE_MARKER) :]))
            except ValueError:
                continue
    return found


@dataclass(frozen=True)
class Prediction:
    """One window's predicted seconds in the image, and what it rests on."""

    seconds: float
    measured_s: float  # the image's seconds in the operations it ran
    ran: int  # operations the image ran
    total: int  # operations of the window (the host's count)
    host_share: float  # the share of the host's window time those operations took

    @property
    def complete(self) -> bool:
        return self.ran >= self.total

    def describe(self) -> str:
        if self.complete:
            return f"{self.seconds:.0f} s (measured whole)"
        return (
            f"{self.seconds:.0f} s (predicted from its first {self.ran} of {self.total} operations, "
            f"{self.host_share:.0%} of its time on the host, which took {self.measured_s:.0f} s here)"
        )


def measured(seconds: float) -> Prediction:
    """A window timed whole: its prediction is its measurement."""
    return Prediction(seconds, seconds, 1, 1, 1.0)


@dataclass(frozen=True)
class ProbeSettings:
    """validation/timing.toml [model_check]."""

    threads: int
    load_timeout_s: float
    budget_s: float
    window_margin: float


def load_settings(path: Path = TIMING_TOML) -> ProbeSettings:
    table = tomllib.loads(path.read_text()).get("model_check", {})
    try:
        return ProbeSettings(
            int(table["threads"]),
            float(table["load_timeout_s"]),
            float(table["budget_s"]),
            float(table["window_margin"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise GateError(f"{path}: [model_check] needs threads, load_timeout_s, budget_s, window_margin "
                        f"({error})") from None  # fmt: skip


def _rate_tables(host: Sequence[Op], image: Sequence[Op]) -> dict[bool, list[dict]]:
    """The image's seconds per unit of work on the operations it ran, paired with the host's by position
    while their names agree: per FLOP for operations that count FLOPs (convolutions, matrix products),
    per host second for the others; each by (name, output shape), by name, and over all."""
    tables: dict[bool, list[dict]] = {True: [{}, {}, {}], False: [{}, {}, {}]}
    for ran, planned in zip(image, host, strict=False):
        if ran.name != planned.name:
            break
        counted = planned.flops > 0
        amount = planned.flops if counted else planned.seconds
        for level, key in enumerate((planned.key, planned.name, "all")):
            seconds, work = tables[counted][level].get(key, (0.0, 0.0))
            tables[counted][level][key] = (seconds + ran.seconds, work + amount)
    return tables


def _cost(op: Op, tables: dict[bool, list[dict]]) -> float:
    """One operation still to come, in image seconds: its work at the image's rate for the closest kind
    it ran (same name and shape, else same name, else all of its sort), else its host time at the
    image's slowdown over everything it ran."""
    counted = op.flops > 0
    amount = op.flops if counted else op.seconds
    for level, key in enumerate((op.key, op.name, "all")):
        seconds, work = tables[counted][level].get(key, (0.0, 0.0))
        if work > 0:
            return amount * seconds / work
    seconds = sum(entry[0] for sort in tables.values() for entry in sort[2].values())
    host_seconds = sum(entry[1] for entry in tables[False][2].values())
    return op.seconds * (seconds / host_seconds if host_seconds > 0 else 1.0)


def predict(host: Sequence[Op], image: Sequence[Op]) -> Prediction:
    """The image's window time from the operations it has run so far (`image`, in order) and the whole
    window on the host (`host`, the same operations in the same order). A convolution or matrix product
    still to come costs its FLOPs at the image's own FLOP rate on the ones it ran of the same name and
    output shape (else the same name, else all of them): the image's rate is steady across a network's
    levels where the host's kernel choice is not (measured, README "Predicting a case's time"); any
    other operation costs its host time times the image's slowdown on the like ones it ran."""
    if not host:
        raise ValueError("no host operations to predict from")
    ran = min(len(image), len(host))
    in_ops = sum(op.seconds for op in image)
    wall = elapsed(image)
    # the interpreter's own time between operations, as a share; not what it spent before the first
    # (TorchScript prepares its graph at a module's first call)
    lead = max(image[0].wall - image[0].seconds, 0.0) if image and image[0].wall > 0 else 0.0
    between = max((wall - lead) / in_ops, 1.0) if in_ops > 0 else 1.0
    tables = _rate_tables(host, image)
    remaining = sum(_cost(op, tables) for op in host[ran:]) * between
    host_total = sum(op.seconds for op in host) or 1e-9
    host_share = sum(op.seconds for op in host[:ran]) / host_total
    return Prediction(wall + remaining, wall, ran, len(host), host_share)


def elapsed(ops: Sequence[Op]) -> float:
    """Seconds of the window so far: since it began, at the end of its last operation (the operations'
    own times summed where the probe did not record it)."""
    if ops and ops[-1].wall > 0:
        return ops[-1].wall
    return sum(op.seconds for op in ops)


def predict_at_budget(host: Sequence[Op], image: Sequence[Op], budget_s: float) -> Prediction:
    """What the probe would predict had it stopped once `budget_s` were spent in the window: the
    operations up to the first that ends past the budget (all of them when the window took less)."""
    upto = 0
    while upto < len(image) and elapsed(image[:upto]) < budget_s:
        upto += 1
    return predict(host, image[:upto])


def predict_running(host: Sequence[Op], image: Sequence[Op], running_s: float) -> Prediction:
    """`predict` while the next operation has been running for `running_s`: it takes at least that."""
    prediction = predict(host, image)
    if not image or len(image) >= len(host):
        return prediction
    in_ops = sum(op.seconds for op in image)
    lead = max(image[0].wall - image[0].seconds, 0.0) if image[0].wall > 0 else 0.0
    between = max((elapsed(image) - lead) / in_ops, 1.0) if in_ops > 0 else 1.0
    expected = _cost(host[len(image)], _rate_tables(host, image)) * between
    if running_s <= expected:
        return prediction
    return dataclasses.replace(prediction, seconds=prediction.seconds + running_s - expected)


def host_ops(model: Path, shape: Sequence[int], threads: int, timeout_s: float = HOST_TIMEOUT_S) -> list[Op]:
    """The window's operations timed on the host (this Python's torch), run in a child process so the
    gate never imports torch itself; [] when the host cannot run it (no torch, a model it cannot load)."""
    script = windows_script(str(model.resolve()), shape, threads)
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (subprocess.TimeoutExpired, OSError):
        return []
    return parse_ops(done.stdout.splitlines()) if done.returncode == 0 else []
