"""`python -m validation merge DIR…`: one verdict, junit.xml, metrics.json and report.html from the
report folders of `acceptance --shard K/N` runs, with the exit codes of acceptance.

The merge refuses, in one line naming the folder, anything that would make the verdict a lie: a
missing shard, a shard passed twice, or a shard of another split (N), image, profile or case set.
The merged verdict is PASS only when every case of the set was gated, every check of every shard
passed and nothing was left out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from validation import build, verdict
from validation.errors import GateError
from validation.results import GateResults

JUNIT, METRICS = "junit.xml", "metrics.json"


@dataclass(frozen=True)
class ShardReport:
    folder: Path
    metrics: dict[str, Any]

    @property
    def shard(self) -> dict[str, Any]:
        return self.metrics["shard"]

    @property
    def name(self) -> str:
        return f"{self.shard['index']}/{self.shard['count']}"

    @property
    def image_id(self) -> str:
        return str((self.metrics.get("image") or {}).get("id"))

    @property
    def profile(self) -> str:
        return str((self.metrics.get("image") or {}).get("profile"))


def read_shard(folder: Path) -> ShardReport:
    """One shard's report folder, or one line saying why it is not one."""
    path = folder / METRICS
    if not path.is_file():
        raise GateError(f"{folder}: no {METRICS}; pass the --reports folder of an `acceptance --shard K/N`")
    if not (folder / JUNIT).is_file():
        raise GateError(f"{folder}: no {JUNIT}; pass the whole report folder of the shard's run")
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise GateError(f"{path}: not valid JSON ({error}); gate the shard again") from None
    shard = metrics.get("shard") if isinstance(metrics, dict) else None
    if not isinstance(shard, dict) or not {"index", "count", "cases", "case_set"} <= shard.keys():
        raise GateError(f"{folder}: not a shard's report (no shard in {METRICS}); gate with --shard K/N")
    return ShardReport(folder, metrics)


def check_shards(shards: list[ShardReport]) -> None:
    """Every shard of one split of one case set on one image and profile, each exactly once."""
    first, seen = shards[0], {}
    for report in shards:
        if report.shard["count"] != first.shard["count"]:
            raise GateError(
                f"{report.folder}: shard {report.name} is of a split into {report.shard['count']}, not "
                f"{first.shard['count']} like {first.folder}; gate every shard with the same N"
            )
        if report.image_id != first.image_id:
            raise GateError(
                f"{report.folder}: gated image {report.image_id[:19]}, not {first.image_id[:19]} like "
                f"{first.folder}; gate every shard on the one image built for them"
            )
        if report.profile != first.profile:
            raise GateError(
                f"{report.folder}: gated for profile {report.profile}, not {first.profile} like "
                f"{first.folder}; gate every shard for one profile"
            )
        mine, theirs = report.shard["case_set"], first.shard["case_set"]
        if mine["sha256"] != theirs["sha256"]:
            raise GateError(
                f"{report.folder}: another case set ({len(mine['names'])} cases, sha256 "
                f"{mine['sha256'][:12]}) than {first.folder} ({len(theirs['names'])} cases, "
                f"{theirs['sha256'][:12]}); gate every shard on the same cases"
            )
        if report.shard["index"] in seen:
            raise GateError(
                f"{report.folder}: shard {report.name} again (also {seen[report.shard['index']]}); "
                "pass each shard once"
            )
        seen[report.shard["index"]] = report.folder
    count = first.shard["count"]
    missing = [f"{index}/{count}" for index in range(1, count + 1) if index not in seen]
    if missing:
        raise GateError(
            f"shard {', '.join(missing)} missing from {', '.join(str(r.folder) for r in shards)}; "
            "pass the report folder of every shard"
        )
    gated_by: dict[str, Path] = {}
    for report in shards:
        for name in report.shard["cases"]:
            if name in gated_by:
                raise GateError(
                    f"{report.folder}: case {name} is also in {gated_by[name]}; the shards were split by "
                    "different armgate versions: gate every shard with one"
                )
            gated_by[name] = report.folder
    left = sorted(set(first.shard["case_set"]["names"]) - set(gated_by))
    if left:
        raise GateError(
            f"case(s) {', '.join(left)} of the set in no shard of "
            f"{', '.join(str(r.folder) for r in shards)}; gate every shard with one armgate version"
        )


def _rebase(value: Any, old: str, new: str) -> Any:
    """Paths the shard wrote under its own reports folder, pointed at the merged copy."""
    if isinstance(value, str) and old and (value == old or value.startswith(old.rstrip("/") + "/")):
        return new + value[len(old.rstrip("/")) :]
    if isinstance(value, dict):
        return {key: _rebase(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [_rebase(item, old, new) for item in value]
    return value


def merge_metrics(shards: list[ShardReport], out: Path) -> tuple[dict[str, Any], verdict.Verdict]:
    """The merged metrics (the shards' checks, cases and scope) and the verdict they give."""
    shards = sorted(shards, key=lambda report: report.shard["index"])
    first = shards[0]
    checks = [check for report in shards for check in report.metrics.get("checks") or []]
    cases: dict[str, Any] = {}
    for report in shards:
        cases |= _rebase(report.metrics.get("cases") or {}, report.shard.get("reports", ""), str(out))
    options, deselected = [], []
    for report in shards:
        selection = report.metrics.get("selection") or {}
        options += [o for o in selection.get("options") or [] if not o.startswith("--shard")]
        deselected += selection.get("deselected") or []
    gated_groups = {check.get("group") for check in checks}
    deselected += [f"every check of {name}" for name in sorted(cases) if name not in gated_groups]
    scope = verdict.Scope(list(dict.fromkeys(options)), deselected)
    # A shard whose own run broke down (FAIL with no failed check: nothing ran, or pytest errored)
    # fails the merge as it failed its shard.
    broke = any(r.metrics.get("verdict") == "fail" and not (r.metrics.get("counts") or {}).get("failed")
                for r in shards)  # fmt: skip
    interrupted = any(r.metrics.get("verdict") == "interrupted" for r in shards)
    typed = [verdict.Check.from_dict(check) for check in checks]
    outcome = verdict.decide(typed, scope, 3 if broke else 0, interrupted)
    metrics = {
        "verdict": outcome.name,
        "counts": outcome.to_dict(),
        "selection": {"options": scope.options, "deselected": scope.deselected, "shard": None},
        "shard": None,
        "merged": {
            "case_set": first.shard["case_set"],
            "shards": [
                {
                    "shard": report.name,
                    "folder": str(report.folder),
                    "verdict": report.metrics.get("verdict"),
                    "cases": report.shard["cases"],
                    "input_bytes": report.shard.get("input_bytes"),
                    "seconds": report.metrics.get("seconds"),
                }
                for report in shards
            ],
        },
        "started": min(str(r.metrics.get("started")) for r in shards),
        "app": first.metrics.get("app"),
        "seconds": max(float(r.metrics.get("seconds") or 0) for r in shards),  # they run side by side
        "image": first.metrics.get("image"),  # shard 1 ran the image checks and recorded the pins
        "checks": checks,
        "cases": cases,
    }
    return metrics, outcome


def merge_junit(shards: list[ShardReport], path: Path) -> None:
    """One testsuite holding every shard's test cases."""
    suites = ElementTree.Element("testsuites")
    suite = ElementTree.SubElement(suites, "testsuite", name="armgate")
    for report in sorted(shards, key=lambda report: report.shard["index"]):
        for testcase in ElementTree.parse(report.folder / JUNIT).getroot().iter("testcase"):
            suite.append(testcase)
    testcases = suite.findall("testcase")
    suite.set("tests", str(len(testcases)))
    for kind, attribute in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
        suite.set(attribute, str(sum(1 for case in testcases if case.find(kind) is not None)))
    suite.set("time", f"{sum(float(case.get('time') or 0) for case in testcases):.3f}")
    ElementTree.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def _check_output_folder(out: Path, shards: list[ShardReport]) -> None:
    for report in shards:
        folder = report.folder.resolve()
        if out == folder or out in folder.parents or folder in out.parents:
            raise GateError(
                f"{out}: the merged report would overwrite the shard folder {report.folder}; "
                "pass --reports ANOTHER_FOLDER"
            )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m validation merge", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, metavar="DIR", help="a shard's report folder")
    parser.add_argument("--reports", type=Path, default=build.REPORTS / "acceptance", help="output folder")
    args = parser.parse_args(argv)
    from validation import report

    shards = []
    for folder in args.folders:
        if not folder.is_dir():
            raise GateError(f"{folder}: no such report folder; pass the --reports folder of each shard")
        shards.append(read_shard(folder))
    check_shards(shards)
    out = args.reports.resolve()
    _check_output_folder(out, shards)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for shard_report in shards:
        if (shard_report.folder / "cases").is_dir():
            shutil.copytree(shard_report.folder / "cases", out / "cases", dirs_exist_ok=True)
    metrics, outcome = merge_metrics(shards, out)
    (out / METRICS).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    merge_junit(shards, out / JUNIT)
    first = shards[0]
    verdict.add_junit_properties(
        out / JUNIT,
        outcome,
        verdict.Scope(metrics["selection"]["options"], metrics["selection"]["deselected"]),
        {
            "armgate.shards": str(first.shard["count"]),
            "armgate.image": first.image_id,
            "armgate.profile": first.profile,
            "armgate.case_set": first.shard["case_set"]["sha256"],
        },
    )
    merged = GateResults.from_dict(metrics)  # overlays: the shards' PNGs, copied with cases/
    html = report.write_report(merged, out)
    print(f"merged {len(shards)} shards of {len(first.shard['case_set']['names'])} cases")
    print(report.console_summary(merged))
    print(f"report: {html}")
    return outcome.exit_code
