"""The plan before any case runs: each case's predicted time against its timeout, and the refusal of a
case that cannot finish, in one line with the numbers and the ways out (validation/plan.py). The
window's time is a stub here (a Prediction); tests/test_window_probe.py holds how it is predicted."""

from __future__ import annotations

import pytest

from validation import cases, contract, model_check, plan, window_probe
from validation.errors import GateError

APP = contract.load()
RUN_TIME = cases.run_time(APP)


def _case(name: str, windows: int | None, timeout_s: float, basis: str = "its case.toml") -> cases.Case:
    return cases.Case(
        name, APP.default_cases / name, APP.default_cases / name / "dicom", (1,), {}, timeout_s, "4g", {},
        timeout_basis=basis, windows=windows,
    )  # fmt: skip


def _predicted(seconds: float) -> window_probe.Prediction:
    return window_probe.Prediction(seconds, 90.0, 7, 143, 0.2)


def test_the_plan_is_printed_and_a_case_that_fits_runs() -> None:
    said: list[str] = []
    planner = plan.Planner([_case("small", 4, 900.0), _case("none", None, 600.0)], RUN_TIME, "linux/arm64",
                           said.append)  # fmt: skip
    planner.update(_predicted(100.0))
    text = "\n".join(said)
    assert "one model window takes 100 s (predicted from its first 7 of 143 operations" in text
    rows = {line.split()[0]: line.split()[1:] for line in said[1:]}
    assert rows["small"] == ["4", "850", "s", "900", "s", "fits"]  # 450 s + 4 × 100 s
    assert rows["none"] == ["?", "not", "predicted", "600", "s", "fits"]


def test_a_case_predicted_past_its_timeout_is_refused_in_one_line_with_the_ways_out() -> None:
    """Must fail: 450 s + 25 windows × 612 s is past 4650 s; one window less per case would not be."""
    basis = "2 × (450 s + 25 windows × 75 s)"
    cases_ = [_case("full-size", 25, 4650.0, basis), _case("small", 4, 3000.0)]
    said: list[str] = []
    with pytest.raises(GateError) as refused:
        plan.Planner(cases_, RUN_TIME, "linux/arm64", said.append).update(_predicted(612.0))
    line = str(refused.value)
    assert "\n" not in line
    assert line.startswith("case full-size: predicted 15750 s (450 s + 25 windows × 612 s")
    assert f"past its timeout of 4650 s ({basis})" in line
    for way in ("ARM runner", "--shard K/N", "[run] timeout_s", "--cross-arch"):
        assert way in line, way
    assert any("REFUSED" in text for text in said)
    fits = plan.Planner([_case("full-size", 25, 4650.0, basis)], RUN_TIME, "linux/arm64", said.append)
    fits.update(_predicted(167.0))  # 450 + 25 × 167 = 4625 s: within


def test_several_late_cases_are_named_together_and_the_tier_does_not_refuse() -> None:
    late = [_case("a", 10, 600.0), _case("b", 20, 600.0)]
    both = r"^2 cases are predicted past their timeouts .*: a 1450 s > 600 s, b 2450 s > 600 s;"
    with pytest.raises(GateError, match=both):
        plan.Planner(late, RUN_TIME, "linux/arm64", lambda text: None).update(_predicted(100.0))
    plan.Planner(late, RUN_TIME, "linux/arm64", lambda text: None, refuse=False).update(_predicted(100.0))


def test_where_the_image_runs() -> None:
    assert plan.where("linux/arm64", "x86_64") == "linux/arm64 under QEMU on x86_64"
    assert plan.where("linux/arm64", "aarch64") == "native linux/arm64"
    assert plan.where("linux/amd64", "x86_64") == "native linux/amd64"


def test_a_remembered_check_plans_with_its_measured_window(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A model checked before is not run again: its remembered window time still plans, and refuses."""
    from validation import lock

    monkeypatch.setattr(lock, "CACHE", tmp_path)
    monkeypatch.setattr(model_check, "_image_identity", lambda image: ("sha256:0123abcd", "linux/arm64"))
    check = model_check.ModelCheck(True, "2.10.0", "model check: loads", 30.0, (1, 14, 96, 96, 96), 612.0)
    model_check._remember(model_check._memo("sha256:0123abcd", APP.default_model, APP), check)
    heard: list[window_probe.Prediction] = []
    model_check.require_usable_model("img", APP.default_model, APP, on_prediction=heard.append)
    assert [(p.seconds, p.complete) for p in heard] == [(612.0, True)]
    planner = plan.Planner([_case("full-size", 25, 4650.0)], RUN_TIME, "linux/arm64", lambda text: None)
    with pytest.raises(GateError, match="case full-size: predicted 15750 s"):
        model_check.require_usable_model("img", APP.default_model, APP, on_prediction=planner.update)


@pytest.mark.docker
@pytest.mark.slow
def test_the_gate_refuses_a_case_predicted_past_its_timeout_before_any_case_runs(
    built_image, tmp_path
) -> None:
    """Through the gate's command: a case whose case.toml gives it 100 s (450 s are predicted outside its
    windows alone) is refused after the model check, in one stderr line, exit 2, no case run; the plan
    was printed first."""
    import shutil

    from tests.conftest import run_gate

    cases_dir = tmp_path / "cases"
    shutil.copytree(APP.default_cases / "standard", cases_dir / "standard")
    case_toml = cases_dir / "standard" / "case.toml"
    case_toml.write_text(case_toml.read_text().replace("timeout_s = 900", "timeout_s = 100"))
    result = run_gate([
        "--image", built_image.image_id, "--cases", str(cases_dir), "--reports", str(tmp_path / "acceptance"),
        "--no-host",
    ])  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("armgate: case standard: predicted "), lines
    assert "past its timeout of 100 s" in lines[0] and "ARM runner" in lines[0]
    assert "plan: one model window takes" in result.stdout and "REFUSED" in result.stdout
    assert not (tmp_path / "acceptance" / "cases").exists(), "a case ran after its refusal"
