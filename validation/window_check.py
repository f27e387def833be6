"""The model's answers in the image against the host's, on chosen windows of a full study (the
cross-architecture tier).

The host's run of the full study records every window the app hands its model (validation/
window_recorder/), with a few facts of the host model's answer. K of them are chosen: the window with the
most organ voxels (where the mask is made), the one with the most voxels whose two highest logits are
within 1e-3 of each other (where a small numeric difference turns into another label), the one most
padded by the sliding window (a border), then by organ voxels. The image runs its model on exactly those
inputs (one thread, the case runs' lock-down); the host runs its own on them again, one window per call
as the image does, and the two logit tensors are compared: the largest absolute difference over the
largest absolute host logit must stay within `logit_rtol` (validation/timing.toml).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from validation import engine, probe_watch, run, window_probe
from validation.contract import AppContract

WINDOW_MOUNT = "/armgate-windows"  # the chosen inputs (read-only) and the image's outputs, in the container
TIE_WIDTH = "0.001"
COMPARE = """
import json, sys
import torch
host, image = torch.load(sys.argv[1]), torch.load(sys.argv[2])
if not isinstance(host, torch.Tensor) or not isinstance(image, torch.Tensor) or host.shape != image.shape:
    print(json.dumps({"error": "the outputs differ in kind or shape"}))
    sys.exit(0)
difference = (host.float() - image.float()).abs()
labels = (host.argmax(dim=1) != image.argmax(dim=1)) if host.dim() > 1 else torch.zeros(1, dtype=torch.bool)
print(json.dumps({
    "max_abs": float(difference.max()), "scale": float(host.abs().max()),
    "labels_differ": int(labels.sum()), "voxels": int(labels.numel()),
}))
"""


@dataclass(frozen=True)
class Chosen:
    """A window of the full study and why it was chosen."""

    index: int
    why: str
    facts: Mapping[str, object]

    @property
    def file(self) -> str:
        return f"window-{self.index:04d}.pt"


def recorded(folder: Path) -> list[tuple[int, dict]]:
    """(index, facts) of every window the host's run recorded, in call order."""
    found = []
    for path in sorted(folder.glob("window-*.json")):
        try:
            found.append((int(path.stem.split("-")[1]), json.loads(path.read_text())))
        except (ValueError, OSError):
            continue
    return found


def choose(windows: list[tuple[int, dict]], k: int) -> list[Chosen]:
    """Up to `k` distinct windows, by the criteria in order (see the module's docstring)."""
    criteria: list[tuple[str, Callable[[dict], float]]] = [
        ("most organ voxels", lambda facts: float(facts.get("foreground", 0))),
        ("most near-ties", lambda facts: float(facts.get("ties", {}).get(TIE_WIDTH, 0))),
        ("most padded", lambda facts: float(facts.get("input_zeros", 0))),
    ]
    chosen: list[Chosen] = []
    taken: set[int] = set()
    for why, score in criteria:
        ranked = sorted(windows, key=lambda window, score=score: (-score(window[1]), window[0]))
        pick = next((window for window in ranked if window[0] not in taken), None)
        if pick is not None and len(chosen) < k:
            chosen.append(Chosen(pick[0], why, pick[1]))
            taken.add(pick[0])
    by_organ = sorted(windows, key=lambda window: (-float(window[1].get("foreground", 0)), window[0]))
    for index, facts in by_organ:
        if len(chosen) >= k:
            break
        if index not in taken:
            chosen.append(Chosen(index, "organ voxels", facts))
            taken.add(index)
    return chosen


@dataclass
class WindowsResult:
    """The image's answers against the host's on the chosen windows."""

    chosen: list[Chosen]
    rtol: float
    per_window: list[dict] = field(default_factory=list)
    problem: str = ""  # why there is no comparison (the image run failed, ...)
    seconds: float = 0.0

    @property
    def worst(self) -> float:
        return max((entry["max_abs"] / max(entry["scale"], 1e-12) for entry in self.per_window), default=0.0)

    @property
    def ok(self) -> bool:
        return not self.problem and bool(self.per_window) and self.worst <= self.rtol

    def line(self, total: int) -> str:
        if self.problem:
            return self.problem
        shown = "; ".join(
            f"window {entry['index']} ({entry['why']}): max |Δ| {entry['max_abs']:.2e} of "
            f"{entry['scale']:.3g}, {entry['labels_differ']} of {entry['voxels']} argmax labels differ"
            for entry in self.per_window
        )
        verdict = "within" if self.ok else "past"
        return (
            f"{len(self.per_window)} of the full study's {total} windows, the image's logits against the "
            f"host's: largest |Δ| ÷ largest |host logit| {self.worst:.2e}, {verdict} {self.rtol:g}: {shown}"
        )


def _host_outputs(model: Path, inputs: list[Path], outputs: list[Path]) -> str:
    """The host model's answer to each input, one window per call (as the image runs them)."""
    script = window_probe.windows_script(
        str(model.resolve()), (), 1, [str(p) for p in inputs], [str(p) for p in outputs]
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    return "" if done.returncode == 0 else f"the host's run of the windows failed: {done.stderr[-300:]}"


def _image_outputs(
    image: str, app: AppContract, model: Path, folder: Path, files: list[str], platform: str,
    labels: Mapping[str, str], say: Callable[[str], None], timeout_s: float | None,
) -> str:  # fmt: skip
    """The image's answer to each input, in one locked-down container; '' or why it failed."""
    name = f"{run.CONTAINER_PREFIX}windows-{uuid.uuid4().hex[:12]}"
    inside = [f"{WINDOW_MOUNT}/{file}" for file in files]
    answers = [f"{WINDOW_MOUNT}/image-{file}" for file in files]
    script = window_probe.windows_script(app.mounts.model, (), 1, inside, answers)
    options = [
        "--platform", platform, "--memory", "4g", "--memory-swap", "4g", *run.HARDENED_FLAGS, "--init",
        *engine.label_args(labels), "-v", f"{model.resolve()}:{app.mounts.model}:ro",
        "-v", f"{folder.resolve()}:{WINDOW_MOUNT}", "--entrypoint", "python3",
    ]  # fmt: skip
    command = engine.run_argv(name, options, image, ["-c", script])
    lines: list[str] = []
    watch = probe_watch.WindowWatch(None, float("inf"), None, say)
    with engine.container(command, f"cross-arch windows: docker run of {image} failed") as container_id:
        watchdog = probe_watch.Watchdog(name, timeout_s if timeout_s is not None else float("inf"))
        waited = probe_watch.follow_to_exit(name, container_id, watch, lines, watchdog)
    if waited is None:
        return f"the image's run of the chosen windows gave no answer within {timeout_s:.0f} s"
    if waited.error:
        return f"the image's run of the chosen windows: docker wait failed: {waited.error}"
    exit_code = waited.exit_code
    if exit_code != 0:
        last = next((line for line in reversed(lines) if line.strip()), "no output")
        return f"the image's run of the chosen windows exited with {exit_code}: {last[:300]}"
    return ""


def compare_windows(
    image: str,
    app: AppContract,
    model: Path,
    folder: Path,
    chosen: list[Chosen],
    rtol: float,
    platform: str,
    labels: Mapping[str, str],
    say: Callable[[str], None] = lambda text: None,
    image_model: Path | None = None,
    timeout_s: float | None = None,
) -> WindowsResult:
    """Run the chosen inputs (`folder`/window-NNNN.pt) in the image and on the host and compare the
    answers. `image_model`: another file for the image side (a test's deliberately perturbed weights)."""
    started = time.monotonic()
    result = WindowsResult(chosen, rtol)
    files = [c.file for c in chosen]
    folder.chmod(0o777)  # the image's user writes its answers here
    side = image_model or model
    problem = _image_outputs(image, app, side, folder, files, platform, labels, say, timeout_s)
    inputs, answers = [folder / f for f in files], [folder / f"host-{f}" for f in files]
    problem = problem or _host_outputs(model, inputs, answers)
    if problem:
        result.problem = problem
        return result
    for c in chosen:
        done = subprocess.run(
            [sys.executable, "-c", COMPARE, str(folder / f"host-{c.file}"), str(folder / f"image-{c.file}")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        try:
            entry = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            entry = {"error": done.stderr[-300:] or "no answer"}
        if "error" in entry:
            result.problem = f"window {c.index}: {entry['error']}"
            return result
        result.per_window.append({"index": c.index, "why": c.why, **entry})
    result.seconds = time.monotonic() - started
    return result


def keep_only(folder: Path, chosen: list[Chosen]) -> None:
    """Delete the recorded windows that were not chosen (a full study's are a few hundred MB)."""
    keep = {c.file for c in chosen} | {c.file.replace(".pt", ".json") for c in chosen}
    for path in folder.glob("window-*"):
        if path.name not in keep:
            path.unlink()
    shutil.rmtree(folder / "__pycache__", ignore_errors=True)
