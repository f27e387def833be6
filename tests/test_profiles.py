"""Profiles: the shipped ones load; every broken field is named with its file."""

from __future__ import annotations

from pathlib import Path

import pytest

from validation import contract, profiles
from validation.errors import GateError

BOOKWORM = (profiles.PROFILES_DIR / "bookworm.toml").read_text()


def test_shipped_profiles_load() -> None:
    loaded = {name: profiles.load(name) for name in profiles.available()}
    assert {"bookworm", "bullseye-torch1.8", "clara-agx-21.05"} <= set(loaded)
    bookworm = loaded["bookworm"]
    assert bookworm.platform == "linux/arm64" and bookworm.arch == "aarch64"
    assert bookworm.install == "wheelhouse"
    assert bookworm.base.reference.startswith("armgate/base:bookworm-")
    assert "2.10.0" in bookworm.pins["torch"] and "2.11.0" not in bookworm.pins["torch"]
    assert "57.4.0" in bookworm.pins["setuptools"] and "0.37.0" in bookworm.pins["wheel"]


def test_clara_profile_is_the_clara_agx_recipe() -> None:
    clara = profiles.load("clara-agx-21.05")
    assert clara.base.reference == "nvcr.io/nvidia/clara-agx/agx-pytorch:21.05-1.7-py3"
    assert clara.install == "network"
    assert clara.upgrade == ("setuptools==57.4.0", "wheel==0.37.0")
    assert "1.7.1" in clara.pins["torch"] and "1.8.0" not in clara.pins["torch"]
    assert "1.19.5" in clara.pins["numpy"]


def test_torch18_profile_is_the_torch1x_device_stack() -> None:
    torch18 = profiles.load("bullseye-torch1.8")
    assert torch18.install == "wheelhouse" and torch18.python == "3.9"
    assert torch18.base.reference.startswith("armgate/base:bullseye-")
    expected = {"torch": "1.8.1", "numpy": "1.21.6", "monai": "1.1.0", "monai-deploy-app-sdk": "0.5.1",
                "setuptools": "57.4.0", "wheel": "0.37.0"}  # fmt: skip
    for package, version in expected.items():
        assert version in torch18.pins[package], (package, torch18.pins[package])
    assert "1.9.0" not in torch18.pins["torch"]


def test_clara_profile_says_its_bases_python() -> None:
    """Ubuntu 18.04's python3 is 3.6, and NVIDIA's torch 1.7 is built for it."""
    assert profiles.load("clara-agx-21.05").python == "3.6"


def test_a_profile_below_the_apps_python_floor_is_refused() -> None:
    app, clara = contract.load(), profiles.load("clara-agx-21.05")
    assert "3.6" not in app.requires_python and "3.9" in app.requires_python
    with pytest.raises(GateError, match=r"clara-agx-21\.05\.toml: Python 3\.6 is below the app's floor"):
        contract.check_floors(app, clara)
    contract.check_floors(app, profiles.load("bullseye-torch1.8"))  # 3.9 meets it


def test_a_lock_below_the_apps_sdk_floor_is_refused() -> None:
    app, bookworm = contract.load(), profiles.load()
    with pytest.raises(GateError, match=r"monai-deploy-app-sdk 0\.4\.0 does not satisfy the app's"):
        contract.check_floors(app, bookworm, {"monai-deploy-app-sdk": "0.4.0"})
    contract.check_floors(app, bookworm, {"monai-deploy-app-sdk": "0.5.1"})


def test_recipe_hash_follows_the_recipe() -> None:
    base = profiles.load().base
    changed = profiles.Base(
        base.kind, suite=base.suite, variant=base.variant, include=(*base.include, "curl")
    )
    assert changed.recipe_hash() != base.recipe_hash()
    assert (
        profiles.Base(
            base.kind, suite=base.suite, variant=base.variant, include=tuple(reversed(base.include))
        ).recipe_hash()
        == base.recipe_hash()
    )


def test_unknown_profile_names_the_choices() -> None:
    with pytest.raises(GateError, match=r"unknown profile 'nope'.*bookworm"):
        profiles.load("nope")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.replace('platform = "linux/arm64"', 'platform = "linux/s390x"'),
            r"'profile.platform' is 'linux/s390x'",
        ),
        (lambda t: t.replace('kind = "debootstrap"', 'kind = "magic"'), r"'base.kind'"),
        (lambda t: t.replace('torch = "==2.10.0"', 'torch = "=>2.10"'), r"'pins.torch'"),
        (lambda t: t.replace('"numpy",', '"numpy>>1",'), r"'requirements.packages' item"),
        (lambda t: t.replace('install = "wheelhouse"', "install = 3"), r"'requirements.install'"),
        (lambda t: t.replace("[pins]", "[pinz]"), r"unknown field 'pinz'"),
        (lambda t: t.replace("pip_check_allow", "pip_check_alow"), r"unknown field 'checks.pip_check_alow'"),
        (lambda t: t.replace('variant = "minbase"', 'varient = "minbase"'), r"unknown field 'base.varient'"),
        (lambda t: t.replace('suite = "bookworm"', 'suite = "bookworm'), r"not valid TOML"),
        (lambda t: t.replace('python = "3.11"', 'python = "3.11.2"'), r"'profile.python' is '3.11.2'"),
        (lambda t: t.replace("[base]", 'manylinux = "glibc-2.31"\n[base]'), r"'profile.manylinux'"),
    ],
)
def test_invalid_profile_names_file_and_field(tmp_path: Path, edit, message: str) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(edit(BOOKWORM))
    with pytest.raises(GateError, match=message) as error:
        profiles.load(str(broken))
    assert str(broken) in str(error.value)


def test_image_placeholder_without_build_arg(tmp_path: Path) -> None:
    text = (profiles.PROFILES_DIR / "clara-agx-21.05.toml").read_text()
    broken = tmp_path / "clara.toml"
    broken.write_text(text.replace(', AGX_PT_TAG = "21.05-1.7-py3"', ""))
    with pytest.raises(GateError, match=r"base\.image"):
        profiles.load(str(broken))


