"""A CycloneDX SBOM of the Python packages actually installed in the built image.

Read from the image itself, not from the lock, so it describes what ships: the distributions'
metadata files are read from the image's filesystem on the host (its layer folders, or an export of a
container never started), so no emulated Python or pip runs. The lock's sha256 is attached where the
lock pins exactly one artifact for the package.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from email.parser import HeaderParser
from pathlib import Path

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot5
from packageurl import PackageURL

from validation import image_tree, lock, shared_files
from validation.errors import GateError

IMAGE_ID_PROPERTY = "armgate:image-id"
# An installed distribution's metadata: <site-packages or dist-packages>/<name>.dist-info/METADATA
# (wheels) or <name>.egg-info/PKG-INFO (older installs, Debian's python3-* packages).
METADATA_MEMBER = re.compile(
    r"(?:^|/)(?:site|dist)-packages/[^/]+\.(?:dist-info/METADATA|egg-info/PKG-INFO)$"
)


PACKAGE_FOLDERS = ("/site-packages", "/dist-packages")


def inside_a_package(folder: str) -> bool:
    """A folder of site-/dist-packages other than a metadata folder: nothing the SBOM reads is in it."""
    parent, _, name = folder.rpartition("/")
    return ("/" + parent).endswith(PACKAGE_FOLDERS) and not name.endswith((".dist-info", ".egg-info"))


def image_members(image: str, platform: str, wanted: re.Pattern[str]) -> Iterator[tuple[str, bytes]]:
    """(path, content) of the image's regular files whose path matches `wanted`, read on the host
    (validation/image_tree.py; nothing runs under emulation). Packages' own folders are not walked."""
    for entry in image_tree.entries(image, platform, skip=inside_a_package):
        if entry.kind == "file" and wanted.search(entry.path):
            yield entry.path, entry.read(-1)


def parse_metadata(content: bytes) -> tuple[str, str] | None:
    """(normalized name, version) from a METADATA / PKG-INFO file, or None if it names neither."""
    headers = HeaderParser().parsestr(content.decode("utf-8", errors="replace"), headersonly=True)
    name, version = headers.get("Name"), headers.get("Version")
    if not name or not version:
        return None
    return lock.normalize(name.strip()), version.strip()


def installed_packages(image: str, platform: str) -> dict[str, str]:
    """name -> version of every Python distribution installed in the image."""
    packages: dict[str, str] = {}
    for _, content in image_members(image, platform, METADATA_MEMBER):
        parsed = parse_metadata(content)
        if parsed:
            packages.setdefault(*parsed)
    if not packages:
        raise GateError(f"{image}: no installed Python distribution found (no *.dist-info/METADATA)")
    return packages


def existing_sbom_image(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    properties = data.get("metadata", {}).get("component", {}).get("properties", [])
    return next((p["value"] for p in properties if p.get("name") == IMAGE_ID_PROPERTY), None)


def make_bom(image: str, image_id: str, packages: dict[str, str], locked: list[lock.LockedPackage]) -> Bom:
    """The image as the BOM's subject, depending on each installed distribution (a complete graph)."""
    single_hash = {p.name: next(iter(p.hashes)) for p in locked if len(p.hashes) == 1}
    image_component = Component(
        name=image,
        version=image_id,
        type=ComponentType.CONTAINER,
        bom_ref=image_id,
        properties=[Property(name=IMAGE_ID_PROPERTY, value=image_id)],
    )
    bom = Bom(metadata=BomMetaData(component=image_component))
    components = []
    for name, version in sorted(packages.items()):
        purl = PackageURL(type="pypi", name=name, version=version)
        hashes = (
            [HashType(alg=HashAlgorithm.SHA_256, content=single_hash[name])] if name in single_hash else []
        )
        components.append(
            Component(name=name, version=version, purl=purl, bom_ref=purl.to_string(), hashes=hashes)
        )
        bom.components.add(components[-1])
    # The installed set is flat (what ships, not who requires whom): the image depends on each one.
    bom.register_dependency(image_component, components)
    for component in components:
        bom.register_dependency(component, [])
    return bom


def render(bom: Bom) -> str:
    """The SBOM as CycloneDX 1.5 JSON; a warning of the library becomes one line, not a stack dump."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = JsonV1Dot5(bom).output_as_string(indent=2) + "\n"
    for message in dict.fromkeys(str(warning.message).splitlines()[0] for warning in caught):
        print(f"sbom: {message}", flush=True)
    return text


def write_sbom(image: str, image_id: str, platform: str, lock_path: Path | None, path: Path) -> Path:
    """Write the SBOM unless the one at `path` already describes this image id (no-op rebuilds stay fast)."""
    if existing_sbom_image(path) == image_id:
        return path
    locked = lock.parse_lock(lock_path) if lock_path else []
    bom = make_bom(image, image_id, installed_packages(image_id, platform), locked)
    path.parent.mkdir(parents=True, exist_ok=True)
    shared_files.replace_text(path, render(bom))
    return path
