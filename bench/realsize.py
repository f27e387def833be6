"""Real-size networks: one model window's seconds in the arm64 image under QEMU and on the host.

The fixture model is 18 KB, which says little about what a team's model costs under emulation. Each
network of bench/networks.toml ([bench] networks) is built from MONAI's own class with its seed, traced
and saved on the host (nothing downloaded), then one 96³ window of it is timed, with the same torch
threads on both sides: on the host `--runs` times, each in a fresh process, and in the image
`emulated_runs` times (the 31 M network's window takes about ten minutes there), each its first
window after loading the model, as an app's first window is. The emulated runs are started with
`nice -n 10` inside the container, so that a long emulated window does not starve the machine.

Both sides time each torch operation as the gate's model check does (validation/window_probe.py),
so the same run also shows what the gate would have predicted after `budget_s` of the window: the
prediction's row is that prediction over the window's measured time.
"""

from __future__ import annotations

import math
import platform
import subprocess
import sys
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import networks
from bench.common import CONTAINER_PREFIX, Context, docker
from bench.figures import Figure, Headline, median
from validation import window_probe
from validation.errors import GateError
from validation.window_probe import Prediction

EMULATED_TIMEOUT_S = 7200.0  # one window of the 31 M network took 607.5 s on an idle 2-core machine
NICENESS = "10"


def settings(path: Path = networks.NETWORKS_TOML) -> dict[str, Any]:
    """[bench]: which networks, how many torch threads, the prediction's budget."""
    table = tomllib.loads(path.read_text()).get("bench", {})
    return {
        "networks": list(table.get("networks", [])),
        "threads": int(table.get("threads", 2)),
        "budget_s": float(table.get("budget_s", window_probe.load_settings().budget_s)),
    }


def headlines(name: str, label: str) -> tuple[Headline, ...]:
    return (
        Headline(f"realsize_{name}_host_s", f"7  {label}: one window, host"),
        Headline(f"realsize_{name}_emulated_s", f"7  {label}: one window, QEMU"),
        Headline(f"realsize_{name}_ratio", f"7  {label}: QEMU ÷ host, CPU time"),
        Headline(f"realsize_{name}_prediction", f"7  {label}: the gate's prediction ÷ measured"),
    )


RATE_SPREAD = Headline("realsize_flop_rate_spread", "7  QEMU GFLOP/s, fastest ÷ slowest network")


def _declared_headlines() -> tuple[Headline, ...]:
    declared = networks.load()
    names = settings()["networks"]
    rows = tuple(row for name in names if name in declared for row in headlines(name, declared[name].label))
    return (*rows, RATE_SPREAD)


HEADLINES = _declared_headlines()


def export(network: networks.Network, folder: Path) -> tuple[Path, int]:
    """The network's TorchScript and its parameter count, from a child process (the bench never imports
    torch itself)."""
    path = folder / f"{network.name}.ts"
    done = subprocess.run(
        [sys.executable, "-m", "bench.networks", network.name, str(path)],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    counted = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("parameters ")]
    if done.returncode != 0 or not path.is_file() or not counted:
        raise GateError(f"exporting {network.name} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return path, int(counted[0])


@dataclass(frozen=True)
class Window:
    """One timed window: wall seconds, CPU seconds of every thread, its operations, the torch that ran it."""

    seconds: float
    cpu_s: float
    ops: list[window_probe.Op]
    torch: str


def _window(lines: list[str], where: str) -> Window:
    """The window a probe's output reports."""
    windows = [stage for stage in window_probe.parse_stages(lines) if stage.get("stage") == "window"]
    if not windows:
        raise GateError(f"the {where} window gave no time: {(lines or ['no output'])[-1][:300]}")
    torch = next((line.split(" ", 1)[1] for line in lines if line.startswith("ARMGATE_TORCH ")), "?")
    seconds = float(windows[0]["s"])
    return Window(seconds, float(windows[0].get("cpu", seconds)), window_probe.parse_ops(lines), torch)


def host_window(model: Path, network: networks.Network, threads: int) -> Window:
    """One window on the host, in a fresh process."""
    script = window_probe.windows_script(str(model), network.window, threads)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                          timeout=window_probe.HOST_TIMEOUT_S)  # fmt: skip
    return _window(done.stdout.splitlines() + done.stderr.splitlines()[-3:], "host")


def emulated_window(
    ctx: Context, model: Path, window: tuple[int, ...], threads: int
) -> Window:
    """One window of shape `window` in the image, under `nice`, the model mounted read-only."""
    name = f"{CONTAINER_PREFIX}realsize-{uuid.uuid4().hex[:8]}"
    ctx.containers.append(name)
    script = window_probe.windows_script("/model/model.ts", window, threads)
    done = docker(
        "run", "--rm", "--name", name, "--platform", ctx.profile.platform, "--network", "none",
        "-v", f"{model.resolve()}:/model/model.ts:ro", "--entrypoint", "nice",
        ctx.image, "-n", NICENESS, "python3", "-c", script, timeout=EMULATED_TIMEOUT_S,
    )  # fmt: skip
    return _window(done.stdout.splitlines() + done.stderr.splitlines()[-3:], "emulated")


def _voxels(shape: tuple[int, ...]) -> int:
    return math.prod(shape[2:])


def section_realsize(ctx: Context) -> list[Figure]:
    """Per network: host and emulated seconds per window, their ratio, the gate's prediction, and what
    the probes it did not choose would have said (a smaller input; one FLOP rate for every network)."""
    config = settings()
    declared = networks.load()
    threads, budget = config["threads"], config["budget_s"]
    figures: list[Figure] = []
    rates: dict[str, float] = {}
    for name in config["networks"]:
        network = declared[name]
        model, parameters = export(network, ctx.scratch)
        host = [host_window(model, network, threads) for _ in range(ctx.runs)]
        print(f"  {name}: host {', '.join(f'{run.seconds:.2f} s' for run in host)}", flush=True)
        emulated = []
        for _ in range(network.emulated_runs):
            emulated.append(emulated_window(ctx, model, network.window, threads))
            print(f"  {name}: emulated {emulated[-1].seconds:.1f} s", flush=True)
        host_s, host_cpu = [run.seconds for run in host], median([run.cpu_s for run in host])
        host_ops = min(host, key=lambda run: abs(run.seconds - median(host_s))).ops
        emulated_s = [run.seconds for run in emulated]
        predictions = [window_probe.predict_at_budget(host_ops, run.ops, budget) for run in emulated]
        gflop = sum(op.flops for op in host_ops) / 1e9
        rates[name] = gflop / median([run.cpu_s for run in emulated])
        rows = headlines(name, network.label)
        window = "×".join(map(str, network.window[2:]))
        where = f"{parameters / 1e6:.1f} M parameters, one {window} window, {threads} threads"
        cpu = ", ".join(f"{run.cpu_s:.0f}" for run in emulated)
        small = ""
        if network.small_window is not None:
            seconds = emulated_window(ctx, model, network.small_window, threads).seconds
            scale = _voxels(network.window) / _voxels(network.small_window)
            shape, off = "×".join(map(str, network.small_window[2:])), seconds * scale / median(emulated_s)
            small = f"; not chosen, a {shape} input × {scale:g}: {seconds:.1f} s, {off:.2f} × measured"
        figures += [
            Figure(rows[0].key, rows[0].label, host_s, unit="s",
                   detail=f"{where}; {platform.machine()} torch {host[0].torch}, first window of a process; "
                          f"CPU {host_cpu:.1f} s"),
            Figure(rows[1].key, rows[1].label, emulated_s, unit="s",
                   detail=f"{where}; the image's torch {emulated[0].torch} under QEMU, nice -n {NICENESS}; "
                          f"CPU {cpu} s; {gflop:.1f} GFLOP, {rates[name]:.2f} GFLOP per CPU second"),
            Figure(rows[2].key, rows[2].label, [run.cpu_s / host_cpu for run in emulated],
                   detail="CPU seconds of the window (every thread), emulated ÷ the host's median: steady "
                          "when the machine is busy, where wall times are not"),
            Figure(rows[3].key, rows[3].label,
                   [p.seconds / seconds for p, seconds in zip(predictions, emulated_s, strict=True)],
                   detail=f"after {budget:g} s of the window: "
                          + "; ".join(map(Prediction.describe, predictions)) + small,
                   extra={"predictions": [p.seconds for p in predictions]}),
        ]  # fmt: skip
    if len(rates) > 1 and min(rates.values()) > 0:
        fastest, slowest = max(rates, key=rates.get), min(rates, key=rates.get)
        listed = ", ".join(f"{name} {rate:.2f}" for name, rate in rates.items())
        figures.append(
            RATE_SPREAD.figure(
                [rates[fastest] / rates[slowest]],
                detail=f"GFLOP per CPU second under QEMU: {listed}; one rate per platform is off by this",
            )
        )
    return figures
