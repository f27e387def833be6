"""The window probe: each torch operation of a window timed as it ends, and the window's time in the image
predicted from its first operations (validation/window_probe.py).

Stubs of the timing: operation lists written here stand for what the image and the host print, so the
arithmetic is held exactly; one test runs the probe itself on the host with a small network (torch)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

import pytest

from validation import probe_watch, window_probe
from validation.window_probe import Op, Prediction

GFLOP = 1_000_000_000


def _network(levels: list[tuple[int, tuple[int, ...]]]) -> list[Op]:
    """A U-Net-like window on the host: per level a convolution of `gflop` and a cheap norm after it."""
    ops, index = [], 0
    for gflop, shape in levels:
        ops.append(Op(index, "_convolution", shape, gflop * 0.01, gflop * GFLOP))
        ops.append(Op(index + 1, "native_batch_norm", shape, 0.002))
        index += 2
    return ops


LEVELS = [(50, (1, 32, 96, 96, 96)), (12, (1, 64, 48, 48, 48)), (3, (1, 128, 24, 24, 24)),
          (12, (1, 64, 48, 48, 48)), (100, (1, 32, 96, 96, 96))]  # fmt: skip


def _image(host: list[Op], rate_gflops: dict[tuple[int, ...], float], norm_slowdown: float) -> list[Op]:
    """The same window in an image whose FLOP rate depends on the level, with wall times recorded."""
    ops, wall = [], 0.0
    for op in host:
        seconds = op.flops / GFLOP / rate_gflops[op.shape] if op.flops else op.seconds * norm_slowdown
        wall += seconds
        ops.append(Op(op.index, op.name, op.shape, seconds, op.flops, wall))
    return ops


def test_the_rest_of_the_window_costs_its_flops_at_the_rate_the_image_showed_at_that_level() -> None:
    host = _network(LEVELS)
    rates = {(1, 32, 96, 96, 96): 0.6, (1, 64, 48, 48, 48): 0.4, (1, 128, 24, 24, 24): 0.3}
    image = _image(host, rates, 40.0)
    whole = image[-1].wall
    # after the first three levels every level's rate is known: the prediction is the window's time
    assert window_probe.predict(host, image[:6]).seconds == pytest.approx(whole, rel=1e-9)
    # after the first level alone the other levels take its rate: the level-2 and -3 work reads faster
    early = window_probe.predict(host, image[:2])
    assert early.seconds < whole and early.ran == 2 and early.total == len(host)
    assert early.host_share == pytest.approx(sum(o.seconds for o in host[:2]) / sum(o.seconds for o in host))


def test_what_the_prediction_cannot_see_a_level_slower_than_the_like_ones_it_ran() -> None:
    """The blind spot, stated: the last level's convolution runs at half the rate of the first level's,
    which has the same output shape; the prediction made before it ran takes the first level's rate."""
    host = _network(LEVELS)
    steady = {(1, 32, 96, 96, 96): 0.6, (1, 64, 48, 48, 48): 0.6, (1, 128, 24, 24, 24): 0.6}
    image = _image(host, steady, 40.0)
    last = image[8]
    slower = [*image[:8], Op(8, last.name, last.shape, last.seconds * 2, last.flops), image[9]]
    prediction = window_probe.predict(host, slower[:6]).seconds
    assert prediction == pytest.approx(image[-1].wall)
    assert prediction < sum(op.seconds for op in slower) * 0.8


def test_a_whole_window_is_its_measurement_and_the_budget_picks_where_to_stop() -> None:
    host = _network(LEVELS)
    image = _image(host, dict.fromkeys((op.shape for op in host), 0.5), 40.0)
    whole = window_probe.predict_at_budget(host, image, 1e9)
    assert whole.complete and whole.seconds == pytest.approx(image[-1].wall)
    at_budget = window_probe.predict_at_budget(host, image, 50.0)
    assert at_budget.ran == 1 and image[0].wall >= 50.0  # the first operation ending past the budget
    assert not at_budget.complete and "predicted from its first 1 of 10" in at_budget.describe()


def test_the_interpreters_time_between_operations_is_counted_but_not_its_start() -> None:
    """A TorchScript module prepares its graph at its first call (before the first operation): that is
    in the measured part, not scaled onto the rest."""
    host = _network(LEVELS[:2])
    ops = [Op(0, "_convolution", LEVELS[0][1], 100.0, 50 * GFLOP, wall=130.0),  # 30 s before it began
           Op(1, "native_batch_norm", LEVELS[0][1], 0.1, 0, wall=130.2)]  # fmt: skip
    prediction = window_probe.predict(host, ops)
    between = (130.2 - 30.0) / 100.1
    rest = (12 * GFLOP * 100.0 / (50 * GFLOP) + 0.002 * (0.1 / 0.002)) * between
    assert prediction.seconds == pytest.approx(130.2 + rest)


def test_probe_lines_parse_and_others_do_not() -> None:
    fields = '{"i": 3, "op": "_convolution", "shape": [1, 8, 4, 4, 4], "s": 0.5, "f": 10, "t": 2.0}'
    line = "app | ARMGATE_OP " + fields
    assert window_probe.parse_op(line) == Op(3, "_convolution", (1, 8, 4, 4, 4), 0.5, 10, 2.0)
    assert window_probe.parse_op('ARMGATE_OP {"i": "x"}') is None
    assert window_probe.parse_op("stage 'imports' took 2.00 s") is None


def _done(ops: list[Op]) -> Future:
    future: Future = Future()
    future.set_result(ops)
    return future


def _line(op: Op) -> str:
    data = {"i": op.index, "op": op.name, "shape": list(op.shape), "s": op.seconds, "f": op.flops}
    return window_probe.OP_MARKER + json.dumps({**data, "t": op.wall})


def test_the_watch_hands_over_one_prediction_at_the_budget_and_a_refusal_stops_it() -> None:
    host = _network(LEVELS)
    image = _image(host, dict.fromkeys((op.shape for op in host), 0.5), 40.0)
    said: list[str] = []
    heard: list[Prediction] = []
    watch = probe_watch.WindowWatch(_done(host), 150.0, heard.append, said.append, every_s=0.0)
    watch.feed('ARMGATE_PROBE {"stage": "loaded", "s": 12.0}', now=0.0)
    for op in image:
        watch.feed(_line(op), now=op.wall)  # each line arrives as its operation ends
    first_past = next(index for index, op in enumerate(image, start=1) if op.wall >= 150.0)
    assert len(heard) == 1 and heard[0].ran == first_past and image[first_past - 2].wall < 150.0
    assert heard[0].seconds == pytest.approx(image[-1].wall)
    assert said[0].startswith("the image's torch loaded the model in 12 s")
    assert any("of the host's window time" in text for text in said)

    def refuse(prediction: Prediction) -> None:
        raise RuntimeError(f"refused at {prediction.seconds:.0f} s")

    stopping = probe_watch.WindowWatch(_done(host), 150.0, refuse, said.append)
    stopping.feed('ARMGATE_PROBE {"stage": "loaded", "s": 12.0}', now=0.0)
    with pytest.raises(RuntimeError, match="refused at"):
        for op in image:
            stopping.feed(_line(op), now=op.wall)


def test_a_long_operation_under_way_is_predicted_on_time_and_counts_as_long_as_it_ran() -> None:
    """The budget passes while an operation runs: the prediction comes then, from the operations done,
    and the one under way takes at least the time it has run so far."""
    host = _network(LEVELS)
    image = _image(host, dict.fromkeys((op.shape for op in host), 0.5), 40.0)
    heard: list[Prediction] = []
    watch = probe_watch.WindowWatch(_done(host), 30.0, heard.append, lambda text: None)
    watch.feed('ARMGATE_PROBE {"stage": "loaded", "s": 1.0}', now=0.0)
    watch.feed(_line(image[0]), now=image[0].wall)  # the first convolution: 100 s
    watch.feed(_line(image[1]), now=image[1].wall)
    assert len(heard) == 1 and heard[0].ran == 1  # its line comes 100 s in: predicted then
    early = probe_watch.WindowWatch(_done(host), 30.0, heard.append, lambda text: None)
    early.feed('ARMGATE_PROBE {"stage": "loaded", "s": 1.0}', now=0.0)
    early.feed(_line(Op(0, "_convolution", LEVELS[0][1], 5.0, 2 * GFLOP, 5.0)), now=5.0)  # 0.4 GFLOP/s
    early.tick(20.0)
    assert len(heard) == 1  # not yet: 20 s of the window
    early.tick(31.0)
    assert len(heard) == 2  # 26 s into the next operation, expected at 0.4 GFLOP/s: 1 ms of norm
    running = heard[-1]
    assert running.ran == 1 and running.seconds >= 31.0
    # the norm under way was expected to take its host time (nothing like it ran yet): 2 ms
    assert running.seconds == pytest.approx(window_probe.predict(host, early.ops).seconds + 26.0 - 0.002)


@pytest.mark.slow
def test_the_probe_counts_a_networks_flops_as_torch_does(tmp_path: Path) -> None:
    """The probe's own FLOP count of every convolution (and its transposed ones) equals torch's
    FlopCounterMode on a small MONAI DynUNet; its operations are those the host lists."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bench import networks

    model = networks.get("tiny-dynunet").export(tmp_path / "tiny.ts")
    ops = window_probe.host_ops(model, (1, 1, 96, 96, 96), 1)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        torch.jit.load(str(model))(torch.zeros(1, 1, 96, 96, 96))
    assert ops and sum(op.flops for op in ops) == counter.get_total_flops()
    assert any(op.name == "_convolution" for op in ops) and all(op.wall > 0 for op in ops)
    script = window_probe.windows_script(str(model), (1, 1, 96, 96, 96), 1)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    stages = window_probe.parse_stages(done.stdout.splitlines())
    assert [stage["stage"] for stage in stages] == ["loaded", "window"]
    assert stages[1]["shape"] == [1, 14, 96, 96, 96]
