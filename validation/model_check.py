"""Before any case runs: can the image's torch load the model and run one forward pass?

A device's torch is often older than the one the model was exported with, and an old torch can
abort inside the TorchScript reader rather than raise. So the model is loaded in the image, in
its own locked-down, resource-limited container, and the gate fails with one line naming the
model's archive (format, writer) and the image's torch, never mid-case.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from validation import bundle_model, engine, lock, probe_watch, run, window_probe
from validation.bundle_model import BundleFacts
from validation.contract import AppContract
from validation.errors import GateError

# the fixture model peaks far below this; the real UNETR and a 31 M DynUNet at one 96^3 window fit
MEMORY = "2g"
SETTINGS = window_probe.load_settings()
MARKER = "ARMGATE_MODEL_CHECK "
TORCH_MARKER = "ARMGATE_TORCH "
# Records torch 1.8 does not write: their presence says the archive comes from a newer torch.
NEWER_WRITER_RECORDS = ("byteorder", ".data/serialization_id")

# Runs in the image under its Python (3.9 on the oldest profile), after window_probe.OP_TIMER: one JSON
# line, or an abort. The window is run with each torch operation timed (the gate's prediction of a case's
# time, validation/window_probe.py); it still is one forward of one window in the image's torch.
PROBE = """
print("ARMGATE_TORCH " + torch.__version__, flush=True)
torch.set_num_threads(THREADS)
result = {"torch": torch.__version__, "stage": "load"}
try:
    begin = time.perf_counter()
    model = torch.jit.load(MODEL_PATH, map_location="cpu").eval()
    _say("ARMGATE_PROBE ", stage="loaded", s=round(time.perf_counter() - begin, 3))
    result["stage"] = "forward"
    window = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0))  # values as a scaled CT's
    output, seconds, timed = _forward(model, window)
    result.update(ok=True, output_shape=_shape(output), window_s=round(seconds, 3), timed=timed)
except Exception as error:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    result.update(ok=False, error=type(error).__name__ + ": " + (lines[-1] if lines else ""))
print("ARMGATE_MODEL_CHECK " + json.dumps(result), flush=True)
if result.get("ok") and BUNDLE_PACKAGES is not None:
    try:
        found = _bundle_probe(MODEL_PATH, BUNDLE_PACKAGES)
    except Exception as error:
        found = {"ok": False, "error": _first_line(error)}
    print("ARMGATE_BUNDLE " + json.dumps(found), flush=True)
"""


@dataclass(frozen=True)
class ArchiveFacts:
    """What the model file says about itself, read on the host without torch."""

    file_format: str
    writer: str

    def describe(self) -> str:
        return f"TorchScript file format {self.file_format}, {self.writer}"


@dataclass(frozen=True)
class ModelCheck:
    ok: bool
    torch: str
    line: str
    seconds: float
    output_shape: tuple[int, ...] = ()
    window_s: float | None = None  # the one window's own time in the image (one thread), when it ran
    partial: bool = False  # stopped once its window's time was predicted (--cross-arch): not remembered


@dataclass(frozen=True)
class BundleCheck:
    """A Bundle model's metadata, and whether the image's SDK bundle operator must read it (the app
    uses that operator)."""

    facts: BundleFacts
    through_operator: bool


def bundle_check(model: Path, app: AppContract) -> BundleCheck | None:
    """None for a plain TorchScript file; a GateError when the app needs a Bundle and this is none."""
    facts = bundle_model.bundle_facts(model)
    uses_operator = bundle_model.uses_sdk_bundle_operator(app.source)
    if facts is None:
        if uses_operator:
            inside, operator = f"<root>/{bundle_model.METADATA}", bundle_model.OPERATOR
            raise GateError(
                f"model check: {model} is a plain TorchScript (no {inside} inside), but the app in "
                f"{app.source} uses the SDK's {operator}, which reads a MONAI Bundle; pass the Bundle "
                "export of the model (README: Bundle models)"
            )
        return None
    return BundleCheck(facts, uses_operator)


def archive_facts(model: Path) -> ArchiveFacts:
    """The archive's declared file format and whether a torch newer than 1.8 wrote it."""
    try:
        with zipfile.ZipFile(model) as archive:
            names = archive.namelist()
            version = next((name for name in names if name.split("/", 1)[-1] == "version"), None)
            file_format = archive.read(version).decode().strip() if version else "unknown"
    except (zipfile.BadZipFile, OSError) as error:
        raise GateError(f"{model}: not a TorchScript archive ({error}); pass a torch.jit.save file") from None
    records = {name.split("/", 1)[-1] for name in names}
    newer = [record for record in NEWER_WRITER_RECORDS if record in records]
    writer = (
        f"written by a torch newer than 1.8 (has {', '.join(newer)})" if newer else "no newer-torch records"
    )
    return ArchiveFacts(file_format, writer)


def probe_script(app: AppContract, bundle: BundleCheck | None) -> str:
    """The probe for this app and model: a Bundle the app reads through the SDK's operator is also
    read by that operator, with the packages its metadata names looked up."""
    packages = sorted(bundle.facts.packages) if bundle is not None and bundle.through_operator else None
    values = {
        "BUNDLE_PACKAGES": packages,
        "SHAPE": tuple(app.model_input_shape),
        "MODEL_PATH": app.mounts.model,
        "THREADS": SETTINGS.threads,
    }
    return bundle_model.PROBE + window_probe.OP_TIMER + window_probe.fill(PROBE, values)


def _probe_command(
    image: str,
    name: str,
    model: Path,
    app: AppContract,
    platform: str,
    labels: dict[str, str],
    bundle: BundleCheck | None = None,
) -> list[str]:
    """`docker run` of the probe with the case runs' lock-down and its own smaller limits.

    The file itself is mounted where the app contract says (whatever its name), readable by the
    image's user; the input is one of the app's model windows (`[model] input_shape`)."""
    probe = probe_script(app, bundle)
    options = [
        "--platform", platform,
        "--memory", MEMORY, "--memory-swap", MEMORY, "--cpus", "1", *run.HARDENED_FLAGS,
        # An init as PID 1: torch aborting as PID 1 under QEMU never exits (PID 1 ignores the
        # SIGABRT qemu raises on itself); no core dump of a multi-GB emulated process either.
        "--init", "--ulimit", "core=0", *engine.label_args(labels),
        "-v", f"{model.resolve()}:{app.mounts.model}:ro", "--entrypoint", "python3",
    ]  # fmt: skip
    return engine.run_argv(name, options, image, ["-c", probe])


def check_model(
    image: str,
    model: Path,
    app: AppContract,
    platform: str = "linux/arm64",
    labels: dict[str, str] | None = None,
    on_prediction: Callable[[window_probe.Prediction], None] | None = None,
    say: Callable[[str], None] | None = None,
    stop_at_prediction: bool = False,
) -> ModelCheck:
    """Load the model in the image and run one forward, each operation timed; the container is always
    removed. `say` hears its progress; `on_prediction` the window's predicted time once `budget_s` of it
    has passed (the host times the same window meanwhile); it may raise, which ends the check. The
    measured time is the check's `window_s`. `stop_at_prediction`: end the window there (the
    cross-architecture tier, which runs whole windows of its own): the check then proves the model
    loads and runs its first operations."""
    facts = archive_facts(model)
    bundle = bundle_check(model, app)
    name = f"{run.CONTAINER_PREFIX}model-{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    command = _probe_command(image, name, model, app, platform, labels or {}, bundle)
    pool = ThreadPoolExecutor(max_workers=1)
    host = pool.submit(window_probe.host_ops, model, app.model_input_shape, SETTINGS.threads)
    lines: list[str] = []
    try:
        with engine.container(command, f"model check: docker run of {image} failed") as container_id:
            watchdog = probe_watch.Watchdog(name, SETTINGS.load_timeout_s)

            def predicted(prediction: window_probe.Prediction) -> None:
                watchdog.extend(SETTINGS.window_margin * (prediction.seconds - prediction.measured_s) + 60)
                if on_prediction is not None:
                    on_prediction(prediction)
                if stop_at_prediction and not prediction.complete:
                    raise _Predicted(prediction)

            watch = probe_watch.WindowWatch(host, SETTINGS.budget_s, predicted, say or (lambda text: None))
            try:
                waited = probe_watch.follow_to_exit(name, container_id, watch, lines, watchdog)
            except _Predicted as stopped:
                return _stopped_check(model, facts, lines, stopped.prediction, time.monotonic() - started)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    seconds = time.monotonic() - started
    output, exit_code = "\n".join(lines), waited.exit_code if waited else None
    return _verdict(
        model, facts, output, exit_code, seconds, app.model_input_shape, bundle, app.mounts.model,
        wait_error=waited.error if waited else "",
    )  # fmt: skip


class _Predicted(Exception):
    """The window's time is predicted and the caller asked for no more of it."""

    def __init__(self, prediction: window_probe.Prediction) -> None:
        super().__init__("predicted")
        self.prediction = prediction


def _stopped_check(
    model: Path, facts: ArchiveFacts, lines: list[str], prediction: window_probe.Prediction, seconds: float
) -> ModelCheck:
    torch = next((line[len(TORCH_MARKER) :] for line in lines if line.startswith(TORCH_MARKER)), "unknown")
    line = (
        f"model check: {model} ({facts.describe()}) loads in torch {torch} and ran the first "
        f"{prediction.ran} of its window's {prediction.total} operations (stopped at its time's prediction)"
    )
    return ModelCheck(True, torch, line, seconds, partial=True)


def _verdict(
    model: Path,
    facts: ArchiveFacts,
    output: str,
    exit_code: int | None,
    seconds: float,
    input_shape: tuple[int, ...],
    bundle: BundleCheck | None,
    mount: str,
    wait_error: str = "",
) -> ModelCheck:
    """One line either way: what loaded in which torch, or why not (`mount`: where the app opens it;
    `wait_error`: why `docker wait` failed, which is no timeout)."""
    lines = output.splitlines()
    torch = next((line[len(TORCH_MARKER) :] for line in lines if line.startswith(TORCH_MARKER)), "unknown")
    result = next((json.loads(line[len(MARKER) :]) for line in lines if line.startswith(MARKER)), None)
    described = facts.describe() + (f"; {bundle.facts.describe()}" if bundle is not None else "")
    subject = f"{model} ({described})"
    if result and result.get("ok"):
        shape = tuple(result["output_shape"])
        problem = _bundle_problem(bundle, shape, lines, mount)
        if problem:
            line = f"model check: {subject} loads in torch {torch}, but {problem}"
            return ModelCheck(False, torch, line, seconds, shape)
        window_s = result.get("window_s")
        line = f"model check: {subject} loads in torch {torch} and maps {input_shape} to {shape}"
        if window_s is not None:
            line += f" in {float(window_s):.1f} s (one thread)"
        if bundle is not None and bundle.through_operator:
            note = bundle_model.missing_packages_note(_bundle_answer(lines))
            line += f"; the image's SDK bundle operator reads its configs{note}"
        return ModelCheck(
            True, torch, line, seconds, shape, float(window_s) if window_s is not None else None
        )
    if exit_code is None and wait_error:
        reason = f"docker wait failed: {wait_error}"
    elif exit_code is None:
        reason = f"no answer within {seconds:.0f} s"
    elif result:
        reason = f"{result['stage']} failed: {result['error'][:300]}"
    else:
        # a C++ abort prints "what():  <message>"; under QEMU the last line is only qemu's own notice
        stripped = [line.strip() for line in lines]
        what = next((line[len("what():") :].strip() for line in stripped if line.startswith("what():")), "")
        last = what or next((line.strip() for line in reversed(lines) if line.strip()), "no output")
        died = "aborted (SIGABRT)" if exit_code == 134 else f"died (exit code {exit_code})"
        reason = f"the process {died}: {last[:300]}"
    line = (
        f"model check: {subject} cannot be used by the image's torch {torch}: {reason}; "
        f"export the model with torch {torch} (README: Exporting a model for an older device)"
    )
    return ModelCheck(False, torch, line, seconds)


def _bundle_problem(
    bundle: BundleCheck | None, shape: tuple[int, ...], lines: list[str], mount: str
) -> str | None:
    """What stops a Bundle that torch loaded: output channels other than its metadata declares, or
    (for an app that reads it through the SDK's operator) the operator itself."""
    if bundle is None:
        return None
    declared = bundle.facts.output_channels
    if declared is not None and len(shape) > 1 and shape[1] != declared:
        return (
            f"its metadata declares {declared} output channels and the network gives {shape[1]}; fix: export "
            "the Bundle with the network_data_format of this network"
        )
    if not bundle.through_operator:
        return None
    return bundle_model.operator_problem(bundle.facts, _bundle_answer(lines), mount)


def _bundle_answer(lines: list[str]) -> dict | None:
    """What the probe found about the SDK's bundle operator, if it said."""
    marker = bundle_model.BUNDLE_MARKER
    return next((json.loads(line[len(marker) :]) for line in lines if line.startswith(marker)), None)


def _image_identity(image: str) -> tuple[str, str]:
    """(image id, os/architecture), or a GateError naming the image when the engine lacks it."""
    facts = engine.require_image(image, f"model check: image {image} not found")
    return facts.id, facts.platform


def _read_memo(memo: Path) -> ModelCheck | None:
    try:
        data = json.loads(memo.read_text())
        window_s = data.get("window_s")
        return ModelCheck(
            True, str(data["torch"]), str(data["line"]), float(data["seconds"]),
            window_s=float(window_s) if window_s is not None else None,
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _memo(image_id: str, model: Path, app: AppContract) -> Path:
    """Where a pass is remembered: per (image id, model sha256, and the probe the app needs: its input
    shape, where the model is mounted and whether the SDK's bundle operator reads it)."""
    probe_text = probe_script(app, bundle_check(model, app)).encode()
    probe = hashlib.sha256(model.read_bytes() + probe_text).hexdigest()
    return lock.CACHE / "model-check" / f"{image_id.split(':')[-1][:24]}-{probe[:24]}.json"


def check_and_remember(image: str, model: Path, app: AppContract, platform: str = "linux/arm64",
                       labels: dict[str, str] | None = None) -> ModelCheck:  # fmt: skip
    """check_model, its pass remembered for the next gate of the same image and model."""
    image_id, _ = _image_identity(image)
    check = check_model(image, model, app, platform, labels)
    if check.ok:
        _remember(_memo(image_id, model, app), check)
    return check


def _remember(memo: Path, check: ModelCheck) -> None:
    memo.parent.mkdir(parents=True, exist_ok=True)
    partial = memo.with_name(f"{memo.name}.{uuid.uuid4().hex[:8]}.part")  # gates may run side by side
    facts = ("torch", "line", "seconds", "window_s")
    partial.write_text(json.dumps({name: getattr(check, name) for name in facts}))
    os.replace(partial, memo)


def require_usable_model(
    image: str,
    model: Path,
    app: AppContract,
    platform: str = "linux/arm64",
    labels: dict[str, str] | None = None,
    on_prediction: Callable[[window_probe.Prediction], None] | None = None,
    stop_at_prediction: bool = False,
) -> ModelCheck | None:
    """The gate's pre-check: print the line on success, raise it as a GateError on failure.

    A pass is remembered per (image id, model sha256, input shape): same bytes, same answer, so a
    second gate of the same image and model does not pay for another emulated torch start. An image of another
    architecture is left to the architecture check and the case runs, which name it. `on_prediction`
    hears the window's time in the image: predicted while it runs, then measured (or remembered).
    """
    bundle_check(model, app)  # a plain TorchScript for a Bundle app: one line, whatever is remembered
    image_id, found = _image_identity(image)
    if found != platform:
        print(f"model check: not run, image {image} is {found}, not {platform}", flush=True)
        return None
    memo = _memo(image_id, model, app)
    remembered = _read_memo(memo)
    if remembered is not None:
        print(f"{remembered.line} (passed before for this image and model)", flush=True)
        if remembered.window_s is not None and on_prediction is not None:
            on_prediction(window_probe.measured(remembered.window_s))
        return remembered

    def say(text: str) -> None:
        print(f"model check: {text}", flush=True)

    check = check_model(image, model, app, platform, labels, on_prediction, say, stop_at_prediction)
    if not check.ok:
        raise GateError(check.line)
    if check.partial:  # stopped at its prediction: nothing whole to remember
        print(f"{check.line} ({check.seconds:.0f} s)", flush=True)
        return check
    _remember(memo, check)
    print(f"{check.line} ({check.seconds:.0f} s)", flush=True)
    if check.window_s is not None and on_prediction is not None:
        on_prediction(window_probe.measured(check.window_s))
    return check
