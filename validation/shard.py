"""`acceptance --shard K/N`: the share of the case set one CI job gates, so hundreds of studies spread
over N runners and `python -m validation merge` puts the verdict back together.

How cases are assigned (`assign`): consistent hashing with bounded loads. Each case ranks the N shards
by sha256(case name, shard) (rendezvous hashing); cases are taken in the order of their name's hash and
each goes to the first shard of its ranking whose load (bytes of input DICOM) stays within
(1 + SLACK) × the mean load; a case that fits nowhere goes to the lightest shard. Why not the
tighter greedy longest-first split: it reshuffles most cases whenever one is added (a case's shard
depends on every larger case), while here a case keeps its shard unless a shard it preferred
filled up or emptied. The price is balance: shards are within SLACK of the mean, not within one case.

Guarantees (tests/test_shard.py): every case in exactly one shard; the same names and sizes give
the same split on any machine; no shard holds more than (1 + SLACK) × mean + the largest case; no
shard is empty when there are at least N cases.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from validation.errors import GateError

SLACK = 0.10  # a shard may exceed the mean load by this fraction: the balance given for stability
IMAGE_CHECKS_SHARD = 1  # the image checks run once, on this shard
_SPEC = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True)
class ShardSpec:
    index: int  # K, from 1
    count: int  # N

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_spec(text: str) -> ShardSpec:
    """`K/N` with 1 ≤ K ≤ N, else one line saying what is expected."""
    match = _SPEC.match(text.strip())
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        raise GateError(f"--shard {text}: expected K/N with 1 ≤ K ≤ N, e.g. --shard 1/4 … --shard 4/4")
    return ShardSpec(int(match[1]), int(match[2]))


def input_bytes(dicom_dir: Path) -> int:
    """The size estimate of one case: bytes of its input DICOM (what the app reads, in proportion to
    what it computes), read from the directory entries without opening a file."""
    return sum(path.stat().st_size for path in dicom_dir.rglob("*") if path.is_file())


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\0".join(parts).encode()).digest()


def preference(name: str, count: int) -> list[int]:
    """The shards (from 0) in the order this case prefers them: independent of every other case."""
    return sorted(range(count), key=lambda shard: _digest(name, str(shard)), reverse=True)


def assign(sizes: Mapping[str, int], count: int, slack: float = SLACK) -> dict[str, int]:
    """Case name -> shard (from 0); see the module docstring for the rule and what it guarantees."""
    capacity = (1 + slack) * sum(sizes.values()) / count
    loads, shard_of = [0] * count, {}
    for name in sorted(sizes, key=lambda name: (_digest(name), name)):
        size = sizes[name]
        fits = [shard for shard in preference(name, count) if loads[shard] + size <= capacity]
        shard = fits[0] if fits else min(range(count), key=lambda shard: (loads[shard], shard))
        loads[shard] += size
        shard_of[name] = shard
    _fill_empty_shards(sizes, shard_of, count)
    return shard_of


def _fill_empty_shards(sizes: Mapping[str, int], shard_of: dict[str, int], count: int) -> None:
    """With at least N cases, an empty shard takes the smallest case of the shard holding the most."""
    members: list[list[str]] = [[] for _ in range(count)]
    for name, shard in shard_of.items():
        members[shard].append(name)
    for empty in [shard for shard in range(count) if not members[shard]]:
        donor = max(range(count), key=lambda shard: (len(members[shard]), -shard))
        if len(members[donor]) < 2:
            return
        moved = min(members[donor], key=lambda name: (sizes[name], name))
        members[donor].remove(moved)
        members[empty].append(moved)
        shard_of[moved] = empty


def case_set_identity(sizes: Mapping[str, int]) -> dict[str, Any]:
    """What merge compares across shards: the sorted names, and a hash of names and sizes (the
    inputs of the split), so shards gated on different checkouts of the cases never merge."""
    lines = "".join(f"{name}\t{sizes[name]}\n" for name in sorted(sizes))
    return {"names": sorted(sizes), "sha256": hashlib.sha256(lines.encode()).hexdigest()}


@dataclass(frozen=True)
class ShardPlan:
    """One shard of a case set: what the gate runs and what metrics.json records for merge."""

    spec: ShardSpec
    cases: list[str]  # this shard's case names
    sizes: dict[str, int]  # every case of the set -> input bytes

    @property
    def image_checks(self) -> bool:
        return self.spec.index == IMAGE_CHECKS_SHARD

    def record(self, reports: Path) -> dict[str, Any]:
        return {
            "index": self.spec.index,
            "count": self.spec.count,
            "cases": self.cases,
            "input_bytes": sum(self.sizes[name] for name in self.cases),
            "image_checks": self.image_checks,
            "case_set": case_set_identity(self.sizes),
            "reports": str(reports),
        }


def plan(spec: ShardSpec, sizes: Mapping[str, int]) -> ShardPlan:
    if spec.count > len(sizes):
        raise GateError(
            f"--shard {spec}: the case set has {len(sizes)} case(s), fewer than {spec.count} shards; "
            f"use at most --shard K/{len(sizes)}"
        )
    shard_of = assign(sizes, spec.count)
    mine = sorted(name for name, shard in shard_of.items() if shard == spec.index - 1)
    return ShardPlan(spec, mine, dict(sizes))


def select(spec: ShardSpec, cases: Sequence[Any]) -> tuple[list[Any], ShardPlan]:
    """The cases (objects with .name and .dicom_dir) of shard `spec`, and its plan."""
    shard_plan = plan(spec, {case.name: input_bytes(case.dicom_dir) for case in cases})
    return [case for case in cases if case.name in shard_plan.cases], shard_plan


def junit_properties(metrics: Mapping[str, Any]) -> dict[str, str]:
    """The shard's identity as junit testsuite properties (none for an unsharded run)."""
    shard = metrics.get("shard")
    if not shard:
        return {}
    image = metrics.get("image") or {}
    return {
        "armgate.shard": f"{shard['index']}/{shard['count']}",
        "armgate.image": str(image.get("id")),
        "armgate.profile": str(image.get("profile")),
        "armgate.case_set": shard["case_set"]["sha256"],
        "armgate.cases": ", ".join(shard["cases"]),
    }
