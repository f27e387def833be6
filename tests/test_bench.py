"""The bench's arithmetic and verdicts (no Docker): medians, per-run ratios, targets, the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from validation import bench, contract, run


def test_median_of_runs_and_no_runs() -> None:
    assert bench.median([3.0, 1.0, 2.0]) == 2.0
    assert bench.median([1.0, 2.0, 10.0, 4.0]) == 3.0
    with pytest.raises(ValueError, match="no runs"):
        bench.median([])


def test_ratios_pair_each_run_with_its_own_baseline() -> None:
    assert bench.ratios([11.0, 30.0, 9.0], [10.0, 20.0, 10.0]) == pytest.approx([1.1, 1.5, 0.9])
    # The median of per-run ratios, not the ratio of medians: a slow repeat affects both sides.
    assert bench.median(bench.ratios([11.0, 30.0, 9.0], [10.0, 20.0, 10.0])) == pytest.approx(1.1)
    with pytest.raises(ValueError, match="baselines"):
        bench.ratios([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="zero"):
        bench.ratios([1.0], [0.0])


def test_targets_for_costs_and_speedups() -> None:
    at_most = bench.Target("<=", 1.15)
    assert at_most.met(1.15) and at_most.met(0.5) and not at_most.met(1.16)
    at_least = bench.Target(">=", 20.0)
    assert at_least.met(20.0) and at_least.met(43.0) and not at_least.met(19.9)
    assert str(at_most) == "≤ 1.15" and str(at_least) == "≥ 20"
    with pytest.raises(ValueError):
        bench.Target("<", 1.0)


def test_a_missed_target_is_reported_as_missed() -> None:
    missed = bench.Figure("gate_overhead", "gate", [1.30, 1.20, 1.25], target=bench.Target("<=", 1.15))
    met = bench.Figure("speedup", "speed-up", [43.0, 40.0, 19.0], target=bench.Target(">=", 20.0))
    info = bench.Figure("emulation", "QEMU penalty", [2.0, 3.0, 4.0])
    assert missed.value == 1.25 and missed.status == "MISSED"
    assert met.value == 40.0 and met.status == "met"  # one slow run does not decide: the median does
    assert info.status == "info"
    summary = bench.summarise([missed, met, info])
    assert summary == {"met": ["speedup"], "missed": ["gate_overhead"], "info": ["emulation"], "no_data": []}
    table = bench.format_table([missed, met, info])
    row = next(line for line in table.splitlines() if line.startswith("gate "))
    assert "1.25×" in row and "≤ 1.15" in row and "MISSED" in row


def test_value_equality_uses_the_worst_run() -> None:
    figure = bench.Figure(
        "diff", "max |armgate − MONAI|", [1e-9, 5e-6, 1e-9], unit="abs",
        target=bench.Target("<=", bench.EQUAL_MAX_ABS_DIFF), aggregate="max",
    )  # fmt: skip
    assert figure.value == 5e-6 and figure.status == "MISSED"


def test_a_failed_measurement_stays_in_the_table_as_no_data() -> None:
    figure = bench.no_data("size_over_naive", "size", "docker buildx build failed", bench.Target("<=", 0.9))
    assert figure.value is None and figure.status == "no data"
    assert bench.summarise([figure])["no_data"] == ["size_over_naive"]
    assert "not measured: docker buildx build failed" in bench.format_table([figure])
    data = figure.to_dict()
    assert data["value"] is None and data["target"] == {"op": "<=", "limit": 0.9}
    json.dumps(data)


def test_figure_json_round_trips() -> None:
    figure = bench.Figure("noop", "no-op", [2.0, 3.0, 2.5], unit="s", target=bench.Target("<=", 10.0))
    data = json.loads(json.dumps(figure.to_dict()))
    assert data["value"] == 2.5 and data["status"] == "met" and data["samples"] == [2.0, 3.0, 2.5]
    assert figure.formatted() == "2.5 s"


def test_bare_run_is_the_gates_command_with_rm(tmp_path: Path) -> None:
    mounts = contract.load().mounts
    gate_command = run.docker_run_command(
        "img", "n", mounts, tmp_path, tmp_path, tmp_path, "4g", "linux/arm64", True
    )
    bare = bench.bare_run_command(gate_command)
    assert "--detach" not in bare and "--rm" in bare
    assert [arg for arg in bare if arg != "--rm"] == [arg for arg in gate_command if arg != "--detach"]
    assert bare.index("--rm") == gate_command.index("--detach")  # same flags, same order
    with pytest.raises(ValueError):
        bench.bare_run_command(bare)


def test_app_change_is_a_trailing_comment(tmp_path: Path) -> None:
    source = tmp_path / "seg_app.py"
    source.write_text("x = 1\n")
    bench.append_comment(source, "bench change 0")
    assert source.read_text() == "x = 1\n\n# bench change 0\n"
    compile(source.read_text(), str(source), "exec")


def test_quick_means_one_run_and_sections_are_checked() -> None:
    assert bench.parse_args(["--quick"]).runs == 1
    assert bench.parse_args([]).runs == 3
    assert bench.parse_args(["--sections", "size, compare"]).sections == ["size", "compare"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--sections", "gate,nope"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--runs", "0"])


def test_naive_dockerfile_is_single_stage_and_keeps_wheels_and_pip_cache() -> None:
    text = bench.NAIVE_DOCKERFILE.read_text()
    assert text.count("FROM ") == 1
    assert "COPY --from=wheels" in text and "requirements.txt" in text
    assert "--no-cache-dir" not in text and "PIP_NO_CACHE_DIR" not in text
    assert "--no-index --find-links" in text


def test_the_gates_own_container_time_comes_from_its_metrics() -> None:
    metrics = {"cases": {"a": {"run": {"seconds": 40.5}}, "b": {"run": {"seconds": 9.5}}}}
    assert bench.container_seconds(metrics) == 50.0
    with pytest.raises(bench.GateError):
        bench.container_seconds({"cases": {"a": {"run": None}}})


def test_slowest_checks_from_junit(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite><testcase name="a" time="1.5"/><testcase name="b" time="40"/>'
        '<testcase name="c" time="0.1"/></testsuite></testsuites>'
    )
    assert bench.slowest_checks(junit, 2) == [("b", 40.0), ("a", 1.5)]
