"""The image's merged filesystem, read on the host: from the engine's overlay2 layer folders when
this host can read them, otherwise from `docker export` of a container that is never started.

Both give the view a container of the image sees, so the image checks and the SBOM read the same
files either way. The layer folders are read by this process alone; an export also keeps the engine
busy writing a tar of the whole image, which beside the case runs costs them a core.
"""

from __future__ import annotations

import os
import stat
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from validation import engine

OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
# What the engine lays over every container (its init layer): in an export these are the engine's
# placeholders, hiding the image's own copies, so an export reports none of them.
ENGINE_INIT_FILES = frozenset({".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab"})


@dataclass(frozen=True)
class Entry:
    """One path of the merged view. `kind` is "dir", "file" (a regular file, named once however many
    hard links it has) or "other" (symlinks, further hard links, devices). `read(n)` reads a file's
    first n bytes (all with -1); from an export it works only until the next entry is taken."""

    path: str  # relative to the image's root: "usr/bin/python3.11"
    kind: str
    read: Callable[[int], bytes]
    link: str = ""  # a symlink's target, as written (absolute targets are the image's, not the host's)


def _nothing(size: int = -1) -> bytes:
    return b""


def _file_reader(path: str) -> Callable[[int], bytes]:
    def read(size: int = -1) -> bytes:
        with open(path, "rb") as handle:
            return handle.read(size)

    return read


def layer_dirs(image: str) -> list[Path] | None:
    """The image's overlay2 layer folders, top layer first, when this host can read them (a local
    engine, run as root); None otherwise (then the image is exported instead)."""
    facts = engine.inspect_image(image)
    if facts is None:
        return None
    driver = facts.graph_driver
    if driver.get("Name") != "overlay2":
        return None
    data = driver.get("Data") or {}
    dirs = [Path(d) for d in [data.get("UpperDir"), *(data.get("LowerDir") or "").split(":")] if d]
    readable = all(os.access(d, os.R_OK | os.X_OK) and d.is_dir() for d in dirs)
    return dirs if dirs and readable else None


def _is_opaque(folder: str) -> bool:
    """An overlay folder that hides what lower layers hold under the same path."""
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(folder, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def layer_entries(dirs: list[Path], skip: Callable[[str], bool] | None = None) -> Iterator[Entry]:
    """The merged view of overlay layer folders (top first), as overlayfs builds it: an upper layer's
    entry hides a lower one's; a whiteout (a 0/0 character device) deletes the path below it; an opaque
    folder hides the lower layers' folder of the same path; anything but a folder hides a lower folder.
    Folders for which `skip(path)` is true are listed but not walked."""
    taken: set[str] = set()  # paths an upper layer already gave
    hidden: set[str] = set()  # paths whose lower-layer entries (and what is under them) are gone
    inodes: set[tuple[int, int]] = set()  # files already named (hard links)
    for layer in dirs:
        hides: set[str] = set()
        folders = [""]
        while folders:
            folder = folders.pop()
            with os.scandir(os.path.join(layer, folder)) as listing:
                for item in listing:
                    path = f"{folder}/{item.name}" if folder else item.name
                    if path in hidden:
                        continue
                    info = item.stat(follow_symlinks=False)
                    if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:  # a whiteout
                        hides.add(path)
                        continue
                    is_dir = stat.S_ISDIR(info.st_mode)
                    if path not in taken:
                        taken.add(path)
                        regular = stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in inodes
                        if regular:
                            inodes.add((info.st_dev, info.st_ino))
                        kind = "dir" if is_dir else "file" if regular else "other"
                        link = os.readlink(item.path) if stat.S_ISLNK(info.st_mode) else ""
                        yield Entry(path, kind, _file_reader(item.path) if regular else _nothing, link)
                    if not is_dir or _is_opaque(item.path):
                        hides.add(path)
                    if is_dir and not (skip and skip(path)):
                        folders.append(path)
        hidden |= hides


def tar_entries(archive: tarfile.TarFile) -> Iterator[Entry]:
    """The entries of a streamed tar as `docker export` writes it (a hard link after the first name
    of a file is a link member, so "other"), less the engine's init layer (ENGINE_INIT_FILES)."""
    for member in archive:
        path = member.name.removeprefix("./").rstrip("/")
        if path in ENGINE_INIT_FILES:
            continue
        if member.isfile():
            handle = archive.extractfile(member)
            yield Entry(path, "file", handle.read if handle else _nothing)
        else:
            link = member.linkname if member.issym() else ""
            yield Entry(path, "dir" if member.isdir() else "other", _nothing, link)


def entries(image: str, platform: str, skip: Callable[[str], bool] | None = None) -> Iterator[Entry]:
    """Every entry of the image's filesystem, read on the host; nothing runs under emulation.
    `skip` (folders not to walk) is a saving the layer folders allow; an export lists everything."""
    dirs = layer_dirs(image)
    if dirs is not None:
        yield from layer_entries(dirs, skip)
        return
    with engine.exported(image, platform, f"armgate-files-{uuid.uuid4().hex[:12]}") as archive:
        yield from tar_entries(archive)
