"""Target profiles: which base, which Python, which packages, and the pins acceptance asserts.

A profile is a TOML file in container/profiles/. Loading validates every field so a typo
fails here, with the file and the field named, and not twenty minutes into a build.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from validation.errors import GateError

ROOT = Path(__file__).resolve().parent.parent
PROFILES_DIR = ROOT / "container" / "profiles"
LOCKS_DIR = ROOT / "container" / "locks"
DEFAULT_PROFILE = "bookworm"
PLATFORM_ARCH = {"linux/arm64": "aarch64"}
DEFAULT_MANYLINUX = "manylinux_2_28"  # bookworm's glibc is 2.36; 2_28 is what its wheels are built for
VENV = "/opt/venv"  # where a hermetic profile's packages are installed (container/Dockerfile's VENV)
# The App SDK's two generations: "classic" (0.5.x and older: Application.compose() without Holoscan) and
# "holoscan" (0.6 on: Holoscan's Application, init_app_context, operators built with the app). One image
# holds one: the newer package shadows the older's monai.deploy modules.
SDK_GENERATIONS = {"classic": SpecifierSet("<0.6"), "holoscan": SpecifierSet(">=0.6")}
SDK_PACKAGE = "monai-deploy-app-sdk"


@dataclass(frozen=True)
class Base:
    kind: str  # "debootstrap" (made locally) or "image" (pulled from a registry)
    suite: str = ""
    variant: str = ""
    include: tuple[str, ...] = ()
    image: str = ""
    build_args: dict[str, str] = field(default_factory=dict)
    # the CPU QEMU emulates for this base's binaries on a non-arm64 host (QEMU_CPU): not in the recipe,
    # since it changes how fast the base runs under emulation, not what it holds
    qemu_cpu: str = ""

    def recipe_hash(self) -> str:
        """Changes exactly when the locally made base would come out different."""
        recipe = {"suite": self.suite, "variant": self.variant, "include": sorted(self.include)}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def reference(self) -> str:
        """The image name the app image is built FROM."""
        if self.kind == "debootstrap":
            return f"armgate/base:{self.suite}-{self.recipe_hash()}"
        return self.image.format(**self.build_args)


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    description: str
    platform: str
    python: str
    base: Base
    install: str  # "wheelhouse" (hermetic) or "network" (pip inside the build)
    packages: tuple[str, ...]
    upgrade: tuple[str, ...]
    pins: dict[str, SpecifierSet]
    pip_check_allow: tuple[str, ...]
    manylinux: str = DEFAULT_MANYLINUX  # newest manylinux tag the base's glibc runs (lock resolution)
    sdk: str = "classic"  # the App SDK generation (SDK_GENERATIONS) of the apps it builds
    library_path: tuple[str, ...] = ()  # folders under the venv's site-packages put on LD_LIBRARY_PATH
    runtime_libraries: tuple[str, ...] = ()  # shared libraries the image checks find on the loader path

    @property
    def arch(self) -> str:
        return PLATFORM_ARCH[self.platform]

    @property
    def lock_path(self) -> Path:
        return LOCKS_DIR / f"{self.name}-{self.arch}.txt"

    @property
    def ld_library_path(self) -> str:
        """The image's LD_LIBRARY_PATH: the library_path folders inside the venv's site-packages."""
        site = f"{VENV}/lib/python{self.python}/site-packages"
        return ":".join(f"{site}/{folder}" for folder in self.library_path)

    def check_sdk(self, locked: dict[str, str]) -> None:
        """The lock's App SDK must be of the generation the profile declares: one line when not."""
        version = {canonicalize_name(name): v for name, v in locked.items()}.get(SDK_PACKAGE)
        if version is not None and version not in SDK_GENERATIONS[self.sdk]:
            raise GateError(
                f"{self.lock_path}: {SDK_PACKAGE} {version} is not of the {self.sdk!r} generation "
                f"({SDK_PACKAGE}{SDK_GENERATIONS[self.sdk]}) that {self.path} declares in 'profile.sdk'; "
                "fix the profile's packages or its sdk, and rerun `nox -s lock`"
            )


class Fields:
    """Reads typed fields from a TOML table, naming the file and field in every error."""

    def __init__(self, path: Path, data: dict, prefix: str = "") -> None:
        self.path, self.data, self.prefix = path, data, prefix

    def _fail(self, key: str, problem: str) -> GateError:
        return GateError(f"{self.path}: field '{self.prefix}{key}' {problem}")

    def table(self, key: str, required: bool = True) -> Fields:
        value = self.data.get(key, None if required else {})
        if not isinstance(value, dict):
            raise self._fail(key, "is missing (expected a table)" if value is None else "must be a table")
        return Fields(self.path, value, f"{self.prefix}{key}.")

    def str(self, key: str, choices: tuple[str, ...] = (), default: str | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or not value:
            raise self._fail(key, "is missing" if value is None else "must be a non-empty string")
        if choices and value not in choices:
            raise self._fail(key, f"is {value!r}; expected one of: {', '.join(choices)}")
        return value

    def strings(self, key: str, required: bool = True) -> tuple[str, ...]:
        value = self.data.get(key, None if required else [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._fail(key, "is missing" if value is None else "must be a list of strings")
        return tuple(value)

    def int(self, key: str) -> int:
        value = self.data.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(key, "must be an integer")
        return value

    def mapping(self, key: str, required: bool = True) -> dict[str, str]:
        value = self.data.get(key, None if required else {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self._fail(key, "is missing" if value is None else "must be a table of strings")
        return dict(value)


def reject_unknown_keys(path: Path, data: dict, schema: dict, prefix: str = "") -> None:
    """A misspelt key must not silently disable what it meant to set: fail on the first unknown one.

    `schema` maps each known key to None (any value) or to the schema of its table."""
    for key, value in data.items():
        if key not in schema:
            raise GateError(
                f"{path}: unknown field '{prefix}{key}'; known fields here: {', '.join(sorted(schema))}"
            )
        if isinstance(schema[key], dict) and isinstance(value, dict):
            reject_unknown_keys(path, value, schema[key], f"{prefix}{key}.")


_BASE_FIELDS = dict.fromkeys(("kind", "suite", "variant", "include", "image", "build_args", "qemu_cpu"))
PROFILE_SCHEMA = {
    "profile": dict.fromkeys(("description", "platform", "python", "manylinux", "sdk")),
    "base": _BASE_FIELDS,
    "requirements": {"install": None, "packages": None, "upgrade": None},
    "pins": None,
    "checks": {"pip_check_allow": None},
    "runtime": {"library_path": None, "libraries": None},
}


def read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise GateError(f"{path}: not valid TOML ({error}); fix the syntax") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """A small TOML writer (scalars, lists, nested tables) for the case.toml files armgate writes: the
    standard library only reads TOML."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in data.items() if not isinstance(value, Mapping)]
    text = "\n".join(lines) + ("\n" if lines else "")
    for key, value in data.items():
        if isinstance(value, Mapping):
            name = f"{prefix}.{key}" if prefix else key
            body = to_toml(value, name)
            has_scalars = any(not isinstance(v, Mapping) for v in value.values())
            text += (f"\n[{name}]\n" if has_scalars else "") + body
    return text


def available() -> list[str]:
    return sorted(path.stem for path in PROFILES_DIR.glob("*.toml"))


def profile_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml":
        if not candidate.is_file():
            raise GateError(f"{candidate}: profile file not found")
        return candidate
    path = PROFILES_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise GateError(
            f"unknown profile '{name_or_path}' (no {path.relative_to(ROOT)}); "
            f"choose one of: {', '.join(available())}"
        )
    return path


def load(name_or_path: str = DEFAULT_PROFILE) -> Profile:
    path = profile_path(name_or_path)
    data = read_toml(path)
    reject_unknown_keys(path, data, PROFILE_SCHEMA)
    top = Fields(path, data)
    meta, base_fields, req, checks, runtime = (
        top.table("profile"),
        top.table("base"),
        top.table("requirements"),
        top.table("checks", required=False),
        top.table("runtime", required=False),
    )
    platform = meta.str("platform", choices=tuple(PLATFORM_ARCH))
    kind = base_fields.str("kind", choices=("debootstrap", "image"))
    if kind == "debootstrap":
        base = Base(
            kind,
            suite=base_fields.str("suite"),
            variant=base_fields.str("variant", default="minbase"),
            include=base_fields.strings("include"),
            qemu_cpu=_qemu_cpu(base_fields),
        )
    else:
        base = Base(kind, image=base_fields.str("image"), build_args=base_fields.mapping("build_args", False))
        try:
            base.reference  # noqa: B018 - fails on a placeholder without a build arg
        except (KeyError, IndexError) as error:
            raise GateError(
                f"{path}: field 'base.image' uses {error} but base.build_args has no value for it"
            ) from None
    packages = req.strings("packages")
    upgrade = req.strings("upgrade", required=False)
    for index, spec in enumerate((*packages, *upgrade)):
        try:
            Requirement(spec)
        except InvalidRequirement:
            raise GateError(
                f"{path}: field 'requirements.packages' item {index}: {spec!r} is not a requirement"
            ) from None
    pins = {}
    for package, spec in top.mapping("pins").items():
        try:
            pins[package] = SpecifierSet(spec)
        except InvalidSpecifier:
            raise GateError(f"{path}: field 'pins.{package}' = {spec!r} is not a version specifier") from None
    return Profile(
        name=path.stem,
        path=path,
        description=meta.str("description"),
        platform=platform,
        python=_python_version(meta),
        base=base,
        install=req.str("install", choices=("wheelhouse", "network")),
        packages=packages,
        upgrade=upgrade,
        pins=pins,
        pip_check_allow=checks.strings("pip_check_allow", required=False),
        manylinux=_manylinux_tag(meta),
        sdk=meta.str("sdk", choices=tuple(SDK_GENERATIONS), default="classic"),
        library_path=_library_path(runtime),
        runtime_libraries=_runtime_libraries(runtime),
    )


def _python_version(meta: Fields) -> str:
    value = meta.str("python")
    if not re.fullmatch(r"3\.\d+", value):
        raise meta._fail("python", f"is {value!r}; expected the base's CPython as MAJOR.MINOR, e.g. \"3.9\"")
    return value


def _manylinux_tag(meta: Fields) -> str:
    value = meta.str("manylinux", default=DEFAULT_MANYLINUX)
    if not re.fullmatch(r"manylinux_2_\d+", value):
        expected = "expected manylinux_2_<glibc minor>, e.g. manylinux_2_31"
        raise meta._fail("manylinux", f"is {value!r}; {expected}")
    return value


def _library_path(runtime: Fields) -> tuple[str, ...]:
    folders = runtime.strings("library_path", required=False)
    for folder in folders:
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*", folder) or ".." in folder.split("/"):
            problem = f"item {folder!r} must be a folder in site-packages, e.g. 'nvidia/cu13/lib'"
            raise runtime._fail("library_path", problem)
    return folders


def _runtime_libraries(runtime: Fields) -> tuple[str, ...]:
    names = runtime.strings("libraries", required=False)
    for name in names:
        if not re.fullmatch(r"lib[A-Za-z0-9_.+-]*\.so(\.\d+)*", name):
            problem = f"item {name!r} must be a shared library's soname, e.g. 'libcudart.so.13'"
            raise runtime._fail("libraries", problem)
    return names


def _qemu_cpu(base: Fields) -> str:
    """QEMU's -cpu value, e.g. "max,pauth-impdef=on": a model and comma-separated properties."""
    value = base.data.get("qemu_cpu", "")
    pattern = r"[a-z0-9-]+(,[a-z0-9-]+=[a-z0-9]+)*"
    if not isinstance(value, str) or (value and not re.fullmatch(pattern, value)):
        raise base._fail("qemu_cpu", f"is {value!r}; expected QEMU's -cpu value, e.g. 'max,pauth-impdef=on'")
    return value
