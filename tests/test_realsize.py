"""The bench's real-size networks (bench/networks.py, bench/realsize.py): declared in TOML and built from
MONAI's classes, and the realsize section's figures from its runs (the runs stubbed here; the bench
measures them)."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from bench import figures, networks, readme, realsize
from validation.errors import GateError
from validation.window_probe import OP_MARKER, STAGE_MARKER


def test_the_declared_networks_and_the_sections_rows() -> None:
    declared = networks.load()
    assert {"unet", "dynunet", "tiny-dynunet"} <= set(declared)
    assert declared["dynunet"].class_path == "monai.networks.nets.DynUNet" and declared["dynunet"].window == (
        1, 1, 96, 96, 96)  # fmt: skip
    keys = [row.key for row in realsize.HEADLINES]
    assert keys[:4] == ["realsize_unet_host_s", "realsize_unet_emulated_s", "realsize_unet_ratio",
                        "realsize_unet_prediction"] and keys[-1] == "realsize_flop_rate_spread"  # fmt: skip


def test_a_network_without_its_fields_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "networks.toml"
    bad.write_text('[networks.odd]\ntitle = "odd"\n')
    with pytest.raises(GateError, match=r"networks.toml: network 'odd' needs title, label, class"):
        networks.load(bad)
    with pytest.raises(GateError, match="no network 'nope'"):
        networks.get("nope")


@pytest.mark.slow
def test_the_31m_network_is_what_the_readme_says() -> None:
    assert networks.parameters(networks.get("dynunet").build()) == 31_182_126
    assert networks.parameters(networks.get("unet").build()) == 4_808_917


def _run(window_s: float, ops: list[tuple[str, float, int]], cpu_s: float | None = None) -> list[str]:
    """A probe's output: each operation (name, seconds, flops), then the window (its CPU seconds)."""
    lines, wall = ["ARMGATE_TORCH 2.10.0"], 0.0
    for index, (name, seconds, flops) in enumerate(ops):
        wall += seconds
        fields = {"i": index, "op": name, "shape": [1, 8, 96, 96, 96], "s": seconds, "f": flops, "t": wall}
        lines.append(OP_MARKER + json.dumps(fields))
    window = {"stage": "window", "index": 0, "s": window_s, "cpu": cpu_s or window_s, "shape": [1, 14]}
    lines.append(STAGE_MARKER + json.dumps(window))
    return lines


def test_the_section_pairs_emulated_windows_with_the_hosts_median(monkeypatch: pytest.MonkeyPatch) -> None:
    host_ops = [("_convolution", 0.5, 4_000_000_000), ("_convolution", 0.5, 4_000_000_000)]
    image_ops = [("_convolution", 40.0, 4_000_000_000), ("_convolution", 40.0, 4_000_000_000)]
    host_times = iter([1.2, 1.0, 1.1])
    config = {"networks": ["dynunet"], "threads": 2, "budget_s": 30.0}
    monkeypatch.setattr(realsize, "settings", lambda: config)
    monkeypatch.setattr(realsize, "export", lambda network, folder: (folder / "m.ts", 31_182_126))
    def host(model, network, threads):
        seconds = next(host_times)
        return realsize._window(_run(seconds, host_ops, 2 * seconds), "host")  # two threads busy

    monkeypatch.setattr(realsize, "host_window", host)
    small = {"calls": 0}

    def emulated(ctx, model, window, threads):
        small["calls"] += window != (1, 1, 96, 96, 96)
        seconds = 80.0 if window == (1, 1, 96, 96, 96) else 9.0
        return realsize._window(_run(seconds, image_ops, 150.0), "emulated")

    monkeypatch.setattr(realsize, "emulated_window", emulated)
    found = {f.key: f for f in realsize.section_realsize(types.SimpleNamespace(runs=3, scratch=Path("/tmp")))}
    assert found["realsize_dynunet_host_s"].value == 1.1
    assert found["realsize_dynunet_emulated_s"].samples == [80.0]
    assert found["realsize_dynunet_ratio"].samples == pytest.approx([150.0 / 2.2])  # CPU seconds
    # stopped after 40 s (past the 30 s budget): the second convolution at the first one's rate
    assert found["realsize_dynunet_prediction"].samples == pytest.approx([80.0 / 80.0])
    assert "8.0 GFLOP, 0.05 GFLOP per CPU second" in found["realsize_dynunet_emulated_s"].detail
    assert small["calls"] == 1 and "32×32×64 input × 13.5: 9.0 s, 1.52 × measured" in found[
        "realsize_dynunet_prediction"].detail  # fmt: skip
    table = readme.render_table({"command": "python -m bench", "started": "2026-12-07T10:00:00",
                                 "revision": "abc", "runs": 3, "seconds": 60, "sections": ["realsize"],
                                 "machine": {"nproc": 2, "cpu": "x", "uname_m": "x86_64", "memory_gb": 24,
                                             "docker_engine": "26", "loadavg_start": [1.0, 1.0, 1.0]},
                                 "figures": [f.to_dict() for f in found.values()]})  # fmt: skip
    assert "| 7  DynUNet (nnU-Net-like): QEMU ÷ host, CPU time | 68.2× |" in table


def test_an_emulated_window_that_gave_no_time_fails_the_section_with_its_last_line() -> None:
    """Must fail: a run that printed no window line (the image's torch aborted) is no figure."""
    with pytest.raises(GateError, match="the emulated window gave no time: qemu: uncaught target signal 6"):
        realsize._window(["ARMGATE_TORCH 2.10.0", "qemu: uncaught target signal 6"], "emulated")
    assert figures.no_data("k", "l", "x").status == "no data"
