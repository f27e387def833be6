"""A CycloneDX SBOM of the Python packages actually installed in the built image.

Read from the image itself (`pip list` inside it), not from the lock, so it describes what ships;
the lock's sha256 is attached where the lock pins exactly one artifact for the package.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot5
from packageurl import PackageURL

from validation import lock
from validation.errors import GateError

IMAGE_ID_PROPERTY = "armgate:image-id"


def installed_packages(image: str, platform: str) -> dict[str, str]:
    """name -> version of every distribution in the image's Python environment."""
    command = [
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "--platform",
        platform,
        "--entrypoint",
        "python3",
    ]
    result = subprocess.run(
        [*command, image, "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise GateError(
            f"cannot list the packages of {image}: {(result.stderr.strip().splitlines() or ['?'])[-1]}"
        )
    return {lock.normalize(item["name"]): item["version"] for item in json.loads(result.stdout)}


def existing_sbom_image(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    properties = data.get("metadata", {}).get("component", {}).get("properties", [])
    return next((p["value"] for p in properties if p.get("name") == IMAGE_ID_PROPERTY), None)


def make_bom(image: str, image_id: str, packages: dict[str, str], locked: list[lock.LockedPackage]) -> Bom:
    single_hash = {p.name: next(iter(p.hashes)) for p in locked if len(p.hashes) == 1}
    image_component = Component(
        name=image,
        version=image_id,
        type=ComponentType.CONTAINER,
        bom_ref=image_id,
        properties=[Property(name=IMAGE_ID_PROPERTY, value=image_id)],
    )
    bom = Bom(metadata=BomMetaData(component=image_component))
    for name, version in sorted(packages.items()):
        purl = PackageURL(type="pypi", name=name, version=version)
        hashes = (
            [HashType(alg=HashAlgorithm.SHA_256, content=single_hash[name])] if name in single_hash else []
        )
        component = Component(name=name, version=version, purl=purl, bom_ref=purl.to_string(), hashes=hashes)
        bom.components.add(component)
    return bom


def write_sbom(image: str, image_id: str, platform: str, lock_path: Path | None, path: Path) -> Path:
    """Write the SBOM unless the one at `path` already describes this image id (no-op rebuilds stay fast)."""
    if existing_sbom_image(path) == image_id:
        return path
    locked = lock.parse_lock(lock_path) if lock_path else []
    bom = make_bom(image, image_id, installed_packages(image_id, platform), locked)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(JsonV1Dot5(bom).output_as_string(indent=2) + "\n")
    return path
