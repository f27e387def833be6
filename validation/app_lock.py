"""An app's own requirements, locked together with its profile's packages for the profile's target.

`nox -s lock -- --app CONTRACT --profile P` resolves the profile's packages and the requirements file
the contract names (`[app] requirements`) in one uv call, as a profile's lock is resolved, preferring
the versions of the profile's lock and holding the profile's pins, into `<contract folder>/locks/
<profile>-<arch>.txt` (or `--locks DIR`). Its header records the sha256 of the requirements file and
of the profile lock it was resolved from; the build installs from it only while both still match, and
never resolves anything itself. A requirement that contradicts a profile pin fails in one line naming
both, before or after uv is asked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from validation import lock, profiles, requirements_file
from validation.contract import AppContract
from validation.errors import GateError

LOCKS_FOLDER = "locks"  # beside the contract, unless --locks names another folder
REQUIREMENTS_SHA = "# requirements-sha256: "
PROFILE_LOCK_SHA = "# profile-lock-sha256: "
APP_PIN_PREFIX = "app:"  # the pins check's name of an app requirement: pin[app:scikit-image]


def lock_path(profile: profiles.Profile, app: AppContract, folder: Path | None = None) -> Path:
    """Where the app's lock for this profile lives: one lock per app and profile."""
    return (folder or app.path.parent / LOCKS_FOLDER).resolve() / f"{profile.name}-{profile.arch}.txt"


def installed_lock(profile: profiles.Profile, app: AppContract, folder: Path | None = None) -> Path | None:
    """The lock the image's packages come from: the app's when its contract names requirements, else
    the profile's; None for a profile that installs from the network."""
    if profile.install != "wheelhouse":
        return None
    return lock_path(profile, app, folder) if app.requirements else profile.lock_path


def lock_command(profile: profiles.Profile, app: AppContract, folder: Path | None = None) -> str:
    locks = f" --locks {folder}" if folder else ""
    return f"nox -s lock -- --app {app.path} --profile {profile.name}{locks}"


def target_environment(profile: profiles.Profile) -> dict[str, str]:
    """PEP 508 marker values of the profile's target (CPython on Linux), not of the host."""
    machine = profile.arch
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{profile.python}.0",
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{profile.python}.0",
        "python_version": profile.python,
        "sys_platform": "linux",
        "extra": "",
    }


def app_requirements(profile: profiles.Profile, app: AppContract) -> list[requirements_file.AppRequirement]:
    """The app's requirements that apply on the profile's target (their markers hold there)."""
    if app.requirements is None:
        return []
    environment = target_environment(profile)
    return [
        item
        for item in requirements_file.read(app.requirements)
        if item.requirement.marker is None or item.requirement.marker.evaluate(environment)
    ]


@dataclass(frozen=True)
class Pin:
    """One version the image checks assert: a profile pin or an app requirement."""

    package: str
    specifier: SpecifierSet
    source: str  # who asks for it, for the check's message


def pins_to_check(profile: profiles.Profile, app: AppContract) -> dict[str, Pin]:
    """Every pin the image checks assert, by check name: the profile's under their package name,
    the app's requirements as app:<name> (a name the file lists twice holds both specifiers)."""
    pins = {name: Pin(name, spec, f"the profile {profile.name} pins") for name, spec in profile.pins.items()}
    for item in app_requirements(profile, app):
        name = canonicalize_name(item.requirement.name)
        key = APP_PIN_PREFIX + name
        earlier = pins.get(key)
        specifier = item.requirement.specifier & (earlier.specifier if earlier else SpecifierSet())
        pins[key] = Pin(name, specifier, f"the app's {app.requirements.name} requires")
    return pins


@dataclass(frozen=True)
class ProfileConstraint:
    """A version the profile fixes for a package: a [pins] entry or a [requirements] package."""

    name: str
    specifier: SpecifierSet
    where: str  # "<profile file> (pins.monai)" or "<profile file> (requirements.packages)"

    def describe(self) -> str:
        return f"{self.name}{self.specifier} of {self.where}"


def profile_constraints(profile: profiles.Profile) -> list[ProfileConstraint]:
    found = [
        ProfileConstraint(canonicalize_name(name), spec, f"{profile.path} (pins.{name})")
        for name, spec in profile.pins.items()
    ]
    for text in profile.packages:
        requirement = Requirement(text)
        if requirement.specifier:
            where = f"{profile.path} (requirements.packages)"
            found.append(ProfileConstraint(canonicalize_name(requirement.name), requirement.specifier, where))
    return found


def _exact_version(specifier: SpecifierSet) -> str | None:
    """The one version `==X` / `===X` allows, if the set holds such a pin (not a wildcard)."""
    for item in specifier:
        if item.operator in ("==", "===") and not item.version.endswith(".*"):
            return item.version
    return None


def _conflict(
    item: requirements_file.AppRequirement, constraint: ProfileConstraint, why: str = ""
) -> GateError:
    because = f" ({why})" if why else ""
    return GateError(
        f"{item.path}: line {item.line} requires {item.requirement}, which conflicts with "
        f"{constraint.describe()}{because}; relax the app's requirement or gate the app on a profile whose "
        f"{constraint.name} satisfies it"
    )


def check_conflicts(profile: profiles.Profile, app: AppContract) -> None:
    """A requirement that no version pinned exactly by the profile satisfies fails before uv runs."""
    constraints = profile_constraints(profile)
    for item in app_requirements(profile, app):
        name = canonicalize_name(item.requirement.name)
        for constraint in constraints:
            version = _exact_version(constraint.specifier)
            exact = constraint.name == name and version is not None
            if exact and not item.requirement.specifier.contains(version, prereleases=True):
                raise _conflict(item, constraint)


# a package uv's cause names with a version: "torch==2.0.0", "monai<=1.5.0"
_NAMED = re.compile(r"(?<![\w.-])([A-Za-z][A-Za-z0-9._-]*)(?=[<>=!~])")


def explain_failure(
    profile: profiles.Profile, app: AppContract, stderr: str, folder: Path | None = None
) -> GateError:
    """uv's resolver error as one line: the app requirement and the profile pin it names, when it
    names both; otherwise uv's own cause, on one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("Resolved")]
    cause = re.sub(r"^error: No solution found when resolving dependencies:?\s*", "", " ".join(lines))
    cause = re.sub(r"^cause:\s*", "", cause)
    named = {canonicalize_name(name) for name in _NAMED.findall(cause)}
    mine = [
        item for item in app_requirements(profile, app) if canonicalize_name(item.requirement.name) in named
    ]
    theirs = [constraint for constraint in profile_constraints(profile) if constraint.name in named]
    pairs = [(m, t) for m in mine for t in theirs if canonicalize_name(m.requirement.name) == t.name]
    if pairs or (mine and theirs):
        item, constraint = pairs[0] if pairs else (mine[0], theirs[0])
        return _conflict(item, constraint, f"uv: {cause}")
    return GateError(
        f"{app.requirements}: the app's requirements do not resolve with {profile.path} for "
        f"{profile.arch} (uv: {cause}); fix what uv names, then rerun `{lock_command(profile, app, folder)}`"
    )


def _network_profile(profile: profiles.Profile, app: AppContract) -> GateError:
    return GateError(
        f"{app.path}: field 'app.requirements' needs a hermetic profile, and {profile.path} installs from "
        'the network; gate the app on a profile with install = "wheelhouse" (e.g. bookworm)'
    )


def _source(path: Path) -> str:
    """A path as the lock's header names it: relative to the repository when inside it."""
    return str(path.relative_to(profiles.ROOT)) if path.is_relative_to(profiles.ROOT) else str(path)


@dataclass(frozen=True)
class LockSummary:
    """What `nox -s lock -- --app` wrote, and how it differs from the profile's lock."""

    path: Path
    packages: int
    added: list[str]  # name==version the profile's lock does not hold
    changed: list[str]  # "name old -> new": a version the app's requirements moved

    def describe(self) -> str:
        added = f"; the app adds {', '.join(self.added)}" if self.added else "; the app adds no package"
        changed = f"; moved from the profile's lock: {', '.join(self.changed)}" if self.changed else ""
        return f"{_source(self.path)}: {self.packages} packages{added}{changed}"


def compile_app_lock(profile: profiles.Profile, app: AppContract, folder: Path | None = None) -> LockSummary:
    """Resolve the profile's packages with the app's requirements for the profile's platform (the
    profile lock's call, its versions preferred, its pins held) into the app's lock for that profile."""
    if app.requirements is None:
        raise GateError(
            f'{app.path}: the contract names no requirements (add [app] requirements = "requirements.txt"); '
            "the profile's own lock serves it"
        )
    if profile.install != "wheelhouse":
        raise _network_profile(profile, app)
    profile_locked = lock.parse_lock(profile.lock_path)
    check_conflicts(profile, app)
    uv = lock.find_uv()
    target = lock_path(profile, app, folder)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        profile_in, pins_in = f"{profile.name}.in", f"{profile.name}-pins.txt"
        app_in = app.requirements.name if app.requirements.name not in (profile_in, pins_in) else "app.txt"
        (work / profile_in).write_text("\n".join(profile.packages) + "\n")
        (work / pins_in).write_text("".join(f"{name}{spec}\n" for name, spec in profile.pins.items()))
        shutil.copy(app.requirements, work / app_in)
        # uv prefers the versions (and reuses the hashes) of the file it writes: start from the profile's lock
        shutil.copy(profile.lock_path, work / "lock.txt")
        command = [
            uv, "pip", "compile", profile_in, app_in, "--constraint", pins_in,
            "--python-platform", f"{profile.arch}-{profile.manylinux}", "--python-version", profile.python,
            "--generate-hashes", "--no-header", "--annotation-style", "line", "--output-file", "lock.txt",
        ]  # fmt: skip
        # run beside the inputs so the lock's "# via -r" notes name them without a temp path
        result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=scratch)
        if result.returncode != 0:
            raise explain_failure(profile, app, result.stderr, folder)
        body = (work / "lock.txt").read_text()
    header = (
        f"# Lock of {_source(app.requirements)} with {_source(profile.path)} for {profile.platform}, "
        f"CPython {profile.python}.\n"
        f"# Generated by `nox -s lock -- --app {_source(app.path)} --profile {profile.name}`; "
        "do not edit by hand.\n"
        f"{REQUIREMENTS_SHA}{requirements_file.digest(app.requirements)}\n"
        f"{PROFILE_LOCK_SHA}{lock.lock_hash(profile.lock_path)}\n"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(header + body)
    locked = lock.parse_lock(target)
    before = {package.name: package.version for package in profile_locked}
    return LockSummary(
        target,
        len(locked),
        [f"{p.name}=={p.version}" for p in locked if p.name not in before],
        [
            f"{p.name} {before[p.name]} -> {p.version}"
            for p in locked
            if before.get(p.name, p.version) != p.version
        ],
    )


def _recorded(path: Path, prefix: str) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith(prefix):
            return line.removeprefix(prefix).strip()
        if line and not line.startswith("#"):
            return None  # the header ends at the first package
    return None


def require_fresh(profile: profiles.Profile, app: AppContract, folder: Path | None = None) -> Path:
    """The app's lock for this profile, when it was resolved from the requirements file and the
    profile lock as they are now; otherwise one line saying which changed and the command to rerun."""
    if profile.install != "wheelhouse":
        raise _network_profile(profile, app)
    path, command = lock_path(profile, app, folder), lock_command(profile, app, folder)
    if not path.is_file():
        raise GateError(f"{path}: the app's lock for profile {profile.name} is missing; run `{command}`")
    sources = ((REQUIREMENTS_SHA, app.requirements), (PROFILE_LOCK_SHA, profile.lock_path))
    for prefix, source in sources:
        recorded = _recorded(path, prefix)
        if recorded is None:
            raise GateError(
                f"{path}: not an app lock of `nox -s lock -- --app` (no '{prefix.strip()}'); run `{command}`"
            )
        if recorded != lock.lock_hash(source):
            raise GateError(f"{path}: stale, {source} changed since it was locked; run `{command}`")
    lock.parse_lock(path)
    return path


def extra_packages(
    profile: profiles.Profile, app_locked: list[lock.LockedPackage]
) -> list[lock.LockedPackage]:
    """The app lock's packages the profile's lock does not hold at that version: what the app's
    install step adds over the profile's packages."""
    profile_has = {(package.name, package.version) for package in lock.parse_lock(profile.lock_path)}
    return [package for package in app_locked if (package.name, package.version) not in profile_has]


def stage_wheels(profile: profiles.Profile, app_lock: Path, destination: Path) -> list[lock.LockedPackage]:
    """Copy the wheels of the app lock's extra packages into `destination` (the build context of the
    app's install step); they are downloaded once into the profile's app wheelhouse, by hash."""
    extras = extra_packages(profile, lock.parse_lock(app_lock))
    destination.mkdir(parents=True, exist_ok=True)
    if not extras:
        return extras
    house = lock.wheelhouse_dir(profile)
    house = lock.ensure_wheels(profile, extras, app_lock, house.with_name(house.name + "-apps"))
    wanted = {digest for package in extras for digest in package.hashes}
    for wheel in sorted(house.iterdir()):
        if lock.file_sha256(wheel) in wanted:
            shutil.copy2(wheel, destination / wheel.name)
    return extras


def main(contract_path: Path | None, profile_names: list[str], folder: Path | None) -> int:
    """`python -m validation lock --app CONTRACT [--profile P ...] [--locks DIR]`."""
    from validation import contract

    if contract_path is None:
        raise GateError("--locks places an app's locks: name the app's contract with --app FILE")
    app = contract.load(contract_path)
    for name in profile_names:
        print(compile_app_lock(profiles.load(name), app, folder).describe())
    return 0
