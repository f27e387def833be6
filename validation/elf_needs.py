"""What an ELF file asks of the dynamic loader, read from its bytes: the libraries it needs (DT_NEEDED)
and the symbol versions it needs (.gnu.version_r) or defines (.gnu.version_d).

A wheel's manylinux tag is a claim about the C library it needs; the symbol versions its libraries
reference are the fact. The aarch64 holoscan-cu13 4.6.0 wheel is tagged manylinux_2_35, but its
libraries need GLIBC_2.38 and GLIBCXX_3.4.32, which no Debian bookworm (glibc 2.36, GCC 12) provides.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

SHT_DYNAMIC = 6
SHT_GNU_VERDEF = 0x6FFFFFFD
SHT_GNU_VERNEED = 0x6FFFFFFE
DT_NEEDED = 1
DT_SONAME = 14
# The versions of the C and C++ runtimes a base provides and a wheel may outgrow.
CHECKED_VERSION = re.compile(r"(GLIBC|GLIBCXX|CXXABI)_\d+(\.\d+)*")


@dataclass
class ElfNeeds:
    needed: list[str] = field(default_factory=list)  # DT_NEEDED sonames
    soname: str = ""
    version_needs: set[str] = field(default_factory=set)  # e.g. {"GLIBC_2.38", "GLIBCXX_3.4.32"}
    version_defs: set[str] = field(default_factory=set)  # what it provides, e.g. libc.so.6's GLIBC_*


def _string(data: bytes, offset: int) -> str:
    end = data.find(b"\0", offset)
    return data[offset : end if end >= 0 else len(data)].decode("utf-8", "replace")


def read(data: bytes) -> ElfNeeds | None:
    """The needs of an ELF file's whole content; None when it is not ELF or its headers do not add up."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
    try:
        if wide:
            shoff, = struct.unpack_from(order + "Q", data, 0x28)  # fmt: skip
            shentsize, shnum = struct.unpack_from(order + "HH", data, 0x3A)
            header = order + "IIQQQQIIQQ"
        else:
            shoff, = struct.unpack_from(order + "I", data, 0x20)  # fmt: skip
            shentsize, shnum = struct.unpack_from(order + "HH", data, 0x2E)
            header = order + "IIIIIIIIII"
        sections = [struct.unpack_from(header, data, shoff + i * shentsize) for i in range(shnum)]
    except struct.error:
        return None
    found = ElfNeeds()
    for _name, kind, _flags, _addr, offset, size, link, info, _align, _entsize in sections:
        if kind not in (SHT_DYNAMIC, SHT_GNU_VERNEED, SHT_GNU_VERDEF) or link >= len(sections):
            continue
        strings = data[sections[link][4] : sections[link][4] + sections[link][5]]
        try:
            if kind == SHT_DYNAMIC:
                _dynamic(data[offset : offset + size], strings, order + ("qQ" if wide else "iI"), found)
            elif kind == SHT_GNU_VERNEED:
                found.version_needs |= _verneed(data, offset, info, strings, order)
            else:
                found.version_defs |= _verdef(data, offset, info, strings, order)
        except struct.error:
            return None
    return found


def _dynamic(table: bytes, strings: bytes, entry: str, found: ElfNeeds) -> None:
    for tag, value in struct.iter_unpack(entry, table[: len(table) - len(table) % struct.calcsize(entry)]):
        if tag == DT_NEEDED:
            found.needed.append(_string(strings, value))
        elif tag == DT_SONAME:
            found.soname = _string(strings, value)
        elif tag == 0:
            break


def _verneed(data: bytes, offset: int, count: int, strings: bytes, order: str) -> set[str]:
    """Elf_Verneed (vn_version, vn_cnt, vn_file, vn_aux, vn_next) each with vn_cnt Elf_Vernaux
    (vna_hash, vna_flags, vna_other, vna_name, vna_next): the same layout in 32- and 64-bit files."""
    names, entry = set(), offset
    for _ in range(count):
        _version, aux_count, _file, aux, following = struct.unpack_from(order + "HHIII", data, entry)
        position = entry + aux
        for _ in range(aux_count):
            _hash, _flags, _other, name, next_aux = struct.unpack_from(order + "IHHII", data, position)
            names.add(_string(strings, name))
            position += next_aux
            if not next_aux:
                break
        if not following:
            break
        entry += following
    return {name for name in names if CHECKED_VERSION.fullmatch(name)}


def _verdef(data: bytes, offset: int, count: int, strings: bytes, order: str) -> set[str]:
    """Elf_Verdef (vd_version, vd_flags, vd_ndx, vd_cnt, vd_hash, vd_aux, vd_next); its first Elf_Verdaux
    (vda_name, vda_next) names the version."""
    names, entry = set(), offset
    for _ in range(count):
        _version, _flags, _index, aux_count, _hash, aux, following = struct.unpack_from(
            order + "HHHHIII", data, entry
        )
        if aux_count:
            (name,) = struct.unpack_from(order + "I", data, entry + aux)
            names.add(_string(strings, name))
        if not following:
            break
        entry += following
    return {name for name in names if CHECKED_VERSION.fullmatch(name)}


def version_key(name: str) -> tuple[str, tuple[int, ...]]:
    """GLIBC_2.38 -> ("GLIBC", (2, 38)): versions compare by number, not as text."""
    prefix, _, number = name.partition("_")
    return prefix, tuple(int(part) for part in number.split("."))


def newest(names: set[str], prefix: str) -> str | None:
    """The highest version of `prefix` (GLIBC, GLIBCXX) among `names`."""
    same = [name for name in names if name.startswith(prefix + "_")]
    return max(same, key=version_key) if same else None
