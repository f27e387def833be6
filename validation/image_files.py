"""What the image checks read from the image's files, in one pass over its filesystem on the host.

Walking tens of thousands of files with the image's own Python runs under QEMU on an x86 host and
took minutes; the host reads the same merged view natively in seconds (validation/image_tree.py).
The checks that need a running image (its Python, pip, its user) still run in the inspection
container.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from validation import image_tree
from validation.sbom import METADATA_MEMBER, parse_metadata

AARCH64 = 183  # ELF e_machine
ELF_MAGIC = b"\x7fELF"
# Not looked at for leftovers: Debian's python3-venv ships pip's and setuptools' wheels in
# /usr/share/python-wheels (dpkg-owned, for ensurepip): those are the OS's, not leftovers of a build.
LEFTOVER_EXEMPT = ("proc/", "sys/", "dev/", "usr/share/python-wheels/")
CREDENTIAL_FILES = (".netrc", ".pypirc", ".git-credentials")
CACHE_FOLDERS = ("/.cache/pip", "/.cache/uv")


@dataclass
class ImageFiles:
    """Facts about the image's files; paths are absolute, as inside the image."""

    elf_files: int = 0
    foreign_elf: list[tuple[str, int]] = field(default_factory=list)  # (path, e_machine)
    leftovers: list[str] = field(default_factory=list)
    app_digests: dict[str, str] = field(default_factory=dict)  # path under the app folder -> sha256
    # site-/dist-packages folder -> {normalized name: version} of the distributions installed there
    distributions: dict[str, dict[str, str]] = field(default_factory=dict)

    def installed(self, import_path: list[str]) -> dict[str, str]:
        """name -> version as an interpreter with this import path finds them (as `pip list` does):
        the first folder on the path that holds a distribution wins."""
        found: dict[str, str] = {}
        for folder in import_path:
            for name, version in self.distributions.get(folder.rstrip("/"), {}).items():
                found.setdefault(name, version)
        return found


def elf_machine(head: bytes) -> int | None:
    """e_machine of an ELF file from its first 20 bytes; None when it is no ELF file."""
    if len(head) < 20 or head[:4] != ELF_MAGIC:
        return None
    return struct.unpack("<H" if head[5] == 1 else ">H", head[18:20])[0]


def is_leftover(path: str, is_dir: bool, wheels_folder_used: bool) -> bool:
    """A wheel, a credentials file, a pip or uv cache, or a non-empty /wheels: what a build that
    installs from a wheelhouse or a private index can leave behind."""
    if path.startswith(LEFTOVER_EXEMPT):
        return False
    name = PurePosixPath(path).name
    if is_dir:
        return ("/" + path).endswith(CACHE_FOLDERS) or (path == "wheels" and wheels_folder_used)
    return name.endswith(".whl") or name in CREDENTIAL_FILES


def read_entries(entries: Iterable[image_tree.Entry], app_dir: str) -> ImageFiles:
    """One pass over the image's entries (in any order, as an export or the layer folders give them)."""
    found = ImageFiles()
    app_prefix = app_dir.strip("/") + "/"
    listed: list[tuple[str, str]] = []  # (path, kind)
    for entry in entries:
        path = entry.path
        listed.append((path, entry.kind))
        if entry.kind != "file":
            continue
        in_app, metadata = path.startswith(app_prefix), METADATA_MEMBER.search(path) is not None
        if in_app or metadata:
            content = entry.read(-1)
            head = content[:20]
            if in_app:
                found.app_digests[path.removeprefix(app_prefix)] = hashlib.sha256(content).hexdigest()
            parsed = parse_metadata(content) if metadata else None
            if parsed:
                site = "/" + str(PurePosixPath(path).parent.parent)
                found.distributions.setdefault(site, {}).setdefault(*parsed)
        else:
            head = entry.read(20)
        machine = elf_machine(head)
        if machine is not None:
            found.elf_files += 1
            if machine != AARCH64:
                found.foreign_elf.append(("/" + path, machine))
    wheels_folder_used = any(path.startswith("wheels/") for path, _ in listed)
    found.leftovers = sorted(
        "/" + path for path, kind in listed if is_leftover(path, kind == "dir", wheels_folder_used)
    )
    return found


def read_image(image: str, platform: str, app_dir: str) -> ImageFiles:
    """The image's file facts, read on the host from its layers (or an export); nothing is started."""
    return read_entries(image_tree.entries(image, platform), app_dir)
