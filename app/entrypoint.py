"""Command line entry: resolve -i/-m/-o as the SDK does, check them upfront, run the app, report one line.

Exit codes: 0 success; 2 a problem the site can fix (the stderr line names the file or folder and the fix);
1 an unexpected failure (one stderr line; ARMGATE_DEBUG=1 adds the traceback). stdout carries the progress
log, stderr only the final error line. Environment: MONAI_INPUTPATH / MONAI_OUTPUTPATH / MONAI_MODELPATH /
MONAI_WORKDIR as in the SDK; ARMGATE_NUM_THREADS (default 1: results are byte-identical run to run for a
given thread count); ARMGATE_DEBUG=1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import List, Optional

from app_config import MASK_FILE_NAME, SEG_FILE_NAME
from input_checks import AppInputError, check_input_dir, check_output_dir, prepare_workdir, resolve_model_file
from stages import APP_SET_UP, IMPORTS, INPUT_CHECKS, stage

PROGRAM = "multiorgan-seg"
EXIT_INPUT_ERROR = 2
EXIT_FAILURE = 1
logger = logging.getLogger(PROGRAM)


def thread_count() -> int:
    value = os.environ.get("ARMGATE_NUM_THREADS", "1")
    if not value.isdigit() or int(value) < 1:
        raise AppInputError(
            f"ARMGATE_NUM_THREADS={value!r} is not a positive integer; fix: unset it or use e.g. 1"
        )
    return int(value)


def configure_torch(threads: int) -> str:
    """Fixed thread count and deterministic kernels: same input, same bytes. Returns how.

    torch >= 1.11: deterministic algorithms, warning (not failing) on an op that has no deterministic
    kernel. torch < 1.11 has no warn_only: its strict mode raises on ops such as index_copy that are
    deterministic on CPU with distinct indices, so there determinism rests on what the strict mode
    would not add on CPU anyway: one fixed thread count, cuDNN's deterministic kernels with
    autotuning off, and a fixed cuBLAS workspace. The gate holds both stacks to the same golden mask.
    """
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set once in this process
        torch.set_num_interop_threads(1)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch 2's public call imports the compiler (torch._inductor, seconds of every emulated start)
    # only to set the compiler's own flag; the app runs TorchScript, never the compiler, so it sets
    # the kernels' flag alone.
    set_kernels_flag = getattr(torch._C, "_set_deterministic_algorithms", None)
    try:
        if set_kernels_flag is None:
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:
            set_kernels_flag(True, warn_only=True)
    except TypeError:  # torch < 1.11
        return f"torch {torch.__version__}: {threads} thread(s), deterministic cuDNN, fixed cuBLAS workspace"
    return f"torch {torch.__version__}: {threads} thread(s), deterministic algorithms (warn only)"


def _remove_results(output_dir: Path) -> None:
    """Drops earlier results first, so a run never leaves a stale seg.dcm beside a fresh mask."""
    for name in (MASK_FILE_NAME, SEG_FILE_NAME):
        path = output_dir / name
        if path.exists():
            path.unlink()


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def _input_error_in_chain(error: Optional[BaseException]) -> Optional[AppInputError]:
    """MONAI re-raises errors from inside transforms wrapped in RuntimeError; find the site's problem."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, AppInputError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _last_line(error: BaseException, limit: int = 300) -> str:
    """The gist of an exception: TorchScript errors, for one, end with the real message after a trace."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    gist = lines[-1] if lines else type(error).__name__
    return gist if len(gist) <= limit else gist[: limit - 3] + "..."


def run(argv: List[str]) -> None:
    """Validates everything it can, then runs the SDK application; raises on any failure."""
    with stage(IMPORTS):
        from monai.deploy.cli.main import parse_args
        from monai.deploy.core.app_context import AppContext

    args = parse_args(argv, default_command="exec")
    context = AppContext(vars(args))
    input_dir = Path(context.input_path).absolute()
    model_path = Path(context.model_path).absolute()
    output_dir = Path(context.output_path).absolute()

    with stage(INPUT_CHECKS):
        dicom_files = check_input_dir(input_dir)
        model_file = resolve_model_file(model_path)
        check_output_dir(output_dir)
    logger.info("determinism: %s", configure_torch(thread_count()))
    workdir = prepare_workdir(context.workdir)

    _remove_results(output_dir)
    try:
        with stage(APP_SET_UP):
            from seg_app import MultiOrganSegApp

            app = MultiOrganSegApp(input_dir, dicom_files)
        app.run(
            log_level=args.log_level,
            input=str(input_dir),
            output=str(output_dir),
            model=str(model_file),
            workdir=str(workdir),
        )
    except BaseException:
        _remove_results(output_dir)
        raise
    finally:
        shutil.rmtree(str(workdir), ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the app; returns the exit code. Only the final error line goes to stderr."""
    argv = list(sys.argv if argv is None else argv)
    error_stream = sys.stderr
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="[%(levelname)s] (%(name)s) - %(message)s"
    )
    logging.captureWarnings(True)
    # Library chatter written straight to stderr (warnings, prints) goes to the log on stdout instead.
    sys.stderr = sys.stdout
    try:
        run(argv)
        return 0
    except Exception as error:
        details = traceback.format_exc()
        input_error = _input_error_in_chain(error)
        if input_error is not None:
            message, code = f"{PROGRAM}: error: {input_error}", EXIT_INPUT_ERROR
        else:
            message = (
                f"{PROGRAM}: error: the run failed ({type(error).__name__}: {_last_line(error)}); "
                "rerun with ARMGATE_DEBUG=1 for the traceback"
            )
            code = EXIT_FAILURE
    finally:
        sys.stderr = error_stream
    sys.stdout.flush()
    if os.environ.get("ARMGATE_DEBUG") == "1":
        error_stream.write(details)
    print(_one_line(message), file=error_stream, flush=True)
    return code
