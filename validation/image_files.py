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

from validation import elf_needs, image_tree
from validation.sbom import METADATA_MEMBER, parse_metadata

AARCH64 = 183  # ELF e_machine
ELF_MAGIC = b"\x7fELF"
# Not looked at for leftovers: Debian's python3-venv ships pip's and setuptools' wheels in
# /usr/share/python-wheels (dpkg-owned, for ensurepip): those are the OS's, not leftovers of a build.
LEFTOVER_EXEMPT = ("proc/", "sys/", "dev/", "usr/share/python-wheels/")
CREDENTIAL_FILES = (".netrc", ".pypirc", ".git-credentials")
CACHE_FOLDERS = ("/.cache/pip", "/.cache/uv")
# Where the loader finds the base's own libraries (Debian's multiarch folders, merged /usr or not): what
# they define is what the image's C and C++ runtimes provide.
SYSTEM_LIBRARY_DIRS = ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib", "usr/lib")


@dataclass
class ImageFiles:
    """Facts about the image's files; paths are absolute, as inside the image."""

    elf_files: int = 0
    foreign_elf: list[tuple[str, int]] = field(default_factory=list)  # (path, e_machine)
    leftovers: list[str] = field(default_factory=list)
    app_digests: dict[str, str] = field(default_factory=dict)  # path under the app folder -> sha256
    # site-/dist-packages folder -> {normalized name: version} of the distributions installed there
    distributions: dict[str, dict[str, str]] = field(default_factory=dict)
    # what the ELF files ask of the loader (validation/elf_needs.py): GLIBC_/GLIBCXX_/CXXABI_ versions
    # each needs (files that need none left out), the libraries each needs, what the base's libraries define
    version_needs: dict[str, set[str]] = field(default_factory=dict)
    needed: dict[str, list[str]] = field(default_factory=dict)
    provided_versions: set[str] = field(default_factory=set)
    paths: set[str] = field(default_factory=set)  # every path in the image, absolute

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
            if not (in_app or metadata):
                # a layer folder's file is read again from its start, an export's member goes on after
                # the 20 bytes already read: the magic number says which
                rest = entry.read(-1)
                content = rest if rest[:4] == ELF_MAGIC else head + rest
            _note_needs(found, path, content)
    found.paths = {"/" + path for path, _ in listed}
    wheels_folder_used = any(path.startswith("wheels/") for path, _ in listed)
    found.leftovers = sorted(
        "/" + path for path, kind in listed if is_leftover(path, kind == "dir", wheels_folder_used)
    )
    return found


def _note_needs(found: ImageFiles, path: str, content: bytes) -> None:
    needs = elf_needs.read(content)
    if needs is None:
        return
    if needs.version_needs:
        found.version_needs["/" + path] = needs.version_needs
    if needs.needed:
        found.needed["/" + path] = needs.needed
    if path.rpartition("/")[0] in SYSTEM_LIBRARY_DIRS:
        found.provided_versions |= needs.version_defs


def missing_versions(files: ImageFiles) -> list[tuple[str, list[str]]]:
    """(file, the versions it needs that the base's libraries do not define), worst first: what the
    loader refuses with `version 'GLIBC_2.38' not found`."""
    missing = [
        (path, sorted(needs - files.provided_versions, key=elf_needs.version_key))
        for path, needs in files.version_needs.items()
        if needs - files.provided_versions
    ]
    return sorted(missing, key=lambda item: (-len(item[1]), item[0]))


def library_on_path(files: ImageFiles, library: str, ld_library_path: str) -> str | None:
    """Where the loader finds `library`: a folder of LD_LIBRARY_PATH, then the system folders."""
    folders = [folder.rstrip("/") for folder in ld_library_path.split(":") if folder]
    candidates = [f"{folder}/{library}" for folder in [*folders, *("/" + d for d in SYSTEM_LIBRARY_DIRS)]]
    return next((path for path in candidates if path in files.paths), None)


def needing(files: ImageFiles, library: str) -> list[str]:
    """The ELF files that name `library` in their DT_NEEDED."""
    return sorted(path for path, names in files.needed.items() if library in names)


def loader_problems(files: ImageFiles, ld_library_path: str, runtime_libraries: Iterable[str]) -> list[str]:
    """One line per problem the dynamic loader would meet: a symbol version the base's C/C++ libraries
    lack (naming the file that needs it most and how many others), a runtime library on no folder."""
    problems = []
    missing = missing_versions(files)
    if missing:
        path, versions = missing[0]
        provided = ", ".join(
            found
            for prefix in ("GLIBC", "GLIBCXX")
            if (found := elf_needs.newest(files.provided_versions, prefix))
        )
        others = f" (and {len(missing) - 1} more ELF files)" if len(missing) > 1 else ""
        problems.append(
            f"{path} needs {', '.join(versions)}{others}, but the image's C/C++ libraries provide up to "
            f"{provided or 'no GLIBC version'}: a wheel built for a newer glibc than the base's; use a "
            "base that provides it or a release of the package built for this one"
        )
    for library in runtime_libraries:
        if library_on_path(files, library, ld_library_path) is None:
            users = needing(files, library)
            more = f" and {len(users) - 1} more" if len(users) > 1 else ""
            needed_by = f", needed by {users[0]}{more}" if users else ""
            problems.append(
                f"{library} is on no folder of the image's loader path (LD_LIBRARY_PATH="
                f"{ld_library_path or '(unset)'} and the system folders){needed_by}: install the wheel "
                "that ships it and name its folder in the profile's runtime.library_path"
            )
    return problems


def read_image(image: str, platform: str, app_dir: str) -> ImageFiles:
    """The image's file facts, read on the host from its layers (or an export); nothing is started."""
    return read_entries(image_tree.entries(image, platform), app_dir)
