"""The stage-line protocol is declared once, in validation/stages.py, and the gate depends on no app.

The demo app writes its stage lines with its own copy of the templates (the image holds the app
alone): what it emits must parse with the gate's parser, and its window count must be the gate's.
validation/ imports nothing from app/ or fixtures/: the gate is generic, the demo app one of its users.
"""

from __future__ import annotations

import ast
import itertools
import logging
from pathlib import Path

import pytest

from app import stages as app_stages
from validation import profiles, stages

VALIDATION = profiles.ROOT / "validation"
NOT_IMPORTED = ("app", "fixtures")  # the demo app and its test data


def emitted(caplog: pytest.LogCaptureFixture, names: list[str]) -> str:
    """The log lines the app writes around each stage, as its log shows them."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=app_stages.logger.name):
        for name in names:
            with app_stages.stage(name):
                pass
    return "\n".join(f"2026-01-01 00:00:00 [INFO] stages: {record.getMessage()}" for record in caplog.records)


APP_STAGE_NAMES = [
    app_stages.IMPORTS,
    app_stages.INPUT_CHECKS,
    app_stages.PRE_TRANSFORMS,
    app_stages.window_label(1, 1, 15),
    app_stages.window_label(2, 4, 15),
    app_stages.WRITE_OUTPUT.format(output="seg.dcm"),
]


def test_the_apps_stage_lines_parse_with_the_gates_parser(caplog: pytest.LogCaptureFixture) -> None:
    log = emitted(caplog, APP_STAGE_NAMES)
    found = stages.parse(log)
    assert [name for name, _ in found] == [name for name in APP_STAGE_NAMES for _ in range(2)]
    assert [seconds is None for _, seconds in found] == [True, False] * len(APP_STAGE_NAMES)
    assert all(seconds >= 0 for _, seconds in found if seconds is not None)
    assert list(stages.stage_times(log)) == APP_STAGE_NAMES
    assert stages.stage_reached(log) == "after stage 'write seg.dcm'"
    assert log.splitlines()[0].endswith(stages.started_line(app_stages.IMPORTS))


@pytest.mark.parametrize(
    ("template", "changed"),
    [("_STARTED", "stage '{name}' begun"), ("_TOOK", "stage '{name}' took {seconds:.2f}s")],
    ids=["started-line", "took-line"],
)
def test_an_app_copy_that_drifts_from_the_protocol_is_caught(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, template: str, changed: str
) -> None:
    """The check above fails on a changed copy of a template: the lines stop parsing."""
    monkeypatch.setattr(app_stages, template, changed)
    found = stages.parse(emitted(caplog, [app_stages.IMPORTS]))
    assert len(found) == 1, found  # one of the two lines no longer parses


def test_stage_reached_and_times_read_a_log_cut_short() -> None:
    lines = [
        stages.started_line("imports"),
        stages.took_line("imports", 25.5),
        stages.started_line("inference window 7/15"),
    ]
    assert stages.stage_reached("\n".join(lines)) == "in stage 'inference window 7/15'"
    assert stages.stage_reached("\n".join(lines[:2])) == "after stage 'imports'"
    assert stages.stage_reached("Traceback (most recent call last):") == stages.NO_STAGE_LINE
    assert stages.stage_times("\n".join(lines)) == {"imports": 25.5}
    assert stages.parse("stage 'x' took many s") == [], "a line without seconds is no stage line"


def test_the_apps_window_count_is_the_gates_model() -> None:
    grids = itertools.product(range(1, 400, 37), repeat=3)
    windows = [(96, 96, 96), (64, 64, 32)]
    for size, roi, overlap in itertools.product(grids, windows, (0.0, 0.25, 0.5)):
        expected = stages.window_count(size, roi, overlap)
        assert app_stages.window_count(size, roi, overlap) == expected, (size, roi, overlap)


def imports_of(source: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in a module's source, `importlib.import_module("x")` too."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in ("importlib.import_module", "import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


def foreign_imports(root: Path) -> list[str]:
    return [
        f"{path.relative_to(profiles.ROOT)}:{line} imports {package}"
        for path in sorted(root.rglob("*.py"))
        for line, package in imports_of(path.read_text())
        if package in NOT_IMPORTED
    ]


def test_validation_imports_nothing_from_the_app_or_the_fixtures() -> None:
    assert foreign_imports(VALIDATION) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "from app.stages import window_count\n",
        "import fixtures.limits\n",
        "from fixtures import generate\n",
        "def f():\n    import app\n",
        "import importlib\nimportlib.import_module('app.stages')\n",
    ],
)
def test_the_import_scan_finds_each_form(snippet: str) -> None:
    assert [package for _, package in imports_of(snippet)][-1] in NOT_IMPORTED
    assert imports_of("from validation import stages\nimport numpy\n") == [(1, "validation"), (2, "numpy")]
