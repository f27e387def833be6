"""The short contract of a MAP: only what its manifests cannot say, beside the cases.

A MAP says how it runs, where its input and output go, where its app and models are and what resources it
needs (validation/map_image.py reads that from the image). It does not say which output is the label map,
what the labels mean or how to display the series; this TOML does:

    [map]
    name = "lesion-seg"           # optional: the report's name for the app (else the MAP's title)
    [outputs]                     # which output is the SEG (or the NIfTI mask), by glob pattern
    seg = "*.dcm"
    [labels]
    names = { 1 = "lesion" }
    [display]
    window_hu = [-175, 250]
    [defaults]
    cases = "cases"               # the folder of case folders, relative to this file

The gate then works on the app contract made here from both: its mounts are the manifests' input and output
paths, its environment app.json's, its memory pkg.json's; it has no source, model mount or host run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import SpecifierSet

from validation import contract, engine, map_image
from validation.contract import AppContract, Mounts
from validation.errors import GateError
from validation.map_image import MapPackage
from validation.profiles import Fields, read_toml, reject_unknown_keys

SCHEMA = {
    "map": dict.fromkeys(("name",)),
    "outputs": dict.fromkeys(contract.OUTPUT_KINDS),
    "labels": dict.fromkeys(("file", "names")),
    "display": dict.fromkeys(("window_hu",)),
    "defaults": dict.fromkeys(("cases",)),
}


@dataclass(frozen=True)
class MapContract:
    path: Path
    name: str  # "" when the contract names none: the MAP's title then
    outputs: dict[str, str]
    labels: dict[int, str]
    window_hu: tuple[float, float]
    default_cases: Path


def load(path: Path | str) -> MapContract:
    """Read and check a MAP's short contract; any problem is one line naming the file and the field."""
    path = Path(path).resolve()
    if not path.is_file():
        raise GateError(f"{path}: MAP contract not found; pass --map FILE (see fixtures/map/map.toml)")
    data = read_toml(path)
    reject_unknown_keys(path, data, SCHEMA)
    top = Fields(path, data)
    window = top.table("display").data.get("window_hu")
    if not (
        isinstance(window, list) and len(window) == 2 and all(isinstance(v, int | float) for v in window)
    ):
        raise GateError(f"{path}: field 'display.window_hu' must be [low, high] in HU, e.g. [-175, 250]")
    cases = (path.parent / top.table("defaults").str("cases")).resolve()
    named = top.table("map", required=False)
    return MapContract(
        path=path,
        name=named.str("name") if "name" in named.data else "",
        outputs=contract._outputs(path, top.table("outputs")),
        labels=contract._labels(path, top.table("labels")),
        window_hu=(float(window[0]), float(window[1])),
        default_cases=cases,
    )


def app_contract(short: MapContract, package: MapPackage, title: str) -> AppContract:
    """The app contract the gate works on: the short contract's outputs, labels and window, the MAP's own
    facts for everything else. `title` names the app when the contract does not (the image's title)."""
    app = package.app
    return AppContract(
        path=short.path,
        name=short.name or title or package.image,
        source=short.path.parent,  # a MAP brings no source: nothing is built or run from here
        main=app.command_text,
        args=(),
        user=package.user,
        uid=package.uid if package.uid is not None else -1,
        requires_python=SpecifierSet(),
        requires=(),
        mounts=Mounts(input=app.input_path, model=package.pkg.model_root, output=app.output_path),
        outputs=short.outputs,
        labels=short.labels,
        window_hu=short.window_hu,
        host_requirements=(),
        model_input_shape=(),
        default_model=Path(package.pkg.model_root),
        default_cases=short.default_cases,
        sdk="holoscan",
        env=package.run_env(),
        resources={"memory": package.pkg.limits.memory},
        package=package,
    )


def load_for_image(path: Path, image: str | None) -> AppContract:
    """The app contract of the MAP `image` with its short contract at `path`: both read and checked, the
    manifests against the image's files, before anything runs."""
    if not image:
        raise GateError(f"{path}: --map gates a MAP image: pass --image REF (a MAP from `holoscan package`)")
    short = load(path)
    facts = engine.require_image(image, f"MAP {image} not found")
    package = map_image.read(image, facts)
    return app_contract(short, package, facts.labels.get("org.opencontainers.image.title", ""))


def summary(package: MapPackage) -> str:
    """The console's lines on the MAP: which form each manifest was in, what ran, with which limits."""
    facts = package.facts()
    lines = [f"MAP {package.image}: {facts['app_json']}", f"  {facts['pkg_json']}"]
    lines.append(
        f"  ran {facts['command']} as {facts['user']} in {facts['working_directory']}, {facts['limits']}"
    )
    return "\n".join(lines)
