"""Locks and the wheelhouse: parsed strictly, and no wheel enters a build unless the lock names its hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from validation import lock, profiles
from validation.errors import GateError


@pytest.mark.parametrize("profile_name", ["bookworm", "bullseye-torch1.8"])
def test_committed_lock_is_complete_and_pinned(profile_name: str) -> None:
    profile = profiles.load(profile_name)
    locked = {package.name: package for package in lock.parse_lock(profile.lock_path)}
    for requirement in ("torch", "monai", "monai-deploy-app-sdk", "setuptools", "wheel", "highdicom"):
        assert requirement in locked, f"{requirement} missing from {profile.lock_path}"
    # The lock must satisfy the profile's own pins, or acceptance would fail every image it builds.
    for name, spec in profile.pins.items():
        assert locked[name].version in spec, f"lock has {name}=={locked[name].version}, profile pins {spec}"
    assert all(len(package.hashes) >= 1 for package in locked.values())


def test_lock_without_hash_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "lock.txt"
    bad.write_text("torch==2.10.0\n")
    with pytest.raises(GateError, match="torch has no --hash"):
        lock.parse_lock(bad)


def test_lock_with_loose_requirement_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "lock.txt"
    bad.write_text("torch>=2 --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(GateError, match="line 1"):
        lock.parse_lock(bad)


def test_missing_lock_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(GateError, match="nox -s lock"):
        lock.parse_lock(tmp_path / "absent.txt")


def _fake_lock(tmp_path: Path, content: bytes) -> tuple[Path, list[lock.LockedPackage]]:
    path = tmp_path / "lock.txt"
    path.write_text(f"demo==1.0 --hash=sha256:{hashlib.sha256(content).hexdigest()}\n")
    return path, lock.parse_lock(path)


def test_wheelhouse_refuses_a_wheel_not_in_the_lock(tmp_path: Path) -> None:
    lock_path, locked = _fake_lock(tmp_path, b"the real wheel")
    house = tmp_path / "wheels"
    house.mkdir()
    (house / "demo-1.0-py3-none-any.whl").write_bytes(b"a tampered wheel")
    with pytest.raises(GateError, match=r"demo-1.0-py3-none-any.whl: sha256 .* is not in lock.txt"):
        lock.verify_wheelhouse(house, locked, lock_path)


def test_wheelhouse_passes_over_another_locks_wheel_and_refuses_a_stray_file(tmp_path: Path) -> None:
    """The wheelhouse is a cache every checkout shares: a wheel of a version this lock does not name
    (an older lock's, another branch's) is left alone and never installed; a non-wheel is refused."""
    lock_path, locked = _fake_lock(tmp_path, b"the real wheel")
    house = tmp_path / "wheels"
    house.mkdir()
    (house / "demo-1.0-py3-none-any.whl").write_bytes(b"the real wheel")
    (house / "demo-0.9-py3-none-any.whl").write_bytes(b"the previous lock's wheel")
    (house / "other_pkg-2.0-py3-none-any.whl").write_bytes(b"a package this lock dropped")
    assert lock.verify_wheelhouse(house, locked, lock_path) == []
    (house / "notes.txt").write_text("not a wheel")
    with pytest.raises(GateError, match=r"notes.txt: sha256 .* is not in lock.txt"):
        lock.verify_wheelhouse(house, locked, lock_path)


def test_wheelhouse_reports_what_is_missing(tmp_path: Path) -> None:
    lock_path, locked = _fake_lock(tmp_path, b"the real wheel")
    house = tmp_path / "wheels"
    house.mkdir()
    assert lock.verify_wheelhouse(house, locked, lock_path) == locked
    (house / "demo-1.0-py3-none-any.whl").write_bytes(b"the real wheel")
    assert lock.verify_wheelhouse(house, locked, lock_path) == []


def test_lock_resolves_for_the_bases_glibc() -> None:
    """bullseye's glibc is 2.31: its lock and wheel download must not ask for bookworm's tags only."""
    assert profiles.load("bookworm").manylinux == "manylinux_2_28"
    bullseye = profiles.load("bullseye-torch1.8")
    assert bullseye.manylinux == "manylinux_2_31" and bullseye.python == "3.9"
    assert "CPython 3.9" in bullseye.lock_path.read_text().splitlines()[0]
