"""The SBOM read from the image's files on the host: what counts as a distribution, and a quiet render."""

from __future__ import annotations

import json
import os
import stat
import warnings
from pathlib import Path

import pytest

from validation import image_tree, lock, profiles, sbom
from validation.build import BuildRecord
from validation.errors import GateError

METADATA = b"Metadata-Version: 2.1\nName: Torch_Vision\nVersion: 0.21.0\nSummary: x\n\nlong description\n"


@pytest.mark.parametrize(
    ("path", "wanted"),
    [
        ("opt/venv/lib/python3.11/site-packages/numpy-2.4.0.dist-info/METADATA", True),
        ("usr/lib/python3/dist-packages/six-1.16.0.egg-info/PKG-INFO", True),
        ("opt/venv/lib/python3.11/site-packages/numpy-2.4.0.dist-info/RECORD", False),
        ("opt/venv/lib/python3.11/site-packages/numpy/METADATA", False),
        ("usr/share/python-wheels/pip-23.0.1-py3-none-any.whl", False),
    ],
)
def test_which_files_are_distribution_metadata(path: str, wanted: bool) -> None:
    assert bool(sbom.METADATA_MEMBER.search(path)) is wanted


def test_metadata_gives_the_normalized_name_and_version() -> None:
    assert sbom.parse_metadata(METADATA) == ("torch-vision", "0.21.0")
    assert sbom.parse_metadata(b"Metadata-Version: 2.1\nName: nameless-version\n") is None


def test_packages_come_from_the_image_files(monkeypatch: pytest.MonkeyPatch) -> None:
    found = [
        ("a/site-packages/x.dist-info/METADATA", METADATA),
        ("b/site-packages/y.dist-info/METADATA", b"\n"),
    ]
    monkeypatch.setattr(sbom, "image_members", lambda image, platform, wanted: iter(found))
    assert sbom.installed_packages("img", "linux/arm64") == {"torch-vision": "0.21.0"}
    monkeypatch.setattr(sbom, "image_members", lambda image, platform, wanted: iter([]))
    with pytest.raises(GateError, match="no installed Python distribution"):
        sbom.installed_packages("img", "linux/arm64")


def test_the_bom_renders_without_warnings_and_with_a_complete_graph(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bom = sbom.make_bom("armgate/x:y", "sha256:abc", {"numpy": "2.4.0", "torch": "2.10.0"}, [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = sbom.render(bom)
    assert capsys.readouterr().out == ""
    data = json.loads(text)
    assert {c["purl"] for c in data["components"]} == {"pkg:pypi/numpy@2.4.0", "pkg:pypi/torch@2.10.0"}
    image = next(d for d in data["dependencies"] if d["ref"] == "sha256:abc")
    assert sorted(image["dependsOn"]) == ["pkg:pypi/numpy@2.4.0", "pkg:pypi/torch@2.10.0"]


def test_a_library_warning_becomes_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Noisy:
        def __init__(self, bom: object) -> None:
            pass

        def output_as_string(self, indent: int) -> str:
            warnings.warn("The Component is missing dependencies.\nsecond line", UserWarning, stacklevel=1)
            warnings.warn("The Component is missing dependencies.\nsecond line", UserWarning, stacklevel=1)
            return "{}"

    monkeypatch.setattr(sbom, "JsonV1Dot5", Noisy)
    assert sbom.render(object()) == "{}\n"
    assert capsys.readouterr().out == "sbom: The Component is missing dependencies.\n"


def test_layers_merge_as_overlay_does(tmp_path: Path) -> None:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    site = "opt/venv/lib/python3.11/site-packages"
    for layer, name, version in ((lower, "a", "1"), (lower, "b", "1"), (lower, "c", "1"), (upper, "a", "2")):
        (layer / site / f"{name}-{version}.dist-info").mkdir(parents=True)
        (layer / site / f"{name}-{version}.dist-info" / "METADATA").write_text(
            f"Name: {name}\nVersion: {version}\n"
        )
    # the upper layer upgraded a (1 -> 2: whiteout of the old dist-info) and deleted c's metadata file
    os.mknod(upper / site / "a-1.dist-info", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    (upper / site / "c-1.dist-info").mkdir()
    os.mknod(upper / site / "c-1.dist-info" / "METADATA", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    (upper / site / "numpy" / "core").mkdir(parents=True)  # a package's own tree is not walked
    (upper / site / "numpy" / "core" / "METADATA").write_text("Name: decoy\nVersion: 9\n")
    found = [
        entry.path
        for entry in image_tree.layer_entries([upper, lower], skip=sbom.inside_a_package)
        if entry.kind == "file" and sbom.METADATA_MEMBER.search(entry.path)
    ]
    assert sorted(found) == [f"{site}/a-2.dist-info/METADATA", f"{site}/b-1.dist-info/METADATA"]


@pytest.mark.docker
@pytest.mark.slow
def test_layers_and_export_agree_on_the_real_image(
    built_image: BuildRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert image_tree.layer_dirs(built_image.image_id), (
        "the engine's layer folders are readable here (root, overlay2)"
    )
    from_layers = sbom.installed_packages(built_image.image_id, built_image.platform)
    monkeypatch.setattr(image_tree, "layer_dirs", lambda image: None)
    from_export = sbom.installed_packages(built_image.image_id, built_image.platform)
    assert from_layers == from_export
    locked = {p.name: p.version for p in lock.parse_lock(profiles.load().lock_path)}
    assert {name: from_layers.get(name) for name in locked} == locked
