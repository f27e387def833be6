"""The bench's arithmetic, invalidation rules, baselines and README table (no Docker, no timings)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from bench import __main__ as cli
from bench import common, compare_speed, figures, overhead, readme, rebuild, scaling, size
from bench.figures import Figure, Target
from validation import build, cases, contract, run

# --- figures: medians, ratios, targets, invalid runs -------------------------------------------


def test_median_of_runs_and_no_runs() -> None:
    assert figures.median([3.0, 1.0, 2.0]) == 2.0
    assert figures.median([1.0, 2.0, 10.0, 4.0]) == 3.0
    with pytest.raises(ValueError, match="no runs"):
        figures.median([])


def test_ratios_pair_each_run_with_its_own_baseline() -> None:
    assert figures.ratios([11.0, 30.0, 9.0], [10.0, 20.0, 10.0]) == pytest.approx([1.1, 1.5, 0.9])
    assert figures.median(figures.ratios([11.0, 30.0, 9.0], [10.0, 20.0, 10.0])) == pytest.approx(1.1)
    with pytest.raises(ValueError, match="baselines"):
        figures.ratios([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="zero"):
        figures.ratios([1.0], [0.0])


def test_targets_for_costs_and_speedups() -> None:
    at_most = Target("<=", 1.10)
    assert at_most.met(1.10) and at_most.met(0.5) and not at_most.met(1.11)
    at_least = Target(">=", 20.0)
    assert at_least.met(20.0) and not at_least.met(19.9)
    assert str(at_most) == "≤ 1.1" and str(at_least) == "≥ 20"
    with pytest.raises(ValueError):
        Target("<", 1.0)


def test_a_missed_target_is_missed_and_the_table_shows_the_spread() -> None:
    missed = Figure("gate_overhead", "gate", [1.30, 1.20, 1.25], target=Target("<=", 1.10), detail="g / b")
    met = Figure("speedup", "speed-up", [43.0, 40.0, 19.0], target=Target(">=", 20.0))
    info = Figure("emulation", "QEMU penalty", [2.0])
    assert missed.value == 1.25 and missed.status == "MISSED"
    assert met.value == 40.0 and met.status == "met"  # the median decides, not one slow run
    assert info.status == "info" and info.spread() == ""
    assert figures.summarise([missed, met, info]) == {
        "met": ["speedup"],
        "missed": ["gate_overhead"],
        "info": ["emulation"],
        "no_data": [],
        "invalid": [],
    }
    row = next(
        line for line in figures.format_table([missed, met, info]).splitlines() if line.startswith("gate ")
    )
    assert "1.25×" in row and "1.2× – 1.3×" in row and "≤ 1.1" in row and "MISSED" in row and "g / b" in row
    data = json.loads(json.dumps(missed.to_dict()))
    assert (data["value"], data["min"], data["max"]) == (1.25, 1.2, 1.3)


def test_value_equality_uses_the_worst_run() -> None:
    figure = Figure(
        "diff", "max diff", [1e-9, 5e-6, 1e-9], unit="abs", target=Target("<=", 1e-6), aggregate="max"
    )
    assert figure.value == 5e-6 and figure.status == "MISSED"


def test_a_failed_measurement_stays_in_the_table_as_no_data() -> None:
    figure = figures.no_data("size", "size", "docker buildx build failed", Target("<=", 0.9))
    assert figure.value is None and figure.status == "no data"
    assert figures.summarise([figure])["no_data"] == ["size"]
    assert "not measured: docker buildx build failed" in figures.format_table([figure])


def test_a_gate_run_that_did_not_pass_invalidates_the_overhead_and_fails_the_bench() -> None:
    passed = [{"seconds": 60.0, "exit": 0}, {"seconds": 62.0, "exit": 0}]
    failed = [{"seconds": 40.0, "exit": 0}, {"seconds": 41.0, "exit": 1}]  # fast because it failed
    good = overhead.overhead_figures(2, passed, [58.0, 59.0], "3 cases")[0]
    bad = overhead.overhead_figures(2, failed, [58.0, 59.0], "3 cases")[0]
    assert good.status in ("met", "MISSED") and not good.invalid
    assert bad.status == "INVALID" and "run 2 exited 1" in bad.invalid
    assert bad.target is not None and bad.target.met(bad.value)  # a good-looking ratio still does not count
    summary = figures.summarise([good, bad])
    assert summary["invalid"] == [bad.key]
    assert figures.exit_code(summary, strict=False) == 1
    assert figures.exit_code(figures.summarise([good]), strict=False) == 0
    assert "run 2 exited 1" in figures.format_table([bad])
    assert figures.failed_runs([0, 0]) == "" and "run 1 exited 2" in figures.failed_runs([2])


def _metrics(
    failed: int = 0, not_evaluated: int = 0, options: tuple[str, ...] = (), shard: str | None = None
) -> dict:
    return {
        "counts": {"failed": failed, "not_evaluated": not_evaluated},
        "selection": {"options": list(options), "deselected": [], "shard": shard},
    }


NO_HOST_GATE = ["python", "-m", "validation", "acceptance", "--no-host", "--jobs", "2", "--image", "i"]


@pytest.mark.parametrize(
    ("code", "metrics", "command", "clean"),
    [
        (0, _metrics(), NO_HOST_GATE, 0),
        (3, _metrics(options=("--no-host",)), NO_HOST_GATE, 0),  # what the bench asked, all passed
        (3, _metrics(options=("-k test_image", "--no-host")), [*NO_HOST_GATE, "-k", "test_image"], 0),
        (3, _metrics(not_evaluated=2, options=("--no-host",)), NO_HOST_GATE, 3),  # less work than asked
        (3, _metrics(options=("--no-host",)), NO_HOST_GATE[:4], 3),  # a full gate that left host checks out
        (3, _metrics(options=("-k standard",)), NO_HOST_GATE, 3),  # a selection the bench never asked for
        (3, _metrics(options=("--shard 1/2",), shard="1/2"), NO_HOST_GATE, 3),
        (1, _metrics(failed=1, options=("--no-host",)), NO_HOST_GATE, 1),
    ],
    ids=["pass", "no-host-as-asked", "k-as-asked", "not-evaluated", "host-left-out-unasked", "other-k",
         "shard", "fail"],
)  # fmt: skip
def test_a_gate_counts_as_clean_only_when_it_passed_all_it_was_asked(
    code: int, metrics: dict, command: list[str], clean: int
) -> None:
    """The README's rule: a gate that did not pass invalidates its figure. A --no-host gate can only say
    PARTIAL; that PARTIAL is its pass, and no other PARTIAL is."""
    assert overhead.clean_exit(code, metrics, command) == clean


def test_a_gate_faster_than_its_own_docker_runs_is_invalid() -> None:
    """The gate performs the bare runs and more: a ratio below 1 measured load drift, not the gate."""
    passed = [{"seconds": 162.1, "exit": 0}, {"seconds": 190.0, "exit": 0}]
    figure = overhead.overhead_figures(1, passed, [189.1, 180.0], "1 case")[0]
    assert figure.status == "INVALID" and "run 1: 0.857" in figure.invalid and "run 2" not in figure.invalid
    fair = overhead.overhead_figures(1, passed, [150.0, 180.0], "1 case")[0]
    assert fair.status in ("met", "MISSED") and not fair.invalid


def test_strict_fails_on_a_missed_target_only() -> None:
    summary = figures.summarise([Figure("x", "x", [2.0], target=Target("<=", 1.0))])
    assert figures.exit_code(summary, strict=False) == 0 and figures.exit_code(summary, strict=True) == 1


CLEANING_CHILD = """
import signal, sys, time
def cleanup(*_):
    time.sleep(0.5)  # a gate removing its containers
    open(sys.argv[1], "w").write("cleaned")
    sys.exit(130)
signal.signal(signal.SIGINT, cleanup)
print("ready", flush=True)
time.sleep(120)
"""


# The bench as a background job of a script (started with & by a non-interactive shell): it inherits
# SIGINT ignored, and takes Ctrl-C over all the same, as the gate does.
AS_A_BACKGROUND_JOB = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
# Run in the bench process first for "while-it-starts": Popen returns only 2 s after the child has
# started, as when a loaded machine leaves the bench waiting for a core right after the fork.
SLOW_START = """
import subprocess, time
class SlowToReturn(subprocess.Popen):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        time.sleep(2)
subprocess.Popen = SlowToReturn
"""


@pytest.mark.parametrize(
    ("stop", "prelude"),
    [(signal.SIGINT, ""), (signal.SIGTERM, ""), (signal.SIGINT, SLOW_START)],
    ids=["ctrl-c", "sigterm", "ctrl-c-while-it-starts"],
)
def test_an_interrupted_bench_lets_its_gate_clean_up(
    tmp_path: Path, stop: signal.Signals, prelude: str
) -> None:
    """Ctrl-C on the bench (here: SIGINT to the bench process alone, started with SIGINT ignored), or
    SIGTERM as `timeout` sends, reaches the gate it runs as one SIGINT, and the bench waits for the
    gate's cleanup, also when it comes while the gate is being started; killed outright, a gate leaves
    its containers running."""
    marker, log = tmp_path / "cleaned", tmp_path / "child.log"
    child = [sys.executable, "-c", CLEANING_CHILD, str(marker)]
    bench = AS_A_BACKGROUND_JOB + prelude + (
        "import pathlib, bench.common as c\nfrom validation import interrupts\n"
        f"with interrupts.terminate_as_interrupt(): c.run_to_log({child!r}, pathlib.Path({str(log)!r}))"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", bench],
        cwd=build.ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    while "ready" not in (log.read_text() if log.exists() else "") and parent.poll() is None:
        threading.Event().wait(0.05)
    parent.send_signal(stop)
    _, stderr = parent.communicate(timeout=60)
    assert parent.returncode != 0 and "KeyboardInterrupt" in stderr
    assert marker.is_file() and marker.read_text() == "cleaned", "the child never got to its cleanup"


def test_held_interrupts_raise_at_release_and_an_ignored_one_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with common.HeldInterrupts() as held:
            os.kill(os.getpid(), signal.SIGINT)  # recorded, not raised, while a child starts
            with pytest.raises(KeyboardInterrupt):
                held.release()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with common.HeldInterrupts() as held:
            os.kill(os.getpid(), signal.SIGINT)
            held.release()  # a bench started with nohup or & keeps ignoring Ctrl-C
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# --- the gate's cost as the case count grows ----------------------------------------------------


def test_growth_is_a_cases_marginal_time_and_peak_memory_of_many_over_few() -> None:
    few = [{"seconds": 150.0, "exit": 0, "peak_rss_bytes": 200e6}]
    many = [{"seconds": 1200.0, "exit": 0, "peak_rss_bytes": 260e6}]  # 1050 s for 27 more cases
    per_case, memory, *_ = scaling.growth_figures(few, many, "standard")
    marginal = (1200.0 - 150.0) / (scaling.MANY - scaling.FEW)
    assert per_case.value == pytest.approx(marginal / (150.0 / scaling.FEW))
    assert per_case.status == "met"
    assert f"{marginal:.3f} / 50.000 s per added case / s per case of 3" in per_case.detail
    assert memory.value == pytest.approx(1.3) and memory.status == "MISSED"  # 30 % more memory
    failed = scaling.growth_figures(few, [{**many[0], "exit": 1}], "standard")
    assert {figure.status for figure in failed[:2]} == {"INVALID"}


def test_a_per_case_cost_that_grows_is_caught_where_whole_time_per_case_hides_it() -> None:
    """10 s a case among 3; 357 s for 30: whole time per case reads 11.9 / 10 (met), but each added case
    cost 327 / 27 = 12.1 s, 21 % more than a case of the small set."""
    few = [{"seconds": 30.0, "exit": 0, "peak_rss_bytes": 200e6}]
    many = [{"seconds": 357.0, "exit": 0, "peak_rss_bytes": 200e6}]
    assert (357.0 / scaling.MANY) / (30.0 / scaling.FEW) <= 1.2  # what the figure read before
    per_case = scaling.growth_figures(few, many, "standard")[0]
    assert per_case.value == pytest.approx(1.2111, abs=1e-4) and per_case.status == "MISSED"


def test_growth_copies_one_case_into_distinct_cases(tmp_path: Path) -> None:
    case = cases.discover(contract.load().default_cases)[0]
    found = cases.discover(scaling.copies(case, 4, tmp_path / "set"))
    assert len({copy.name for copy in found}) == 4
    assert {len(list(copy.dicom_dir.iterdir())) for copy in found} == {len(list(case.dicom_dir.iterdir()))}


def test_the_peak_wrapper_runs_the_public_cli_and_writes_its_own_peak(tmp_path: Path) -> None:
    peak = tmp_path / "peak"
    done = subprocess.run(
        [sys.executable, "-c", scaling.GATE_WITH_PEAK, str(peak), "merge", str(tmp_path / "none")],
        cwd=build.ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "armgate" in done.stderr  # the CLI's own one-line refusal
    assert int(peak.read_text()) > 10_000  # KiB: at least the interpreter itself


# A parent holding PARENT_MB of touched memory starts the peak wrapper: the bench process is that
# parent, and after its compare section it holds gigabytes.
PARENT_MB = 600
BIG_PARENT = """\
import subprocess, sys
held = bytearray({mb} * 2**20)
held[:: 4096] = b"x" * len(held[:: 4096])  # touch every page
subprocess.run(sys.argv[1:], check=False, capture_output=True)
"""


def test_the_peak_is_the_gates_own_not_its_parents(tmp_path: Path) -> None:
    """The wrapper reports the gate's own peak even when the process that starts it is large (Linux
    hands a parent's ru_maxrss on to its child at exec)."""
    peak = tmp_path / "peak"
    wrapper = [sys.executable, "-c", scaling.GATE_WITH_PEAK, str(peak), "merge", str(tmp_path / "none")]
    subprocess.run(
        [sys.executable, "-c", BIG_PARENT.format(mb=PARENT_MB), *wrapper], cwd=build.ROOT, check=True
    )
    own_mb = int(peak.read_text()) / 1024
    assert 10 < own_mb < PARENT_MB / 2, f"the wrapper reported {own_mb:.0f} MB"


# A parent larger than the app's host run on a fixture case runs it both ways: directly (the carry-over
# makes its peak the parent's) and from a fresh interpreter (the app's own).
STAGE_TIMES_PARENT_MB = 3000
STAGE_TIMES_PARENT = """\
import json, resource, sys
from pathlib import Path
from bench import stage_times
from validation import contract, run
held = bytearray({mb} * 2**20)
held[:: 4096] = b"x" * len(held[:: 4096])
app = contract.load()
dicom, folder = app.default_cases / "standard" / "dicom", Path(sys.argv[1])
direct = run.run_host(app, dicom, app.default_model, run.writable_output_dir(folder, "direct"), 600)
direct_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
fresh = stage_times.host_run_with_peak(
    app.path, dicom, app.default_model, run.writable_output_dir(folder, "fresh"), 600
)
print(json.dumps([direct.ok, direct_peak, fresh.ok, fresh.peak_memory_bytes]))
"""


@pytest.mark.slow
def test_the_host_runs_peak_is_the_apps_own_not_its_parents(tmp_path: Path) -> None:
    """bench.stage_times on the host reports the app run's peak even from a large process (the series
    it generates); read as the old way did, the same run reports the parent's size."""
    done = subprocess.run(
        [sys.executable, "-c", STAGE_TIMES_PARENT.format(mb=STAGE_TIMES_PARENT_MB), str(tmp_path)],
        cwd=build.ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    direct_ok, direct_peak, fresh_ok, fresh_peak = json.loads(done.stdout.strip().splitlines()[-1])
    assert direct_ok and fresh_ok
    assert direct_peak / 2**20 >= STAGE_TIMES_PARENT_MB, "the carry-over this guards against did not show"
    assert 100 < fresh_peak / 2**20 < STAGE_TIMES_PARENT_MB / 2, f"reported {fresh_peak / 2**20:.0f} MB"


def test_the_scaling_gate_is_the_users_gate_at_its_default_jobs(tmp_path: Path) -> None:
    ctx = type(
        "C", (), {"profile": type("P", (), {"name": "bookworm"})(), "app": contract.load(), "image": "img",
                  "model": tmp_path / "m.ts", "jobs": [1, 2], "host_runs": True},
    )()  # fmt: skip
    command = scaling.gate_command(ctx, tmp_path / "cases", tmp_path / "r", tmp_path / "peak")
    assert command[command.index("acceptance") + 1 : command.index("acceptance") + 3] == ["--jobs", "2"]
    assert "--no-host" not in command and command[command.index("--cases") + 1] == str(tmp_path / "cases")


# --- gate overhead at equal concurrency ---------------------------------------------------------


def test_bare_run_is_the_gates_command_with_rm(tmp_path: Path) -> None:
    mounts = contract.load().mounts
    gate_command = run.docker_run_command(
        "img", "n", mounts, tmp_path, tmp_path / "model.ts", tmp_path, "4g", "linux/arm64", True
    )
    bare = overhead.bare_run_command(gate_command)
    assert "--detach" not in bare and "--rm" in bare
    assert [arg for arg in bare if arg != "--rm"] == [arg for arg in gate_command if arg != "--detach"]
    assert bare.index("--rm") == gate_command.index("--detach")
    with pytest.raises(ValueError):
        overhead.bare_run_command(bare)


class _FakeCase:
    def __init__(self, name: str) -> None:
        self.name = name


class _FakeContext:
    def __init__(self, names: list[str]) -> None:
        self.cases = [_FakeCase(name) for name in names]


def test_bare_batch_runs_jobs_cases_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    lock, active, peak, order = threading.Lock(), [0], [0], []
    barrier = threading.Barrier(2, timeout=20)

    def fake_run(ctx: object, case: _FakeCase, label: str) -> float:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            order.append(case.name)
        if label.startswith("jobs2") and case.name in ("a", "b"):
            barrier.wait()  # raises unless the first two cases are in flight together
        with lock:
            active[0] -= 1
        return 1.0

    monkeypatch.setattr(overhead, "timed_bare_run", fake_run)
    _, by_case = overhead.timed_bare_batch(_FakeContext(["c", "a", "b"]), 1, 0)
    assert peak[0] == 1 and order == ["a", "b", "c"] and by_case == {"a": 1.0, "b": 1.0, "c": 1.0}
    peak[0] = 0
    overhead.timed_bare_batch(_FakeContext(["c", "a", "b"]), 2, 0)
    assert peak[0] == 2


def test_gate_command_passes_jobs_and_runs_the_public_gate(tmp_path: Path) -> None:
    ctx = type(
        "C",
        (),
        {
            "profile": type("P", (), {"name": "bookworm"})(),
            "app": contract.load(),
            "image": "img",
            "scratch": tmp_path,
            "model": tmp_path / "model.ts",
        },
    )()
    command = overhead.gate_command(ctx, 1, tmp_path / "r")
    assert command[1:4] == ["-m", "validation", "acceptance"] and "--no-host" in command
    assert command[command.index("--jobs") + 1] == "1" and "-k" not in command
    assert command[command.index("--app") + 1] == str(contract.DEFAULT_CONTRACT)
    assert overhead.gate_command(ctx, 2, tmp_path / "r", "test_image")[-2:] == ["-k", "test_image"]


def test_case_run_seconds_and_check_durations(tmp_path: Path) -> None:
    metrics = {"cases": {"a": {"run": {"seconds": 40.5}}, "b": {"run": {"seconds": 9.5}}}}
    assert overhead.case_run_seconds(metrics) == {"a": 40.5, "b": 9.5}
    with pytest.raises(overhead.GateError):
        overhead.case_run_seconds({"cases": {"a": {"run": None}}})
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite><testcase name="a" time="1.5"/><testcase name="b" time="40"/>'
        "</testsuite></testsuites>"
    )
    assert list(overhead.check_durations(junit).items()) == [("b", 40.0), ("a", 1.5)]


def test_jobs_default_to_one_and_the_gates_default() -> None:
    args = cli.parse_args([])
    assert args.runs == 3 and 1 in args.jobs and args.jobs == sorted(args.jobs)
    assert cli.parse_args(["--jobs", "2,1,2"]).jobs == [1, 2]
    assert cli.parse_args(["--quick"]).runs == 1 and cli.parse_args(["--quick"]).compare_runs == 1
    assert cli.parse_args(["--runs", "2", "--compare-runs", "1"]).compare_runs == 1
    assert cli.parse_args(["--runs", "2"]).compare_runs == 2
    assert cli.parse_args([]).scaling_runs == 1 and cli.parse_args(["--scaling-runs", "3"]).scaling_runs == 3
    assert cli.parse_args(["--sections", "size, compare"]).sections == ["size", "compare"]
    for bad in (
        ["--sections", "gate,nope"],
        ["--runs", "0"],
        ["--compare-runs", "0"],
        ["--scaling-runs", "0"],
        ["--jobs", "0"],
        ["--jobs", "x"],
    ):
        with pytest.raises(SystemExit):
            cli.parse_args(bad)


# --- rebuild through the real command -----------------------------------------------------------


def test_the_rebuild_copy_holds_the_real_build_and_its_own_image_name(tmp_path: Path) -> None:
    files = rebuild.tracked_files(build.ROOT)
    assert {
        "validation/build.py",
        "validation/sbom.py",
        "container/Dockerfile",
        rebuild.APP_FILE_TO_EDIT,
    } <= set(files)
    assert not any(name.startswith(("tests/", "fixtures/", "bench/")) for name in files)
    app_toml = tmp_path / "app.toml"
    app_toml.write_text('[app]\nname = "multiorgan-seg"            # image repository\nuid = 1000\n')
    assert rebuild.rename_app(app_toml, "bench-1234") == "multiorgan-seg-bench-1234"
    assert app_toml.read_text().startswith('[app]\nname = "multiorgan-seg-bench-1234"            # image')
    app_toml.write_text("[app]\n")
    with pytest.raises(rebuild.GateError, match="no name"):
        rebuild.rename_app(app_toml, "x")


def test_the_rebuild_runs_the_users_build_command(tmp_path: Path) -> None:
    command = rebuild.build_command("bookworm", tmp_path / "build.json", no_cache=False)
    assert command[1:4] == ["-m", "validation", "build"] and "--no-cache" not in command
    assert rebuild.build_command("bookworm", tmp_path / "build.json", no_cache=True)[-1] == "--no-cache"
    source = tmp_path / "seg_app.py"
    source.write_text("x = 1\n")
    rebuild.append_comment(source, "bench change 0")
    assert source.read_text() == "x = 1\n\n# bench change 0\n"


def test_build_cli_accepts_no_cache() -> None:
    import inspect

    assert "no_cache" in inspect.signature(build.build).parameters
    assert "--no-cache" in inspect.getsource(build.main)


# --- image size baselines -----------------------------------------------------------------------


def test_the_recipe_baseline_keeps_wheels_in_a_layer() -> None:
    text = size.BASELINES["recipe"].read_text()
    assert text.count("FROM ") == 1 and "COPY --from=wheels" in text
    assert "--no-cache-dir" not in text and "--no-index --find-links" in text


def test_the_single_stage_baseline_is_competent() -> None:
    text = size.BASELINES["single_stage"].read_text()
    assert text.count("FROM ") == 1 and "COPY --from=wheels" not in text
    assert "--mount=type=bind,from=wheels" in text and "--no-cache-dir" in text and "--require-hashes" in text
    assert not re.search(r"apt-get install|build-essential|gcc", text)
    entrypoint = f"ENTRYPOINT {json.dumps(list(contract.load().entrypoint))}"  # as build writes it
    assert entrypoint in text.splitlines()


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/opt/venv/lib/python3.11/site-packages/torch/__pycache__/x.cpython-311.pyc", "bytecode"),
        ("/opt/venv/lib/python3.11/site-packages/numpy/_core/tests/test_a.py", "test suites"),
        ("/opt/venv/lib/python3.11/site-packages/torch/include/ATen/Tensor.h", "C/C++ headers"),
        ("/opt/venv/lib/python3.11/site-packages/torch/lib/libfoo.a", "static libraries"),
        ("/opt/venv/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so", None),
        ("/opt/venv/lib/python3.11/site-packages/pytest_helpers/plugin.py", None),
        ("/opt/venv/lib/python3.11/site-packages/torch/test/Dict_test", "test suites"),
        ("/opt/venv/lib/python3.11/site-packages/numpy-2.4.6.dist-info/licenses/numpy/include/a.h", None),
    ],
)
def test_trimmable_paths(path: str, label: str | None) -> None:
    found = next((name for name, pattern in size.TRIMMABLE if pattern.search(path)), None)
    assert (found or "").startswith(label or "") and (found is None) == (label is None)


# --- compare speed: the pairs and value equality at 1e-6 ----------------------------------------

SMALL_SHAPE, SMALL_SPACING = (128, 128, 75), (3.12, 3.12, 6.0)  # the same 400×400×450 mm as the bench's


@pytest.fixture(scope="module")
def small_pairs() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return compare_speed.make_pairs(0, SMALL_SHAPE, SMALL_SPACING, displacement=6)


def test_the_pairs_are_what_they_are_called(small_pairs: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
    reference, outputs = small_pairs
    labels = set(np.unique(reference)) - {0}
    assert labels == set(range(1, len(compare_speed.ORGANS) + 1))
    assert np.array_equal(outputs["displaced"][6:], reference[:-6]) and not outputs["displaced"][:6].any()
    first, second = compare_speed.SWAPPED
    assert np.array_equal(outputs["swapped"] == first, reference == second)
    assert np.array_equal(outputs["swapped"] == second, reference == first)
    assert compare_speed.MISSING not in outputs["missing"] and compare_speed.MISSING in reference
    assert 0.5 < (outputs["near"] == reference).mean() < 1.0
    with pytest.raises(ValueError, match="unknown pair"):
        compare_speed.make_output("rotated", reference, np.random.default_rng(0), SMALL_SHAPE, SMALL_SPACING)


@pytest.mark.slow
@pytest.mark.parametrize("kind", compare_speed.PAIRS)
def test_armgate_equals_monai_within_1e6(
    kind: str, small_pairs: tuple[np.ndarray, dict[str, np.ndarray]]
) -> None:
    reference, outputs = small_pairs
    ours = compare_speed.armgate_metrics(outputs[kind], reference, SMALL_SPACING)
    theirs = compare_speed.monai_metrics(
        outputs[kind], reference, SMALL_SPACING, len(compare_speed.ORGANS), compare_speed.NSD_TOLERANCE_MM
    )
    differences = compare_speed.max_differences(ours, theirs)
    assert set(differences) == {"dice", "hd95", "nsd", "hd95_abs_mm"}
    headline = max(differences[metric] for metric in compare_speed.HEADLINE_METRICS)
    assert headline <= compare_speed.EQUAL_MAX_ABS_DIFF, differences


def test_the_difference_covers_exactly_what_its_detail_says(
    small_pairs: tuple[np.ndarray, dict[str, np.ndarray]],
) -> None:
    """Dice over every label either mask holds; NSD and HD95 only where both hold; nothing else. A
    disagreement on the label the output lacks shows in Dice alone."""
    reference, outputs = small_pairs
    ours = compare_speed.armgate_metrics(outputs["missing"], reference, SMALL_SPACING)
    fields = {"dice": "dice", "nsd": "nsd", "hd95": "hd95_mm"}
    theirs = {name: np.zeros(len(compare_speed.ORGANS)) for name in fields}
    for row in ours.per_label:
        for name, field in fields.items():
            theirs[name][row.label - 1] = getattr(row, field)
    for name in fields:  # MONAI disagrees on the missing organ only
        theirs[name][compare_speed.MISSING - 1] += 0.5
    differences = compare_speed.max_differences(ours, theirs)
    assert differences == {"dice": pytest.approx(0.5), "nsd": 0.0, "hd95": 0.0, "hd95_abs_mm": 0.0}
    assert set(compare_speed.COMPARED) == set(compare_speed.HEADLINE_METRICS) == set(fields)
    text = compare_speed.compared_text()
    assert "dice: |armgate − MONAI|, over every label either mask holds" in text
    assert "nsd: |armgate − MONAI|, over the labels both masks hold" in text
    assert "hd95: |armgate − MONAI| ÷ max(MONAI, 1 mm), over the labels both masks hold" in text
    assert "any value" not in compare_speed.MAX_DIFF.label and "volume" not in text


def _held_loads(monkeypatch: pytest.MonkeyPatch) -> threading.Barrier:
    """nibabel.load made to wait until a second file is being loaded at the same time."""
    import nibabel

    barrier, load = threading.Barrier(2, timeout=2), nibabel.load

    def load_together(path, *args, **kwargs):
        barrier.wait()  # BrokenBarrierError when the loads run one after the other
        return load(path, *args, **kwargs)

    monkeypatch.setattr(nibabel, "load", load_together)
    return barrier


def test_the_load_baseline_reads_both_files_on_two_threads_as_armgate_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The baseline of "armgate from files ÷ NIfTI load" does the reading under the same conditions as
    armgate's compare: both masks at once (gzip inflation releases the GIL)."""
    import nibabel

    from validation import compare

    paths = [tmp_path / "output.nii.gz", tmp_path / "reference.nii.gz"]
    for path in paths:
        nibabel.save(nibabel.Nifti1Image(np.ones((4, 4, 4), dtype=np.uint8), np.eye(4)), path)
    _held_loads(monkeypatch)
    assert len(compare.load_masks(*paths)) == 2  # armgate's own reading
    _held_loads(monkeypatch)
    assert [array.shape for array in compare_speed.load_both(paths)] == [(4, 4, 4)] * 2
    _held_loads(monkeypatch)
    with pytest.raises(threading.BrokenBarrierError):  # a one-after-the-other baseline fails this test
        [np.asanyarray(nibabel.load(path).dataobj) for path in paths]


@pytest.mark.slow
def test_the_equality_check_fails_when_the_spacing_differs(
    small_pairs: tuple[np.ndarray, dict[str, np.ndarray]],
) -> None:
    reference, outputs = small_pairs
    ours = compare_speed.armgate_metrics(outputs["near"], reference, SMALL_SPACING)
    theirs = compare_speed.monai_metrics(
        outputs["near"],
        reference,
        (3.12, 3.12, 3.0),
        len(compare_speed.ORGANS),
        compare_speed.NSD_TOLERANCE_MM,
    )
    differences = compare_speed.max_differences(ours, theirs)
    assert differences["hd95"] > 1e-3 and differences["hd95_abs_mm"] > 1e-3 and differences["dice"] <= 1e-6


# --- the README table and the import boundary ---------------------------------------------------


def _report(status_ratio: float = 0.95) -> dict:
    return {
        "command": "python -m bench",
        "started": "2026-11-26T15:00:00+00:00",
        "runs": 3,
        "seconds": 960,
        "sections": ["gate"],
        "machine": {
            "nproc": 2,
            "cpu": "AMD EPYC",
            "uname_m": "x86_64",
            "memory_gb": 23.4,
            "docker_engine": "26.1.5",
            "loadavg_start": [1.5, 1.0, 0.5],
        },
        "figures": [
            Figure(
                "gate_overhead_jobs2",
                "1  gate ÷ bare",
                [status_ratio, 1.0, 0.9],
                target=Target("<=", 1.10),
                detail="gate 60 s / bare 58 s",
            ).to_dict()
        ],
    }


def test_the_readme_table_is_rendered_from_the_report(tmp_path: Path) -> None:
    table = readme.render_table(_report())
    assert "2026-11-26 15:00 UTC" in table and "AMD EPYC" in table and "3 run(s)" in table
    assert "on revision not recorded" in table  # the figures hold for one commit: say which, or that none was
    assert "on revision 0123456789ab" in readme.render_table({**_report(), "revision": "0123456789ab"})
    # a section repeated another number of times says so
    assert "(3 run(s), scaling 1 per figure" in readme.render_table({**_report(), "scaling_runs": 1})
    assert "| 1  gate ÷ bare | 0.95× | 0.9× – 1× | ≤ 1.1 | met | gate 60 s / bare 58 s |" in table
    text = f"# x\n## Benchmarks\nintro\n{readme.BEGIN}\nold numbers\n{readme.END}\n## Next\n"
    updated = readme.replace_section(text, table)
    assert "old numbers" not in updated and updated.endswith(f"{readme.END}\n## Next\n") and table in updated
    with pytest.raises(readme.GateError, match="markers"):
        readme.replace_section("no markers here", table)


def test_readme_check_fails_when_the_table_is_stale(tmp_path: Path) -> None:
    report, page = tmp_path / "bench.json", tmp_path / "README.md"
    report.write_text(json.dumps(_report()))
    page.write_text(f"{readme.BEGIN}\n{readme.END}\n")
    args = ["--report", str(report), "--readme", str(page)]
    assert readme.main([*args, "--check"]) == 1
    assert readme.main(args) == 0 and readme.main([*args, "--check"]) == 0
    report.write_text(json.dumps(_report(1.3)))  # a new measurement: the README is stale again
    assert readme.main([*args, "--check"]) == 1


def test_the_readme_has_the_bench_table_markers() -> None:
    text = readme.README.read_text()
    assert text.count(readme.BEGIN) == 1 and text.count(readme.END) == 1


def test_the_gate_never_imports_the_bench() -> None:
    code = (
        "import sys, validation.__main__, validation.gate, validation.build, validation.report;"
        "print([m for m in sys.modules if m == 'bench' or m.startswith('bench.')])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=build.ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
    sources = "\n".join(path.read_text() for path in (build.ROOT / "validation").rglob("*.py"))
    assert not re.search(r"^\s*(from bench\b|import bench\b)", sources, flags=re.MULTILINE)


def test_bench_code_and_docs_name_no_issue_numbers() -> None:
    paths = [
        *(build.ROOT / "bench").glob("*.py"),
        *(build.ROOT / "container" / "bench").iterdir(),
        build.ROOT / "noxfile.py",
    ]
    for path in paths:
        assert not re.search(r"\bissue\s*#?\d|#\d{1,4}\b", path.read_text(), flags=re.IGNORECASE), path


def test_reports_of_disjoint_sections_merge_and_overlapping_ones_do_not() -> None:
    gate, compare = _report(), _report()
    gate["sections"] = ["gate"]
    compare["command"], compare["started"] = "python -m bench --sections compare", "2026-11-26T14:40:00+00:00"
    compare["machine"] = {**compare["machine"], "loadavg_start": [7.0, 6.0, 5.0]}
    compare["sections"], gate["sections"] = ["compare"], ["gate"]
    compare["figures"] = [Figure("speedup", "4  speed-up", [40.0], target=Target(">=", 20.0)).to_dict()]
    merged = readme.merge_reports([gate, compare])
    assert [f["key"] for f in merged["figures"]] == ["gate_overhead_jobs2", "speedup"]
    assert merged["started"] == "2026-11-26T14:40:00+00:00" and merged["machine"]["loadavg_start"][0] == 7.0
    assert merged["sections"] == ["gate", "compare"]
    with pytest.raises(readme.GateError, match="twice"):
        readme.merge_reports([gate, gate])


def test_a_merged_table_names_each_command_with_its_own_start_and_revision() -> None:
    """Sections measured hours apart, on different commits, must not read as one run."""
    gate, compare = _report(), _report()
    gate["revision"] = "0123456789ab"
    compare["command"], compare["started"] = "python -m bench --sections compare", "2026-11-26T14:40:00+00:00"
    compare["figures"] = [Figure("speedup", "4  speed-up", [40.0], target=Target(">=", 20.0)).to_dict()]
    compare["sections"] = ["compare"]
    table = readme.render_table(readme.merge_reports([gate, compare]))
    assert "by 2 commands" in table
    assert "- `python -m bench --sections compare`: started 2026-11-26 14:40 UTC" in table
    assert "14:40 UTC, revision not recorded" in table and "sections finished: compare" in table
    cut = {**compare, "sections": ["compare", "size"], "section_seconds": {"compare": 600.0}}
    cut.pop("seconds")  # a command cut by a time limit never wrote its total
    part = readme.merge_reports([gate, cut])["parts"][0]
    assert part["seconds"] == 600.0 and part["finished"] == ["compare"]
    assert "- `python -m bench`: started 2026-11-26 15:00 UTC, revision 0123456789ab, 16 min" in table
    assert table.index("14:40") < table.index("15:00")


def test_a_merged_report_merges_again_and_a_later_measurement_replaces_only_when_asked() -> None:
    """A table kept from earlier commands takes a new measurement of one section: the earlier figure
    goes, every command stays listed, and the one whose figure went says so."""
    gate, compare = _report(), _report()
    compare["command"], compare["started"] = "python -m bench --sections compare", "2026-11-26T14:40:00+00:00"
    compare["figures"] = [Figure("speedup", "4  speed-up", [40.0], target=Target(">=", 20.0)).to_dict()]
    compare["sections"], gate["sections"] = ["compare"], ["gate"]
    kept = readme.merge_reports([compare, gate])
    again = {**_report(), "command": "python -m bench --sections gate --jobs 1", "sections": ["gate"]}
    again["started"] = "2026-11-27T02:30:00+00:00"
    again["figures"] = [{**gate["figures"][0], "samples": [1.05], "section": "gate"}]
    with pytest.raises(readme.GateError, match="--replace"):
        readme.merge_reports([kept, again])
    merged = readme.merge_reports([kept, again], replace=True)
    assert [(f["key"], f["samples"]) for f in merged["figures"]] == [
        ("speedup", [40.0]), ("gate_overhead_jobs2", [1.05])
    ]  # fmt: skip
    assert [part["command"] for part in merged["parts"]] == [
        "python -m bench --sections compare", "python -m bench", "python -m bench --sections gate --jobs 1"
    ]  # fmt: skip
    assert [part.get("replaced") for part in merged["parts"]] == [None, ["gate_overhead_jobs2"], None]
    table = readme.render_table(merged)
    assert "replaced by a later command: gate_overhead_jobs2" in table and "by 3 commands" in table


def test_a_failed_section_shows_the_rows_it_would_have_measured() -> None:
    """The "no data" rows of a failed section are the ones its figures carry when it runs."""
    few = [{"seconds": 150.0, "exit": 0, "peak_rss_bytes": 200e6}]
    measured = scaling.growth_figures(few, few, "standard")[:2]
    shown = [row.missing("the gate could not run") for row in cli.failed_rows("scaling", [1])]
    assert [(f.key, f.label, f.target) for f in shown] == [(f.key, f.label, f.target) for f in measured]
    assert {f.status for f in shown} == {"no data"}
    gate = overhead.overhead_figures(2, [{"seconds": 120.0, "exit": 0}], [100.0], "1 case")[0]
    assert [row.key for row in cli.failed_rows("gate", [1, 2])] == ["gate_overhead_jobs1", gate.key]
    assert cli.failed_rows("gate", [2])[0].label == gate.label
    for section in ("rebuild", "size", "compare"):
        assert cli.failed_rows(section, [1]), section


def test_stage_table_sums_the_window_calls_and_names_image_model_and_load() -> None:
    from bench import stage_times

    def measured(windows: list[float], outside: float, sha: str) -> dict:
        stages = {"imports": 20.0, **{f"inference window {i}/3": s for i, s in enumerate(windows, 1)}}
        return {
            "where": "container", "started": "2026-11-27T02:20:52+00:00", "loadavg_start": 1.58,
            "image": "armgate/multiorgan-seg:bookworm", "image_id": "sha256:36ac4395f1fd5fa72",
            "model": {"path": "model.ts", "sha256": sha}, "stages": stages, "outside_stages_s": outside,
            "seconds": 20.0 + sum(windows) + outside, "peak_memory_bytes": 1.2e9,
        }  # fmt: skip

    before, after = measured([9.0, 8.0, 2.0], 15.0, "14d6" * 16), measured([4.0], 7.0, "1ab3" * 16)
    table = stage_times.render_table([before, after])
    assert "| inference (all window calls) | 19.0 s | 4.0 s |" in table
    assert "| **whole run** | 54.0 s | 31.0 s |" in table
    assert "| model sha256 | 14d614d614d6 | 1ab31ab31ab3 |" in table
    assert "armgate/multiorgan-seg:bookworm (36ac4395f1fd)" in table
    assert "| load average at start | 1.58 | 1.58 |" in table
