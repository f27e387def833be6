"""What ELF files ask of the loader: symbol versions the base's C/C++ libraries must define, runtime
libraries the loader must find. Crafted ELF files, read both as an export and as layer folders."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from test_image_files import entries

from validation import elf_needs, image_files, image_tree

SHT_STRTAB = 3
BOOKWORM_GLIBC = [f"GLIBC_2.{minor}" for minor in range(17, 37)]  # aarch64 glibc 2.36 defines 2.17 to 2.36
BOOKWORM_GLIBCXX = ["GLIBCXX_3.4", *(f"GLIBCXX_3.4.{minor}" for minor in range(1, 31))]  # GCC 12
SITE = "opt/venv/lib/python3.11/site-packages"
CUDART_DIR = f"/{SITE}/nvidia/cuda_runtime/lib"
HOST_LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/lib")


def make_elf(
    needed: tuple[str, ...] = (), needs: dict[str, list[str]] | None = None, defines: tuple[str, ...] = ()
) -> bytes:
    """A 64-bit little-endian AArch64 shared object with .dynstr, .dynamic (DT_NEEDED), .gnu.version_r
    (`needs`: library -> versions) and .gnu.version_d (`defines`), laid out as a linker lays them out."""
    strings = bytearray(b"\0")

    def name(text: str) -> int:
        strings.extend(text.encode() + b"\0")
        return len(strings) - len(text) - 1

    dynamic = b"".join(struct.pack("<qQ", elf_needs.DT_NEEDED, name(lib)) for lib in needed)
    dynamic += struct.pack("<qQ", 0, 0)
    verneed = bytearray()
    for index, (library, versions) in enumerate((needs or {}).items()):
        last = index == len(needs or {}) - 1
        verneed += struct.pack(
            "<HHIII", 1, len(versions), name(library), 16, 0 if last else 16 + 16 * len(versions)
        )
        for number, version in enumerate(versions):
            following = 0 if number == len(versions) - 1 else 16
            verneed += struct.pack("<IHHII", 0, 0, 2 + number, name(version), following)
    verdef = bytearray()
    for index, version in enumerate(defines):
        following = 0 if index == len(defines) - 1 else 28
        verdef += struct.pack("<HHHHIII", 1, 0, 2 + index, 1, 0, 20, following)
        verdef += struct.pack("<II", name(version), 0)
    body, sections = bytearray(), [(0, 0, 0, 0, 0)]  # (type, offset, size, link, info)
    for kind, data, info in ((SHT_STRTAB, bytes(strings), 0), (elf_needs.SHT_DYNAMIC, dynamic, 0),
                             (elf_needs.SHT_GNU_VERNEED, bytes(verneed), len(needs or {})),
                             (elf_needs.SHT_GNU_VERDEF, bytes(verdef), len(defines))):  # fmt: skip
        sections.append((kind, 64 + len(body), len(data), 0 if kind == SHT_STRTAB else 1, info))
        body += data + bytes(-len(data) % 8)
    shoff = 64 + len(body)
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 3, 183, 1, 0, 0, shoff, 0,
                                                              64, 56, 0, 64, len(sections), 0)  # fmt: skip
    table = b"".join(struct.pack("<IIQQQQIIQQ", 0, k, 0, 0, o, s, link, info, 8, 0)
                     for k, o, s, link, info in sections)  # fmt: skip
    return header + bytes(body) + table


def base_libraries(glibc: list[str] = BOOKWORM_GLIBC) -> dict[str, bytes]:
    """A base's C and C++ runtimes, in Debian's multiarch folder."""
    return {
        "usr/lib/aarch64-linux-gnu/libc.so.6": make_elf(defines=tuple(glibc)),
        "usr/lib/aarch64-linux-gnu/libstdc++.so.6.0.30": make_elf(
            ("libc.so.6",), defines=tuple(BOOKWORM_GLIBCXX)
        ),
    }


HOLOSCAN_LIKE = f"{SITE}/holoscan/lib/libholoscan_core.so.4"


def holoscan_like(glibc: str = "GLIBC_2.38", glibcxx: str = "GLIBCXX_3.4.32") -> bytes:
    """What the aarch64 holoscan-cu13 4.6.0 wheel's core library asks for (readelf -V -d)."""
    needs = {"libc.so.6": ["GLIBC_2.17", glibc], "libstdc++.so.6": ["GLIBCXX_3.4", glibcxx]}
    return make_elf(("libcudart.so.12", "libstdc++.so.6", "libc.so.6"), needs)


def test_a_crafted_elf_reads_back_as_written_and_the_hosts_libc_as_it_reports() -> None:
    content = holoscan_like()
    needs = elf_needs.read(content)
    assert needs is not None and needs.needed == ["libcudart.so.12", "libstdc++.so.6", "libc.so.6"]
    assert needs.version_needs == {"GLIBC_2.17", "GLIBC_2.38", "GLIBCXX_3.4", "GLIBCXX_3.4.32"}
    assert elf_needs.read(make_elf(defines=("GLIBC_2.17", "GLIBC_2.36"))).version_defs == {
        "GLIBC_2.17", "GLIBC_2.36",
    }  # fmt: skip
    # the host's own C library defines exactly the glibc version it reports
    libc_version = os.confstr("CS_GNU_LIBC_VERSION").split()[1]  # "glibc 2.36"
    libc = next(
        Path(folder) / "libc.so.6" for folder in HOST_LIBRARY_DIRS if (Path(folder) / "libc.so.6").exists()
    )
    host_libc = elf_needs.read(libc.read_bytes())
    assert (
        host_libc is not None and elf_needs.newest(host_libc.version_defs, "GLIBC") == f"GLIBC_{libc_version}"
    )
    assert elf_needs.read(b"\x7fELF" + bytes(12)) is None and elf_needs.read(b"#!/bin/sh\n" * 10) is None
    assert elf_needs.newest({"GLIBC_2.9", "GLIBC_2.36", "GLIBCXX_3.4"}, "GLIBC") == "GLIBC_2.36"


def test_a_library_needing_glibc_2_38_on_a_glibc_2_36_base_is_one_line_naming_file_and_version() -> None:
    files = image_files.read_entries(
        entries({**base_libraries(), HOLOSCAN_LIKE: holoscan_like()}), "/opt/app"
    )
    problems = image_files.loader_problems(files, "", ())
    assert len(problems) == 1 and "\n" not in problems[0]
    assert problems[0].startswith(f"/{HOLOSCAN_LIKE} needs GLIBC_2.38, GLIBCXX_3.4.32, but the image's C/C++ "
                                  "libraries provide up to GLIBC_2.36, GLIBCXX_3.4.30")  # fmt: skip


def test_the_same_library_on_a_base_that_defines_its_versions_passes(tmp_path: Path) -> None:
    newer = {**base_libraries([*BOOKWORM_GLIBC, "GLIBC_2.37", "GLIBC_2.38"]), HOLOSCAN_LIKE: holoscan_like(
        glibcxx="GLIBCXX_3.4.30")}  # fmt: skip
    assert image_files.loader_problems(image_files.read_entries(entries(newer), "/opt/app"), "", ()) == []
    # read from layer folders (each file read again from its start), the same facts as from an export
    layer = tmp_path / "layer"
    for path, content in {**base_libraries(), HOLOSCAN_LIKE: holoscan_like()}.items():
        (layer / path).parent.mkdir(parents=True, exist_ok=True)
        (layer / path).write_bytes(content)
    from_layers = image_files.read_entries(image_tree.layer_entries([layer]), "/opt/app")
    assert image_files.missing_versions(from_layers) == [
        (f"/{HOLOSCAN_LIKE}", ["GLIBC_2.38", "GLIBCXX_3.4.32"])
    ]


def test_versions_count_only_where_the_base_defines_them() -> None:
    """A wheel's own copy of a library defining GLIBC_2.38 does not make the base's glibc newer."""
    listing = {**base_libraries(), HOLOSCAN_LIKE: holoscan_like(),
               f"{SITE}/x.libs/libc.so.6": make_elf(defines=("GLIBC_2.38", "GLIBCXX_3.4.32"))}  # fmt: skip
    files = image_files.read_entries(entries(listing), "/opt/app")
    assert [path for path, _ in image_files.missing_versions(files)] == [f"/{HOLOSCAN_LIKE}"]


@pytest.mark.parametrize("on_path", [True, False])
def test_a_runtime_library_must_be_on_the_images_loader_path(on_path: bool) -> None:
    listing = {**base_libraries(), HOLOSCAN_LIKE: holoscan_like("GLIBC_2.34", "GLIBCXX_3.4.30"),
               f"{SITE}/nvidia/cuda_runtime/lib/libcudart.so.12": make_elf()}  # fmt: skip
    files = image_files.read_entries(entries(listing), "/opt/app")
    ld_library_path = CUDART_DIR if on_path else f"/{SITE}/nvidia/cu13/lib"
    problems = image_files.loader_problems(files, ld_library_path, ("libcudart.so.12",))
    if on_path:
        assert problems == []
        assert (
            image_files.library_on_path(files, "libcudart.so.12", ld_library_path)
            == f"{CUDART_DIR}/libcudart.so.12"
        )
    else:
        assert len(problems) == 1 and "\n" not in problems[0]
        assert problems[0].startswith(
            f"libcudart.so.12 is on no folder of the image's loader path (LD_LIBRARY_PATH="
            f"/{SITE}/nvidia/cu13/lib and the system folders), needed by /{HOLOSCAN_LIKE}"
        )
    assert image_files.library_on_path(files, "libc.so.6", "") == "/usr/lib/aarch64-linux-gnu/libc.so.6"
