"""An app's own requirements: named by its contract, locked with the profile's packages for the target
(uv against the package index, as `nox -s lock` does), refused in one line when they contradict a
profile pin, and a build that never installs from a lock that is missing or stale."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from validation import app_lock, build, contract, lock, profiles, requirements_file
from validation.errors import GateError

SPLEEN = profiles.ROOT / "fixtures" / "spleen"
EXTRA = "tabulate==0.9.0"  # a small pure-Python package no profile carries


def write_app(folder: Path, requirements: str | None, name: str = "requirements-demo") -> Path:
    """A contract for the spleen app's code under another name, with `requirements` as its
    requirements.txt (None: the contract names none). Returns the contract's path."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (SPLEEN / "app.toml").read_text()
    for key in ("source", "model", "cases"):  # the spleen app's files, where they are
        value = {"source": "app", "model": "model/model.ts", "cases": "cases"}[key]
        text = text.replace(f'{key} = "{value}"', f'{key} = "{SPLEEN / value}"')
    text = text.replace('name = "spleen-seg"', f'name = "{name}"')
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
        text = text.replace(
            'requires_python = ">=3.9"', 'requires_python = ">=3.9"\nrequirements = "requirements.txt"'
        )
    path = folder / "app.toml"
    path.write_text(text)
    return path


def run_lock(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "validation", "lock", *args]
    return subprocess.run(command, cwd=profiles.ROOT, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def locked_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An app with one extra requirement, locked for bookworm by the lock command (uv, for aarch64)."""
    contract_path = write_app(
        tmp_path_factory.mktemp("locked-app"), f"# tables for the log\n{EXTRA}  # small\n"
    )
    result = run_lock("--app", str(contract_path), "--profile", "bookworm")
    assert result.returncode == 0, result.stderr
    assert "the app adds tabulate==0.9.0" in result.stdout, result.stdout
    return contract_path


# --- the contract field and the requirements file


def test_a_contract_without_requirements_has_none(tmp_path: Path) -> None:
    app = contract.load(write_app(tmp_path, None))
    assert app.requirements is None
    assert app_lock.installed_lock(profiles.load(), app) == profiles.load().lock_path


def test_the_contract_names_its_requirements_relative_to_itself(tmp_path: Path) -> None:
    app = contract.load(write_app(tmp_path, f"{EXTRA}\n"))
    assert app.requirements == tmp_path / "requirements.txt"
    assert app_lock.installed_lock(profiles.load(), app) == tmp_path / "locks" / "bookworm-aarch64.txt"


def test_a_missing_requirements_file_is_one_line_naming_the_field(tmp_path: Path) -> None:
    path = write_app(tmp_path, f"{EXTRA}\n")
    (tmp_path / "requirements.txt").unlink()
    with pytest.raises(
        GateError, match=r"app.toml: field 'app.requirements' points to .*requirements.txt"
    ) as error:
        contract.load(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("-r other.txt", r"line 2 '-r other.txt' is a pip option; .* write each package on its own line"),
        ("--index-url https://example.org/simple", r"line 2 .* is a pip option"),
        ("scikit image>=0.19", r"line 2 'scikit image>=0.19' is not a requirement; write NAME\[SPECIFIER\]"),
        (
            "demo @ https://example.org/demo-1.0-py3-none-any.whl",
            r"line 2 .* installs from a URL, .* e.g. demo==1.2.3",
        ),
    ],
)
def test_a_requirement_line_armgate_cannot_lock_is_one_line_naming_file_line_and_fix(
    tmp_path: Path, line: str, message: str
) -> None:
    path = write_app(tmp_path, f"{EXTRA}\n{line}\n")
    with pytest.raises(GateError, match=message) as error:
        contract.load(path)
    assert str(error.value).startswith(f"{tmp_path / 'requirements.txt'}: line 2 ")
    assert "\n" not in str(error.value)


def test_requirements_file_reads_comments_continuations_and_markers(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text(
        "# a comment\n\nscikit-image>=0.19  # trailing comment\nnumpy-stl \\\n  >=3.0\n"
        'old-only ; python_version < "3.0"\n'
    )
    found = requirements_file.read(path)
    assert [(item.line, str(item.requirement)) for item in found] == [
        (3, "scikit-image>=0.19"),
        (4, "numpy-stl>=3.0"),
        (6, 'old-only; python_version < "3.0"'),
    ]


def test_every_pin_to_check_holds_the_profiles_and_the_apps_requirements(tmp_path: Path) -> None:
    """The app's requirements are checked as app:<name>; one whose marker excludes the target is not."""
    text = 'Tabulate>=0.9,<1\nold-only ; python_version < "3.0"\ntabulate!=0.9.1\nnumpy-stl\n'
    app = contract.load(write_app(tmp_path, text))
    profile = profiles.load()
    pins = app_lock.pins_to_check(profile, app)
    assert {name: pins[name].specifier for name in profile.pins} == profile.pins
    app_pins = {name: pin for name, pin in pins.items() if name.startswith("app:")}
    assert sorted(app_pins) == ["app:numpy-stl", "app:tabulate"]
    assert app_pins["app:tabulate"].specifier == SpecifierSet(">=0.9,<1,!=0.9.1")
    assert (
        app_pins["app:tabulate"].package == "tabulate"
        and "requirements.txt" in app_pins["app:tabulate"].source
    )
    assert app_pins["app:numpy-stl"].specifier == SpecifierSet("")


# --- the lock


def test_the_lock_resolves_profile_and_app_together_beside_the_contract(locked_app: Path) -> None:
    profile = profiles.load()
    path = locked_app.parent / "locks" / "bookworm-aarch64.txt"
    header = path.read_text().splitlines()[:4]
    assert "for linux/arm64, CPython 3.11" in header[0] and "nox -s lock -- --app" in header[1]
    assert header[2] == app_lock.REQUIREMENTS_SHA + requirements_file.digest(
        locked_app.parent / "requirements.txt"
    )
    assert header[3] == app_lock.PROFILE_LOCK_SHA + lock.lock_hash(profile.lock_path)
    app_locked = {package.name: package for package in lock.parse_lock(path)}
    # every package of the profile's lock at its version and with its hashes: the app adds, it moves nothing
    for package in lock.parse_lock(profile.lock_path):
        assert app_locked.pop(package.name) == package
    assert list(app_locked) == ["tabulate"] and app_locked["tabulate"].version == "0.9.0"
    assert app_locked["tabulate"].hashes  # hash-locked like every other package
    assert app_lock.require_fresh(profile, contract.load(locked_app)) == path


def test_the_lock_goes_under_a_folder_given_with_locks(locked_app: Path, tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    result = run_lock("--app", str(locked_app), "--locks", str(folder))
    assert result.returncode == 0, result.stderr
    assert (folder / "bookworm-aarch64.txt").is_file()
    app = contract.load(locked_app)
    assert app_lock.require_fresh(profiles.load(), app, folder) == folder / "bookworm-aarch64.txt"


def test_a_requirement_that_contradicts_a_profile_pin_fails_the_lock_naming_both(tmp_path: Path) -> None:
    """monai<=1.5.0 against the profile's monai==1.6.1: refused before uv runs, no lock written."""
    path = write_app(tmp_path, f"{EXTRA}\nmonai<=1.5.0\n")
    result = run_lock("--app", str(path), "--profile", "bookworm")
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    profile = profiles.load()
    assert lines[0].startswith(f"armgate: {tmp_path / 'requirements.txt'}: line 2 requires monai<=1.5.0")
    assert f"conflicts with monai==1.6.1 of {profile.path} (pins.monai)" in lines[0]
    assert "uv:" not in lines[0]  # told from the pins alone, before the resolver runs
    assert not (tmp_path / "locks").exists()


def test_a_conflict_uv_finds_is_one_line_naming_both(tmp_path: Path) -> None:
    """numpy<1.20 against the profile's range pin numpy>=1.21: uv's resolver refuses it; its cause is
    told on the same line as the two requirements."""
    path = write_app(tmp_path, "numpy<1.20\n")
    with pytest.raises(GateError) as error:
        app_lock.compile_app_lock(profiles.load(), contract.load(path))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'requirements.txt'}: line 1 requires numpy<1.20")
    assert "numpy>=1.21 of" in message and "(pins.numpy)" in message and "uv: " in message


def test_a_requirement_of_the_app_whose_dependency_contradicts_a_pin_is_named_with_the_pin(
    tmp_path: Path,
) -> None:
    """torchvision 0.15.1 depends on torch 2.0.0; the profile pins torch 2.10.0: a conflict one level down."""
    path = write_app(tmp_path, "torchvision==0.15.1\n")
    with pytest.raises(GateError) as error:
        app_lock.compile_app_lock(profiles.load(), contract.load(path))
    message = str(error.value)
    assert "line 1 requires torchvision==0.15.1" in message and "torch==2.10.0 of" in message, message


def test_a_network_profile_has_no_app_lock(tmp_path: Path) -> None:
    app = contract.load(write_app(tmp_path, f"{EXTRA}\n"))
    with pytest.raises(GateError, match=r"needs a hermetic profile, and .*clara-agx-21.05.toml installs"):
        app_lock.compile_app_lock(profiles.load("clara-agx-21.05"), app)


# --- the build's view: missing or stale


def test_a_missing_app_lock_stops_the_build_with_the_command_that_makes_it(tmp_path: Path) -> None:
    path = write_app(tmp_path, f"{EXTRA}\n")
    with pytest.raises(GateError) as error:
        app_lock.require_fresh(profiles.load(), contract.load(path))
    expected = (
        f"{tmp_path / 'locks' / 'bookworm-aarch64.txt'}: the app's lock for profile bookworm is missing; "
        f"run `nox -s lock -- --app {path} --profile bookworm`"
    )
    assert str(error.value) == expected


def test_an_edited_requirements_file_makes_the_lock_stale(locked_app: Path, tmp_path: Path) -> None:
    app_folder = tmp_path / "app"
    shutil.copytree(locked_app.parent, app_folder)
    app = contract.load(app_folder / "app.toml")
    assert app_lock.require_fresh(profiles.load(), app)
    (app_folder / "requirements.txt").write_text(f"{EXTRA}\nsix\n")
    with pytest.raises(GateError) as error:
        app_lock.require_fresh(profiles.load(), app)
    message = str(error.value)
    assert message.startswith(f"{app_folder / 'locks' / 'bookworm-aarch64.txt'}: stale, ")
    assert (
        f"{app_folder / 'requirements.txt'} changed since it was locked; run `nox -s lock -- --app" in message
    )


def test_a_new_profile_lock_makes_the_app_lock_stale(
    locked_app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locks = tmp_path / "profile-locks"
    shutil.copytree(profiles.LOCKS_DIR, locks)
    monkeypatch.setattr(profiles, "LOCKS_DIR", locks)
    profile, app = profiles.load(), contract.load(locked_app)
    assert app_lock.require_fresh(profile, app)
    with profile.lock_path.open("a") as handle:
        handle.write("# re-resolved\n")
    with pytest.raises(GateError, match=rf"stale, {profile.lock_path} changed since it was locked; run `nox"):
        app_lock.require_fresh(profile, app)


def test_a_hand_made_lock_is_not_taken_for_an_app_lock(tmp_path: Path) -> None:
    path = write_app(tmp_path, f"{EXTRA}\n")
    (tmp_path / "locks").mkdir()
    shutil.copy(profiles.load().lock_path, tmp_path / "locks" / "bookworm-aarch64.txt")
    with pytest.raises(GateError, match=r"not an app lock of `nox -s lock -- --app` .* run `nox -s lock"):
        app_lock.require_fresh(profiles.load(), contract.load(path))


# --- the build plan


def _build_args(args: list[str]) -> dict[str, str]:
    pairs = [args[i + 1] for i, arg in enumerate(args) if arg == "--build-arg"]
    return dict(pair.split("=", 1) for pair in pairs)


def _contexts(args: list[str]) -> dict[str, str]:
    pairs = [args[i + 1] for i, arg in enumerate(args) if arg == "--build-context"]
    return dict(pair.split("=", 1) for pair in pairs)


def _plan(profile: profiles.Profile, app: contract.AppContract, scratch: Path, app_lock_path: Path | None):
    context = build.stage_context(app, scratch)
    if app_lock_path is not None:
        build.stage_app_requirements(profile, app_lock_path, context)
    labels = {"l": "v"}
    return build.buildx_args(
        profile, app, "base", scratch / "wheels", ["t"], labels, scratch / "iid", context, app_lock_path
    )


def test_the_build_installs_the_apps_lock_over_the_profiles(locked_app: Path, tmp_path: Path) -> None:
    """The profile's lock still fills the shared package layer; the app's step gets the app's lock and
    only the wheels it adds (here tabulate's), staged beside the context."""
    profile, app = profiles.load(), contract.load(locked_app)
    app_lock_path = app_lock.require_fresh(profile, app)
    args = _plan(profile, app, tmp_path, app_lock_path)
    values, contexts = _build_args(args), _contexts(args)
    assert values["LOCK_FILE"] == "bookworm-aarch64.txt" and contexts["locks"] == str(profiles.LOCKS_DIR)
    assert values["APP_LOCK_FILE"] == "bookworm-aarch64.txt"
    staged = tmp_path / build.APP_REQUIREMENTS
    assert contexts["applock"] == str(staged / "lock") and contexts["appwheels"] == str(staged / "wheels")
    assert (staged / "lock" / "bookworm-aarch64.txt").read_bytes() == app_lock_path.read_bytes()
    wheels = sorted(path.name for path in (staged / "wheels").iterdir())
    assert wheels == ["tabulate-0.9.0-py3-none-any.whl"], wheels
    assert args[args.index("--network") + 1] == "none"


def test_an_app_without_requirements_has_an_empty_app_step(tmp_path: Path) -> None:
    profile, app = profiles.load(), contract.load(write_app(tmp_path / "app", None))
    args = _plan(profile, app, tmp_path, None)
    assert "APP_LOCK_FILE" not in _build_args(args)
    for name in ("applock", "appwheels"):
        folder = Path(_contexts(args)[name])
        assert folder.is_dir() and not list(folder.iterdir())


def test_the_build_refuses_a_missing_app_lock_before_any_step(tmp_path: Path) -> None:
    """`nox -s build -- --app CONTRACT`: one line naming the lock command, exit 2, nothing built."""
    path = write_app(tmp_path, f"{EXTRA}\n")
    report = tmp_path / "build.json"
    command = [sys.executable, "-m", "validation", "build", "--app", str(path), "--report", str(report)]
    result = subprocess.run(command, cwd=profiles.ROOT, capture_output=True, text=True, check=False)
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].endswith(f"is missing; run `nox -s lock -- --app {path} --profile bookworm`")
    assert not report.exists()


def test_the_dockerfile_installs_the_apps_lock_after_the_profiles_and_before_the_app() -> None:
    text = build.DOCKERFILE.read_text()
    profile_step = text.index('-r "/locks/${LOCK_FILE}"')
    app_step = text.index('-r "/locks/${APP_LOCK_FILE}"')
    assert profile_step < app_step < text.index("COPY app/")
    assert "--mount=type=bind,from=appwheels" in text and "--mount=type=bind,from=applock" in text
