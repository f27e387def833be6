"""Every field a case.toml accepts is checked against the data when the case loads, or refused.

The [input] facts against the DICOM headers, `label_names` against the app contract, `name` against the
folder; the schema example in fixtures/README.md is the committed standard case, loaded through the
same schema.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from validation import case_input, cases, contract, profiles
from validation.errors import GateError

APP = contract.load()
SPLEEN = contract.load(profiles.ROOT / "fixtures" / "spleen" / "app.toml")
STANDARD = APP.default_cases / "standard"
FIXTURES_README = profiles.ROOT / "fixtures" / "README.md"
COMMITTED = [(APP, path) for path in sorted(APP.default_cases.iterdir())]
COMMITTED += [(SPLEEN, path) for path in sorted(SPLEEN.default_cases.iterdir())]


def copy_case(tmp_path: Path, source: Path = STANDARD) -> Path:
    """A copy of a committed case, in a cases folder of its own."""
    target = tmp_path / "cases" / source.name
    shutil.copytree(source, target)
    return target


def edit(case: Path, old: str, new: str) -> Path:
    path = case / "case.toml"
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))
    return path


def refusal(case: Path, app: contract.AppContract | None = APP) -> str:
    """The one line the loader refuses the case with."""
    with pytest.raises(GateError) as refused:
        cases.load_case(case, app.labels if app else None, cases.run_time(app) if app else None)
    line = str(refused.value)
    assert "\n" not in line, line
    assert line.startswith(f"{case / 'case.toml'}: "), line
    return line


@pytest.mark.parametrize(("app", "case"), COMMITTED, ids=[path.name for _, path in COMMITTED])
def test_every_committed_case_declares_every_fact_and_they_hold(
    app: contract.AppContract, case: Path
) -> None:
    data = tomllib.loads((case / "case.toml").read_text())
    assert set(data["input"]) == set(case_input.FIELDS), "every fact is declared, so every one is checked"
    assert {"name", "label_names"} <= set(data)
    loaded = cases.load_case(case, app.labels, cases.run_time(app))
    assert loaded.name == data["name"] == case.name


STUDY = tomllib.loads((STANDARD / "case.toml").read_text())["input"]["study_instance_uid"]
SERIES = tomllib.loads((STANDARD / "case.toml").read_text())["input"]["expected_series_instance_uid"]
OTHER_UID = "2.25.202350470244270244591433707077569116917"  # the oblique case's study


@pytest.mark.parametrize(
    ("old", "new", "needles"),
    [
        ("slices = 64", "slices = 300", ["'input.slices' declares 300", f"64 image(s) in series {SERIES}"]),
        (STUDY, OTHER_UID, [f"'input.study_instance_uid' declares '{OTHER_UID}'", f"study {STUDY}"]),
        (SERIES, OTHER_UID, ["'input.expected_series_instance_uid'", f"no such series (it has {SERIES})"]),
        ("files = 64", "files = 65", ["'input.files' declares 65", "has 64 DICOM file(s)"]),
        ("series = 1", "series = 2", ["'input.series' declares 2", "has 1 series"]),
        ("pixel_spacing_mm = 1.5", "pixel_spacing_mm = 1.4", ["'input.pixel_spacing_mm' declares 1.4",
                                                              "pixel spacing 1.5 mm"]),
        ("slice_spacing_mm = 2.0", "slice_spacing_mm = 2.5", ["'input.slice_spacing_mm' declares 2.5",
                                                              "slices 2 mm apart"]),
        ('patient_position = "HFS"', 'patient_position = "FFS"', ["declares 'FFS'", "patient position HFS"]),
        ("slices = 64", 'slices = "64"', ["'input.slices' must be like 64", "not '64'"]),
        ('"right kidney", "left kidney"', '"left kidney", "right kidney"',
         ["'label_names' declares 'left kidney' for label 2", "names it 'right kidney'"]),
        ('"stomach", "aorta"]', '"stomach"]', ["'label_names' declares 5 name(s) for the 6 labels"]),
        ('name = "standard"', 'name = "oblique"', ["'name' declares 'oblique'", "folder is 'standard'"]),
    ],
    ids=["slices", "study", "expected-series", "files", "series", "pixel-spacing", "slice-spacing",
         "patient-position", "slices-type", "label-names", "label-names-count", "name"],
)  # fmt: skip
def test_a_field_that_does_not_hold_is_refused_in_one_line(
    tmp_path: Path, old: str, new: str, needles: list[str]
) -> None:
    case = copy_case(tmp_path)
    edit(case, old, new)
    line = refusal(case)
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"


def test_the_facts_describe_the_series_the_app_must_pick(tmp_path: Path) -> None:
    """Two series in one folder: files and series count both, slices only the axial one's 64."""
    case = copy_case(tmp_path, APP.default_cases / "two-series")
    cases.load_case(case, APP.labels)
    edit(case, "slices = 64", "slices = 66")
    assert "has 64 image(s) in series" in refusal(case)


def test_facts_are_checked_against_an_empty_folder_and_optional(tmp_path: Path) -> None:
    """A folder with no DICOM file contradicts every count; a case that states no facts still loads
    (the app's own refusal of the folder is then the gate's finding)."""
    case = copy_case(tmp_path)
    shutil.rmtree(case / "dicom")
    (case / "dicom").mkdir()
    (case / "dicom" / "README.txt").write_text("the series was not exported\n")
    assert "'input.files' declares 64, but" in refusal(case) and "has 0 DICOM file(s)" in refusal(case)
    text = (case / "case.toml").read_text()
    (case / "case.toml").write_text(re.sub(r"\[input\]\n(.+\n)+", '[input]\ndicom = "dicom"\n', text))
    assert cases.load_case(case, APP.labels).name == "standard"


def test_label_names_are_checked_against_the_contract_it_is_gated_with(tmp_path: Path) -> None:
    case = copy_case(tmp_path, SPLEEN.default_cases / "spleen-standard")
    cases.load_case(case, SPLEEN.labels)
    edit(case, 'label_names = ["spleen"]', 'label_names = ["liver"]')
    assert "'label_names' declares 'liver' for label 1, but the app contract names it 'spleen'" in refusal(
        case, SPLEEN
    )


def test_the_gate_refuses_such_a_case_before_anything_runs(tmp_path: Path) -> None:
    """The command line: exit 2 and one line naming case.toml, the field, the declared and the found value,
    before any image is looked up (the image named here does not exist)."""
    for old, new, field in (("slices = 64", "slices = 300", "input.slices"),
                            (STUDY, OTHER_UID, "input.study_instance_uid")):  # fmt: skip
        case = copy_case(tmp_path / field)
        edit(case, old, new)
        command = [sys.executable, "-m", "validation", "acceptance", "--cases", str(case.parent)]
        command += ["--image", "armgate/no-such-image:never", "--reports", str(tmp_path / field / "reports")]
        result = subprocess.run(command, cwd=profiles.ROOT, capture_output=True, text=True, timeout=120)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith(f"armgate: {case / 'case.toml'}: field '{field}' declares "), lines[0]
        assert not (tmp_path / field / "reports").exists()


def readme_example() -> str:
    """The TOML block of fixtures/README.md's "case.toml" section."""
    section = FIXTURES_README.read_text().split("\n## case.toml\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the case.toml section shows one TOML example"
    return blocks[0]


def test_the_readme_schema_example_is_the_committed_standard_case(tmp_path: Path) -> None:
    """Its tolerances are the measured ones a committed case uses (not loose limits a 2 mm shift passes),
    and it loads through the real schema, every fact checked against the standard case's DICOM."""
    example = tomllib.loads(readme_example())
    assert example == tomllib.loads((STANDARD / "case.toml").read_text())
    case = copy_case(tmp_path)
    (case / "case.toml").write_text(readme_example())
    loaded = cases.load_case(case, APP.labels, cases.run_time(APP))
    measured = example["tolerances"]["ground_truth"]
    assert {key: loaded.tolerances["ground_truth"][key] for key in measured} == measured


def test_the_readme_example_check_fails_on_a_loose_limit(tmp_path: Path) -> None:
    example = readme_example().replace("hd95_max_mm = 1.75", "hd95_max_mm = 4.0")
    assert tomllib.loads(example) != tomllib.loads((STANDARD / "case.toml").read_text())
    with pytest.raises(GateError, match=r"unknown field 'input\.slice'"):
        case = copy_case(tmp_path)
        (case / "case.toml").write_text(readme_example().replace("slices = 64", "slice = 64"))
        cases.load_case(case, APP.labels)
