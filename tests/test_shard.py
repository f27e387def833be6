"""Sharding the gate: which cases a shard gates (pure), merging shard reports into one verdict, the
must-fail merges, the end-to-end split of the fixture cases, and the CI workflow that runs it."""

from __future__ import annotations

import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GateRun
from validation import merge, shard
from validation.errors import GateError
from validation.profiles import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "release-gate.yml"
CASE_COUNT, SHARDS, ADDITIONS = 300, 8, 40
# Measured on the generated set below (python -m pytest tests/test_shard.py -k stable -s prints them):
# adding one case moved 1.5 existing cases on average (at most 5) of 300; greedy longest-first, 124 (256).
MOVED_MEAN_MAX, MOVED_MOST_MAX = 0.02 * CASE_COUNT, 0.04 * CASE_COUNT  # measured 0.5 % / 1.7 %


def generated_sizes(count: int, seed: int = 7) -> dict[str, int]:
    """Input sizes spread like real studies: log-normal around 50 MB, a few 5× larger or smaller."""
    rng = random.Random(seed)
    return {f"case-{i:04d}": int(rng.lognormvariate(0, 0.7) * 50_000_000) for i in range(count)}


def loads(sizes: dict[str, int], shard_of: dict[str, int], count: int) -> list[int]:
    totals = [0] * count
    for name, index in shard_of.items():
        totals[index] += sizes[name]
    return totals


def greedy_longest_first(sizes: dict[str, int], count: int) -> dict[str, int]:
    """The split that balances best and moves most: the reference the stability test must beat."""
    totals, shard_of = [0] * count, {}
    for name in sorted(sizes, key=lambda name: (-sizes[name], name)):
        index = min(range(count), key=lambda i: (totals[i], i))
        totals[index] += sizes[name]
        shard_of[name] = index
    return shard_of


def moved_on_addition(assign, sizes: dict[str, int], count: int) -> list[int]:
    rng, before = random.Random(11), assign(sizes, count)
    moved = []
    for addition in range(ADDITIONS):
        grown = sizes | {f"added-{addition}": int(rng.lognormvariate(0, 0.7) * 50_000_000)}
        after = assign(grown, count)
        moved.append(sum(before[name] != after[name] for name in sizes))
    return moved


# ---- selection ----------------------------------------------------------------------------------


def test_every_case_is_in_exactly_one_shard() -> None:
    sizes = generated_sizes(CASE_COUNT)
    plans = [shard.plan(shard.ShardSpec(k, SHARDS), sizes) for k in range(1, SHARDS + 1)]
    gated = [name for plan in plans for name in plan.cases]
    assert sorted(gated) == sorted(sizes), "a case is in no shard or in two"
    assert [plan.image_checks for plan in plans] == [True] + [False] * (SHARDS - 1)


def test_split_is_balanced_within_the_stated_bound() -> None:
    """Hard bound: no shard above (1 + SLACK) × mean + the largest case; on this set, within SLACK."""
    sizes = generated_sizes(CASE_COUNT)
    totals = loads(sizes, shard.assign(sizes, SHARDS), SHARDS)
    mean = sum(totals) / SHARDS
    assert max(totals) <= (1 + shard.SLACK) * mean + max(sizes.values())
    print(f"largest shard {max(totals) / mean:.3f} × the mean, smallest {min(totals) / mean:.3f}")
    assert max(totals) <= (1 + shard.SLACK) * mean, [round(t / mean, 3) for t in totals]


def test_split_is_stable_when_cases_are_added() -> None:
    """Adding one case to 300 moves under 2 % of the others on average (under 4 % at most); the
    greedy longest-first split, for comparison, moves far more, so this measure can fail."""
    sizes = generated_sizes(CASE_COUNT)
    moved = moved_on_addition(shard.assign, sizes, SHARDS)
    greedy = moved_on_addition(greedy_longest_first, sizes, SHARDS)
    print(f"moved per added case: mean {statistics.mean(moved):.1f}, most {max(moved)} of {CASE_COUNT}; "
          f"greedy longest-first: mean {statistics.mean(greedy):.1f}, most {max(greedy)}")  # fmt: skip
    assert statistics.mean(moved) <= MOVED_MEAN_MAX and max(moved) <= MOVED_MOST_MAX, moved
    assert statistics.mean(greedy) > MOVED_MEAN_MAX, greedy


def test_split_depends_only_on_names_and_sizes() -> None:
    sizes = generated_sizes(60)
    shuffled = dict(random.Random(3).sample(sorted(sizes.items()), len(sizes)))
    assert shard.assign(shuffled, 4) == shard.assign(sizes, 4)


@pytest.mark.parametrize("count", [2, 3, 5, 8])
def test_no_shard_is_empty_when_there_are_enough_cases(count: int) -> None:
    for extra in range(4):
        for seed in range(20):
            sizes = generated_sizes(count + extra, seed=seed)
            assert set(shard.assign(sizes, count).values()) == set(range(count)), (count, extra, seed)


@pytest.mark.parametrize("text", ["0/2", "3/2", "x/y", "2", "1/0"])
def test_bad_shard_values_fail_in_one_line(text: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "validation", "acceptance", "--shard", text, "--reports", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr, result.stderr
    assert f"--shard {text}: expected K/N" in result.stderr


def test_more_shards_than_cases_fails_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "validation", "acceptance", "--shard", "1/4", "--image", "none",
         "--reports", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "--shard 1/4: the case set has 3 case(s), fewer than 4 shards" in result.stderr


# ---- merge logic on made-up shard records ---------------------------------------------------------


def shard_report(tmp_path: Path, index: int, checks: list[dict], **selection: Any) -> merge.ShardReport:
    cases = ["a"] if index == 1 else ["b"]
    metrics = {
        "verdict": "partial",
        "counts": {"failed": sum(1 for c in checks if c["status"] == "failed")},
        "selection": {"options": [f"--shard {index}/2"], "deselected": [], **selection},
        "image": {"id": "sha256:abc", "profile": "bookworm"},
        "started": "2026-01-01T00:00:00+00:00",
        "seconds": 10.0 * index,
        "checks": checks,
        "cases": {name: {"run": None} for name in cases},
        "shard": {
            "index": index,
            "count": 2,
            "cases": cases,
            "case_set": {"names": ["a", "b"], "sha256": "f"},
        },
    }
    return merge.ShardReport(tmp_path / f"shard-{index}", metrics)


def check(name: str, group: str, status: str = "passed") -> dict[str, Any]:
    return {"name": name, "group": group, "passed": status == "passed", "skipped": status == "not_evaluated",
            "status": status, "reason": ""}  # fmt: skip


def merged_verdict(tmp_path: Path, first: list, second: list, **selection: Any) -> str:
    shards = [shard_report(tmp_path, 1, first), shard_report(tmp_path, 2, second, **selection)]
    merge.check_shards(shards)
    return merge.merge_metrics(shards, tmp_path / "out")[1].name


def test_merge_passes_only_when_every_check_of_every_shard_passed(tmp_path: Path) -> None:
    image, a, b = check("test_oci_labels", "image"), check("test_run[a]", "a"), check("test_run[b]", "b")
    assert merged_verdict(tmp_path, [image, a], [b]) == "pass"
    assert merged_verdict(tmp_path, [image, a], [check("test_run[b]", "b", "failed")]) == "fail"
    assert merged_verdict(tmp_path, [image, a], [check("test_run[b]", "b", "not_evaluated")]) == "partial"
    assert merged_verdict(tmp_path, [image, a], [b], deselected=["test_host_run[b]"]) == "partial"
    assert merged_verdict(tmp_path, [image, a], []) == "partial"  # case b was never gated


def test_merge_rebases_paths_onto_the_merged_folder() -> None:
    value = {"mask": "/runner/shard/cases/a/container/mask.nii.gz", "dicom": "/repo/fixtures/a"}
    rebased = merge._rebase(value, "/runner/shard", "/out")
    assert rebased == {"mask": "/out/cases/a/container/mask.nii.gz", "dicom": "/repo/fixtures/a"}


def test_merge_refuses_a_missing_shard_in_unit(tmp_path: Path) -> None:
    with pytest.raises(GateError, match=r"shard 2/2 missing"):
        merge.check_shards([shard_report(tmp_path, 1, [])])


def test_merge_refuses_a_shard_of_another_profile(tmp_path: Path) -> None:
    second = shard_report(tmp_path, 2, [])
    second.metrics["image"]["profile"] = "bullseye-torch1.8"
    with pytest.raises(GateError, match=r"shard-2: gated for profile bullseye-torch1.8, not bookworm like"):
        merge.check_shards([shard_report(tmp_path, 1, []), second])


def test_merge_refuses_shards_that_split_the_set_differently(tmp_path: Path) -> None:
    first, second = shard_report(tmp_path, 1, []), shard_report(tmp_path, 2, [])
    second.shard["cases"] = ["a"]
    with pytest.raises(GateError, match=r"shard-2: case a is also in \S+shard-1; the shards were split"):
        merge.check_shards([first, second])
    second.shard["cases"] = []
    with pytest.raises(GateError, match=r"^case\(s\) b of the set in no shard of "):
        merge.check_shards([first, second])


def test_merge_never_writes_over_a_shard_folder(tmp_path: Path) -> None:
    shards = [shard_report(tmp_path, index, []) for index in (1, 2)]
    for report in shards:
        report.folder.mkdir()
        (report.folder / "metrics.json").write_text(json.dumps(report.metrics))
        (report.folder / "junit.xml").write_text("<testsuites><testsuite/></testsuites>")
    folders = [str(report.folder) for report in shards]
    with pytest.raises(GateError, match=r"would overwrite the shard folder"):
        merge.main([*folders, "--reports", folders[0]])
    assert (shards[0].folder / "metrics.json").is_file()


# ---- end to end: the fixture cases as two shards, merged, against the full run ---------------------


def run_merge(*args: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "validation", "merge", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip


def statuses(metrics: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in metrics["checks"]}


@pytest.mark.docker
@pytest.mark.slow
def test_merged_shards_equal_the_full_run(
    shard_runs: list[Path], full_gate_run: GateRun, tmp_path: Path
) -> None:
    first, second = (json.loads((folder / "metrics.json").read_text()) for folder in shard_runs)
    for metrics, index in ((first, 1), (second, 2)):
        assert metrics["verdict"] == "partial" and metrics["counts"]["failed"] == 0, metrics["counts"]
        assert metrics["shard"]["index"] == index and metrics["shard"]["count"] == 2
        assert metrics["shard"]["case_set"]["names"] == ["oblique", "standard", "two-series"]
        junit = ElementTree.parse(shard_runs[index - 1] / "junit.xml").getroot()
        properties = {p.get("name"): p.get("value") for p in junit.iter("property")}
        assert properties["armgate.shard"] == f"{index}/2" and properties["armgate.verdict"] == "partial"
        assert properties["armgate.image"] == metrics["image"]["id"] and properties["armgate.profile"]
        assert properties["armgate.case_set"] == metrics["shard"]["case_set"]["sha256"]
    assert first["shard"]["cases"] and second["shard"]["cases"]
    assert not set(first["shard"]["cases"]) & set(second["shard"]["cases"])
    assert any(c["group"] == "image" for c in first["checks"])  # image checks on shard 1 only
    assert not any(c["group"] == "image" for c in second["checks"])

    out = tmp_path / "merged"
    result = run_merge(*shard_runs, "--reports", out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    merged, full = (json.loads((f / "metrics.json").read_text()) for f in (out, full_gate_run.reports))
    assert merged["verdict"] == full["verdict"] == "pass"
    assert statuses(merged) == statuses(full)
    assert set(merged["cases"]) == set(full["cases"])
    suite = ElementTree.parse(out / "junit.xml").getroot()
    full_suite = ElementTree.parse(full_gate_run.reports / "junit.xml").getroot()
    assert len(suite.findall(".//testcase")) == len(full_suite.findall(".//testcase"))
    assert {p.get("name"): p.get("value") for p in suite.iter("property")}["armgate.verdict"] == "pass"
    html = (out / "report.html").read_text()
    assert "<h1>PASS</h1>" in html and "data:image/png;base64," in html  # overlays from the copied PNGs


def copy_shard(folder: Path, to: Path, edit=None) -> Path:
    shutil.copytree(folder, to)
    if edit is not None:
        path = to / "metrics.json"
        metrics = json.loads(path.read_text())
        edit(metrics)
        path.write_text(json.dumps(metrics))
    return to


def _other_image(metrics: dict[str, Any]) -> None:
    metrics["image"]["id"] = "sha256:" + "0" * 64


def _other_case_set(metrics: dict[str, Any]) -> None:
    metrics["shard"]["case_set"] = {"names": ["oblique", "standard"], "sha256": "1" * 64}


def _other_split(metrics: dict[str, Any]) -> None:
    metrics["shard"]["count"] = 3


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        ("missing", r"^armgate: shard 2/2 missing from \S+shard-1; pass the report folder of every shard$"),
        ("twice", r"^armgate: \S+copy: shard 1/2 again \(also \S+shard-1\); pass each shard once$"),
        ("image", r"^armgate: \S+copy: gated image sha256:000000000000, not sha256:\w{12} like \S+shard-1;"),
        ("case-set", r"^armgate: \S+copy: another case set \(2 cases, sha256 111111111111\) than \S+shard-1"),
        ("split", r"^armgate: \S+copy: shard 2/3 is of a split into 3, not 2 like \S+shard-1;"),
        ("not-a-shard", r"^armgate: \S+acceptance: not a shard's report \(no shard in metrics.json\);"),
    ],
)
def test_merge_refuses_shards_that_do_not_make_the_set(
    make: str, expected: str, shard_runs: list[Path], full_gate_run: GateRun, tmp_path: Path
) -> None:
    first, second = shard_runs
    copy = tmp_path / "copy"
    folders = {
        "missing": lambda: [first],
        "twice": lambda: [first, copy_shard(first, copy), second],
        "image": lambda: [first, copy_shard(second, copy, _other_image)],
        "case-set": lambda: [first, copy_shard(second, copy, _other_case_set)],
        "split": lambda: [first, copy_shard(second, copy, _other_split)],
        "not-a-shard": lambda: [full_gate_run.reports, first],
    }[make]()
    out = tmp_path / "merged"
    result = run_merge(*folders, "--reports", out)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.match(expected, result.stderr.strip()), result.stderr
    assert not out.exists(), "a refused merge wrote a report"


# ---- the workflow ---------------------------------------------------------------------------------


def actionlint(workflow: Path) -> subprocess.CompletedProcess[str]:
    """actionlint from the test dependency group's wheel; its shellcheck and pyflakes integrations off,
    so the result does not depend on which of them a machine happens to have."""
    binary = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    assert binary, "actionlint not installed: it is in the test dependency group (pyproject.toml)"
    return subprocess.run(
        [binary, "-no-color", "-shellcheck=", "-pyflakes=", str(workflow)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_release_gate_workflow_lints_clean() -> None:
    result = actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    text = WORKFLOW.read_text()
    assert text.count("runs-on: ubuntu-24.04-arm") == 3
    assert "docker save" in text and "docker load" in text and "nox -s merge" in text
    assert '--shard "${{ matrix.shard }}/${{ strategy.job-total }}"' in text


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "release-gate.yml"
    text = WORKFLOW.read_text()
    assert text.count("needs: [build, gate]") == 1
    broken.write_text(text.replace("needs: [build, gate]", "needs: [build, gates]"))
    result = actionlint(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'job "merge" needs job "gates" which does not exist' in result.stdout, result.stdout
