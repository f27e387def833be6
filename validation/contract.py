"""The app contract: every fact armgate needs about one MONAI Deploy app, in one TOML file.

`container/app.toml` describes this repository's app; `--app FILE` on build, acceptance and bench
points armgate at another. Paths in the file are relative to the file's own folder. Nothing about
an app (its outputs, labels, mounts, flags, display window) is written anywhere else in validation/.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from validation import generation, requirements_file
from validation.errors import GateError
from validation.profiles import ROOT, Fields, Profile, read_toml, reject_unknown_keys

if TYPE_CHECKING:
    from validation.map_image import MapPackage

DEFAULT_CONTRACT = ROOT / "container" / "app.toml"
# What an app may write, by kind; the contract gives each a glob pattern within the output folder, and
# exactly one file must match it. The gate compares the mask, or, for an app that writes none, the SEG
# placed on the input series' grid.
OUTPUT_KINDS = {
    "mask": "a NIfTI label mask on the input grid",
    "seg": "a DICOM Segmentation of the input series",
    "stl": "an STL surface mesh in patient space (mm)",
}
LABEL_MAP_KINDS = ("mask", "seg")  # an app must write at least one: the gate compares a label map
SCHEMA = {
    "app": dict.fromkeys(
        ("name", "source", "main", "args", "user", "uid", "requires_python", "requires", "requirements")
    ),
    "mounts": dict.fromkeys(("input", "model", "output")),
    "outputs": dict.fromkeys(OUTPUT_KINDS),
    "labels": dict.fromkeys(("file", "names")),
    "display": dict.fromkeys(("window_hu",)),
    "host": dict.fromkeys(("requirements",)),
    "model": dict.fromkeys(("input_shape",)),
    # how long a case may run, when its case.toml sets no timeout_s (read by validation/cases.py)
    "run": dict.fromkeys(("start_s", "seconds_per_window", "margin", "window_spacing_mm", "window_overlap")),
    "defaults": dict.fromkeys(("model", "cases")),
}
# the App SDK generation, the variables the app reads its paths from, its app.yaml (validation/generation.py)
SCHEMA["app"].update(dict.fromkeys(("sdk", "env", "app_yaml")))
PLACEHOLDERS = ("{input}", "{model}", "{output}")


@dataclass(frozen=True)
class Mounts:
    """Where a site mounts the case's DICOM folder, the model file and the output folder."""

    input: str
    model: str
    output: str


@dataclass(frozen=True)
class AppContract:
    path: Path
    name: str
    source: Path
    main: str
    args: tuple[str, ...]
    user: str
    uid: int
    requires_python: SpecifierSet  # the Pythons the app runs on
    requires: tuple[Requirement, ...]  # floors on packages the image must hold (e.g. the SDK's API)
    mounts: Mounts
    outputs: dict[str, str]  # kind (OUTPUT_KINDS) -> glob pattern within the output folder
    labels: dict[int, str]
    window_hu: tuple[float, float]
    host_requirements: tuple[str, ...]
    model_input_shape: tuple[int, ...]  # one window the app feeds its model: what the model check runs
    default_model: Path
    default_cases: Path
    run_time: dict = field(default_factory=dict)  # the [run] table, checked by validation/cases.py
    requirements: Path | None = None  # the app's requirements.txt, locked with the profile (app_lock.py)
    sdk: str = "classic"  # the App SDK generation it is written for (profiles.SDK_GENERATIONS)
    env: dict[str, str] = field(default_factory=dict)  # variables it reads, with {input}/{model}/{output}
    resources: dict[str, str] = field(default_factory=dict)  # its app.yaml's resources (memory as docker's)
    package: MapPackage | None = None  # a MAP gated by its own manifests (validation/map_contract.py)

    @property
    def install_dir(self) -> str:
        return f"/opt/{self.name}"

    @property
    def mask(self) -> str | None:
        """The pattern of the NIfTI label mask, when the app writes one."""
        return self.outputs.get("mask")

    @property
    def seg(self) -> str | None:
        """The pattern of the DICOM SEG, when the app writes one."""
        return self.outputs.get("seg")

    def command_args(self, input_dir: str, model: str, output_dir: str) -> list[str]:
        values = {"input": input_dir, "model": model, "output": output_dir}
        return [arg.format(**values) for arg in self.args]

    @property
    def entrypoint(self) -> tuple[str, ...]:
        """The image's ENTRYPOINT, as a site runs it: `python3 ./<main> <args at the mounts>`."""
        mounts = self.mounts
        return ("python3", f"./{self.main}", *self.command_args(mounts.input, mounts.model, mounts.output))

    def host_command(self, python: str, input_dir: Path, model: Path, output_dir: Path) -> list[str]:
        """The same app on the host, for the reference run."""
        return [
            python,
            str(self.source / self.main),
            *self.command_args(str(input_dir), str(model), str(output_dir)),
        ]


def _labels(path: Path, fields: Fields) -> dict[int, str]:
    if ("file" in fields.data) == ("names" in fields.data):
        raise GateError(f"{path}: field 'labels' needs exactly one of 'file' (a labels JSON) or 'names'")
    if "names" in fields.data:
        names = fields.mapping("names")
        try:
            return {int(value): name for value, name in names.items()}
        except ValueError:
            raise GateError(
                f"{path}: field 'labels.names' keys must be label values, e.g. 1 = \"lesion\""
            ) from None
    labels_file = path.parent / fields.str("file")
    try:
        entries = json.loads(labels_file.read_text())["labels"]
        return {int(entry["value"]): str(entry["name"]) for entry in entries}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise GateError(
            f"{labels_file}: not a labels file ({type(error).__name__}); it needs "
            '{"labels": [{"value": 1, "name": "lesion"}, ...]}'
        ) from None


def _outputs(path: Path, fields: Fields) -> dict[str, str]:
    """Each declared output's glob pattern, relative to the output folder and inside it."""
    patterns = {kind: fields.str(kind) for kind in OUTPUT_KINDS if kind in fields.data}
    if not any(kind in patterns for kind in LABEL_MAP_KINDS):
        raise GateError(
            f"{path}: field 'outputs' declares no label map; name the app's NIfTI mask (mask = "
            '"labels.nii.gz") or its DICOM SEG (seg = "*.dcm"), or both'
        )
    for kind, pattern in patterns.items():
        parts = PurePosixPath(pattern).parts
        if pattern.startswith("/") or ".." in parts:
            raise GateError(
                f"{path}: field 'outputs.{kind}' = {pattern!r} must be a pattern inside the output folder, "
                'e.g. "*.dcm" or "stl/*.stl"'
            )
    return patterns


def _specifier(path: Path, text: str) -> SpecifierSet:
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise GateError(f"{path}: field 'app.requires_python' = {text!r} is not a specifier") from None


def _requirement(path: Path, text: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement:
        raise GateError(f"{path}: field 'app.requires' item {text!r} is not a requirement") from None


def check_floors(app: AppContract, profile: Profile, locked: dict[str, str] | None = None) -> None:
    """Fail before any build step when the profile's Python, or a locked package, is below what the
    app declares: a floor is a fact to check, not a surprise at run time."""
    if profile.python not in app.requires_python:
        raise GateError(
            f"{profile.path}: Python {profile.python} is below the app's floor (requires_python "
            f"{app.requires_python} in {app.path}); use a base with a newer Python"
        )
    versions = {canonicalize_name(name): version for name, version in (locked or {}).items()}
    for requirement in app.requires:
        version = versions.get(canonicalize_name(requirement.name))
        if version is not None and version not in requirement.specifier:
            raise GateError(
                f"{profile.lock_path}: {requirement.name} {version} does not satisfy the app's "
                f"{requirement} ({app.path}); change the profile's packages and rerun `nox -s lock`"
            )


def load(path: Path | str = DEFAULT_CONTRACT) -> AppContract:
    """Read and check one contract; any problem is one line naming the file and the field."""
    path = Path(path).resolve()
    if not path.is_file():
        raise GateError(f"{path}: app contract not found; pass --app FILE (see container/app.toml)")
    data = read_toml(path)
    reject_unknown_keys(path, data, SCHEMA)
    top = Fields(path, data)
    app, mounts, outputs = top.table("app"), top.table("mounts"), top.table("outputs")
    here = path.parent
    source = (here / app.str("source")).resolve()
    main = app.str("main", default="__main__.py")
    if not (source / main).is_file():
        raise GateError(f"{path}: field 'app.source' points to {source}, which has no {main}")
    args = app.strings("args")
    sdk = generation.read(path, app)
    placed = (*args, *sdk.env.values())
    missing = [placeholder for placeholder in PLACEHOLDERS if not any(placeholder in arg for arg in placed)]
    if missing:
        raise GateError(f"{path}: field 'app.args' must place {', '.join(missing)} (or 'app.env' must)")
    window = top.table("display").data.get("window_hu")
    if not (
        isinstance(window, list) and len(window) == 2 and all(isinstance(v, int | float) for v in window)
    ):
        raise GateError(f"{path}: field 'display.window_hu' must be [low, high] in HU, e.g. [-175, 250]")
    shape = top.table("model").data.get("input_shape")
    if not (isinstance(shape, list) and shape and all(isinstance(v, int) and v > 0 for v in shape)):
        raise GateError(f"{path}: field 'model.input_shape' must list sizes, e.g. [1, 1, 64, 64, 64]")
    defaults = top.table("defaults")
    requirements = (here / app.str("requirements")).resolve() if "requirements" in app.data else None
    if requirements is not None and not requirements.is_file():
        problem = f"points to {requirements}, which is not a file; name it relative to this contract"
        raise GateError(f"{path}: field 'app.requirements' {problem}")
    if requirements is not None:
        requirements_file.read(requirements)  # every line a requirement, or one line naming the first bad one
    return AppContract(
        path=path,
        name=app.str("name"),
        source=source,
        main=main,
        args=args,
        user=app.str("user"),
        uid=app.int("uid"),
        requires_python=_specifier(path, app.str("requires_python")),
        requires=tuple(_requirement(path, spec) for spec in app.strings("requires", required=False)),
        mounts=Mounts(mounts.str("input"), mounts.str("model"), mounts.str("output")),
        outputs=_outputs(path, outputs),
        labels=_labels(path, top.table("labels")),
        window_hu=(float(window[0]), float(window[1])),
        host_requirements=top.table("host").strings("requirements"),
        model_input_shape=tuple(shape),
        default_model=(here / defaults.str("model")).resolve(),
        default_cases=(here / defaults.str("cases")).resolve(),
        run_time=dict(data.get("run", {})),
        requirements=requirements,
        sdk=sdk.sdk,
        env=sdk.env,
        resources=sdk.resources,
    )
