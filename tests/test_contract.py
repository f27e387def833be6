"""The app contract: one file per app, validated on load, the only place validation/ learns app facts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from validation import contract, profiles
from validation.errors import GateError

DEFAULT = contract.DEFAULT_CONTRACT.read_text()


def test_the_default_contract_describes_this_repositorys_app() -> None:
    app = contract.load()
    assert app.source == profiles.ROOT / "app" and (app.source / app.main).is_file()
    assert app.entrypoint == (
        "python3",
        "./__main__.py",
        "-i",
        "/input",
        "-m",
        "/model/model.ts",
        "-o",
        "/output",
    )
    assert app.outputs == {"mask": "mask.nii.gz", "seg": "seg.dcm"}
    assert app.labels[1] == "spleen" and len(app.labels) == 13
    assert app.mounts.model == "/model/model.ts" and app.model_input_shape == (1, 1, 96, 96, 96)
    assert app.default_model.is_file() and app.default_cases.is_dir()
    assert app.host_command("py", Path("/i"), Path("/m.ts"), Path("/o"))[1:] == [
        str(app.source / "__main__.py"), "-i", "/i", "-m", "/m.ts", "-o", "/o",
    ]  # fmt: skip


def _write(tmp_path: Path, text: str) -> Path:
    """A contract at the default's place in a copy of the tree's layout, so its relative paths hold."""
    path = profiles.ROOT / "container" / f".test-{tmp_path.name}.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("[outputs]", "[output]"), r"unknown field 'output'"),
        (('seg = "seg.dcm"', 'segs = "seg.dcm"'), r"unknown field 'outputs.segs'"),
        (('source = "../app"', 'source = "../nowhere"'), r"field 'app.source' points to .*nowhere"),
        (('"-o", "{output}"', '"-o", "/output"'), r"field 'app.args' must place \{output\}"),
        (("window_hu = [-175.0, 250.0]", 'window_hu = "soft tissue"'), r"field 'display.window_hu'"),
        (
            ('file = "../app/config/labels.json"', 'file = "../app/README.md"'),
            r"README.md: not a labels file",
        ),
        (("uid = 1000", 'uid = "1000"'), r"field 'app.uid' must be an integer"),
        (('requires_python = ">=3.9"', 'requires_python = "3.9+"'), r"field 'app.requires_python'"),
        (('requires = ["', 'requires = ["!!'), r"field 'app.requires' item"),
    ],
)
def test_a_broken_contract_fails_in_one_line_naming_file_and_field(
    tmp_path: Path, edit, message: str
) -> None:
    old, new = edit
    assert old in DEFAULT
    path = _write(tmp_path, DEFAULT.replace(old, new))
    try:
        with pytest.raises(GateError, match=message) as error:
            contract.load(path)
        assert "\n" not in str(error.value)
    finally:
        path.unlink()


def test_validation_holds_no_app_literal() -> None:
    """Output names, label names and mount paths of the apps live in their contracts only."""
    app = contract.load()
    mounts = (app.mounts.input, app.mounts.model, app.mounts.output)
    literals = [*app.outputs.values(), *mounts, *app.labels.values()]
    patterns = [arg for literal in literals for arg in ("-e", literal)]
    found = subprocess.run(
        ["grep", "-rnwF", *patterns, "--include=*.py", "--exclude=bench*", "validation"],
        cwd=profiles.ROOT, capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    assert found == "", found
