"""The merged view of an image's layer folders: what a container of the image sees, as an export
shows it."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest

from validation import contract, image_files, image_tree
from validation.build import BuildRecord


def whiteout(path: Path) -> None:
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(0, 0))


def opaque(folder: Path) -> None:
    os.setxattr(folder, "trusted.overlay.opaque", b"y")


def listing(dirs: list[Path]) -> dict[str, tuple[str, bytes]]:
    return {entry.path: (entry.kind, entry.read(-1)) for entry in image_tree.layer_entries(dirs)}


def test_upper_layers_hide_delete_and_replace_lower_ones(tmp_path: Path) -> None:
    top, middle, bottom = (tmp_path / name for name in ("top", "middle", "bottom"))
    for layer in (top, middle, bottom):
        (layer / "etc").mkdir(parents=True)
    (bottom / "etc" / "kept").write_bytes(b"bottom")
    (bottom / "etc" / "changed").write_bytes(b"old")
    (middle / "etc" / "changed").write_bytes(b"new")
    (bottom / "etc" / "deleted").write_bytes(b"gone")
    whiteout(top / "etc" / "deleted")
    (bottom / "wheels" / "sub").mkdir(parents=True)  # a folder deleted whole in a later layer
    (bottom / "wheels" / "sub" / "torch.whl").write_bytes(b"wheel")
    whiteout(middle / "wheels")
    (bottom / "cache").mkdir()  # a folder replaced by a file
    (bottom / "cache" / "inside").write_bytes(b"x")
    (top / "cache").write_bytes(b"a file now")
    (bottom / "app").mkdir()  # an opaque folder: the lower layer's content is gone, its own stays
    (bottom / "app" / "old.py").write_bytes(b"old")
    (middle / "app").mkdir()
    opaque(middle / "app")
    (middle / "app" / "new.py").write_bytes(b"new")
    (top / "app").mkdir()
    (top / "app" / "extra.py").write_bytes(b"extra")
    found = listing([top, middle, bottom])
    assert found == {
        "etc": ("dir", b""),
        "etc/kept": ("file", b"bottom"),
        "etc/changed": ("file", b"new"),
        "cache": ("file", b"a file now"),
        "app": ("dir", b""),
        "app/new.py": ("file", b"new"),
        "app/extra.py": ("file", b"extra"),
    }


def test_hard_links_are_one_file_and_symlinks_are_not_followed(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "usr" / "lib").mkdir(parents=True)
    (layer / "usr" / "lib" / "libx.so").write_bytes(b"\x7fELF")
    os.link(layer / "usr" / "lib" / "libx.so", layer / "usr" / "lib" / "libx.so.1")
    os.symlink("usr/lib", layer / "lib")  # a link to a folder: listed, not walked twice
    found = listing([layer])
    kinds = sorted(kind for path, (kind, _) in found.items() if path.startswith("usr/lib/"))
    assert kinds == ["file", "other"] and found["lib"] == ("other", b"")
    assert not [path for path in found if path.startswith("lib/")]


def test_skipped_folders_are_listed_but_not_walked(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "big" / "deep").mkdir(parents=True)
    (layer / "big" / "deep" / "file").write_bytes(b"x")
    found = {entry.path for entry in image_tree.layer_entries([layer], skip=lambda path: path == "big")}
    assert found == {"big"}


@pytest.mark.docker
@pytest.mark.slow
def test_layers_and_export_give_the_image_checks_the_same_facts(
    built_image: BuildRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert image_tree.layer_dirs(built_image.image_id), "the engine's layer folders are readable (root)"
    app_dir = contract.load().install_dir
    from_layers = image_files.read_image(built_image.image_id, built_image.platform, app_dir)
    monkeypatch.setattr(image_tree, "layer_dirs", lambda image: None)
    from_export = image_files.read_image(built_image.image_id, built_image.platform, app_dir)
    assert from_layers.elf_files > 100 and from_layers.app_digests and from_layers.distributions
    from_layers.foreign_elf.sort()
    from_export.foreign_elf.sort()
    # an export shows the engine's placeholders for these, never the image's own: it reports none
    engine_files = {f"/{path}" for path in image_tree.ENGINE_INIT_FILES}
    assert not from_export.paths & engine_files
    assert from_layers == dataclasses.replace(
        from_export, paths=from_export.paths | (from_layers.paths & engine_files)
    )
