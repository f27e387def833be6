"""The image checks' one pass over the image's files: ELF machines, leftovers, the app's digests."""

from __future__ import annotations

import hashlib
import io
import struct
import tarfile
from collections.abc import Iterator

from validation import image_files, image_tree


def elf(machine: int) -> bytes:
    """An ELF header (little endian) naming `machine`, padded as a file would be."""
    return b"\x7fELF\x02\x01\x01" + bytes(11) + struct.pack("<H", machine) + bytes(44)


def archive(entries: dict[str, bytes | None]) -> tarfile.TarFile:
    """A tar as `docker export` writes it: None makes a folder, bytes a file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in entries.items():
            member = tarfile.TarInfo(name)
            if content is None:
                member.type = tarfile.DIRTYPE
                tar.addfile(member)
            else:
                member.size = len(content)
                tar.addfile(member, io.BytesIO(content))
    buffer.seek(0)
    return tarfile.open(fileobj=buffer, mode="r|")


def entries(listing: dict[str, bytes | None]) -> Iterator[image_tree.Entry]:
    """The listing's entries as an export of it gives them."""
    return image_tree.tar_entries(archive(listing))


def test_every_elf_file_is_counted_and_a_foreign_one_named() -> None:
    files = image_files.read_entries(
        entries({
            "usr/bin/python3.11": elf(image_files.AARCH64),
            "usr/local/share/x86-target": elf(62),  # x86-64
            "opt/venv/lib/libz.so": elf(image_files.AARCH64),
            "etc/hostname": b"edge\n",
            "tiny": b"\x7fEL",
        }),
        "/opt/app",
    )  # fmt: skip
    assert files.elf_files == 3
    assert files.foreign_elf == [("/usr/local/share/x86-target", 62)]


def test_leftovers_are_wheels_credentials_caches_and_a_used_wheelhouse() -> None:
    files = image_files.read_entries(
        entries({
            "root/leftover.whl": b"PK",
            "usr/share/python-wheels/pip-23.0.1-py3-none-any.whl": b"PK",  # Debian's own, for ensurepip
            "home/app/.netrc": b"machine example.org",
            "root/.cache/pip": None,
            "srv/site.cache/pip": None,  # not a pip cache: only a folder named .cache/pip is
            "wheels": None,
            "wheels/torch-2.10.0-cp311-none-linux_aarch64.whl": b"PK",
            "opt/venv/lib/python3.11/site-packages/pip/_internal/wheel_builder.py": b"",
        }),
        "/opt/app",
    )  # fmt: skip
    assert files.leftovers == [
        "/home/app/.netrc", "/root/.cache/pip", "/root/leftover.whl", "/wheels",
        "/wheels/torch-2.10.0-cp311-none-linux_aarch64.whl",
    ]  # fmt: skip
    clean = image_files.read_entries(entries({"wheels": None, "usr/share/python-wheels": None}), "/opt/app")
    assert clean.leftovers == []  # an empty /wheels folder is no leftover


def test_app_digests_cover_the_app_folder_only() -> None:
    files = image_files.read_entries(
        entries({
            "opt/app": None,
            "opt/app/__main__.py": b"print('hi')\n",
            "opt/app/config/labels.json": b"{}",
            "opt/application/other.py": b"",
        }),
        "/opt/app",
    )  # fmt: skip
    assert files.app_digests == {
        "__main__.py": hashlib.sha256(b"print('hi')\n").hexdigest(),
        "config/labels.json": hashlib.sha256(b"{}").hexdigest(),
    }


def metadata(name: str, version: str) -> bytes:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()


def test_installed_is_what_the_interpreter_finds_first_on_its_path() -> None:
    """As `pip list`: a distribution in a folder off the import path is not installed, and of two
    copies the one earlier on the path is the one imported."""
    venv = "opt/venv/lib/python3.11/site-packages"
    files = image_files.read_entries(
        entries({
            f"{venv}/torch-2.10.0.dist-info/METADATA": metadata("torch", "2.10.0"),
            "usr/lib/python3/dist-packages/torch-1.8.1.dist-info/METADATA": metadata("torch", "1.8.1"),
            "usr/lib/python3/dist-packages/PyYAML-6.0.egg-info/PKG-INFO": metadata("PyYAML", "6.0"),
            "srv/other/site-packages/numpy-2.0.0.dist-info/METADATA": metadata("numpy", "2.0.0"),
        }),
        "/opt/app",
    )  # fmt: skip
    venv_first = ["/opt/app", "/opt/venv/lib/python3.11/site-packages", "/usr/lib/python3/dist-packages"]
    assert files.installed(venv_first) == {"torch": "2.10.0", "pyyaml": "6.0"}
    assert files.installed(venv_first[::-1])["torch"] == "1.8.1"
    assert files.installed(["/opt/app"]) == {}
