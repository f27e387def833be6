"""Profiles: the shipped ones load; every broken field is named with its file."""

from __future__ import annotations

from pathlib import Path

import pytest

from validation import contract, lock, profiles
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


SDK35 = (profiles.PROFILES_DIR / "bookworm-sdk3.5.toml").read_text()


def test_holoscan_profiles_declare_their_generation_and_cuda_runtime() -> None:
    sdk35, sdk40 = profiles.load("bookworm-sdk3.5"), profiles.load("trixie-sdk4.0")
    assert profiles.load().sdk == "classic" and profiles.load("bullseye-torch1.8").sdk == "classic"
    assert sdk35.sdk == sdk40.sdk == "holoscan"
    assert sdk35.base.reference == profiles.load().base.reference  # the bookworm base, shared
    assert sdk40.base.reference.startswith("armgate/base:trixie-") and sdk40.python == "3.13"
    assert sdk35.runtime_libraries == ("libcudart.so.12",) and sdk40.runtime_libraries == ("libcudart.so.13",)
    assert sdk35.ld_library_path == "/opt/venv/lib/python3.11/site-packages/nvidia/cuda_runtime/lib"
    assert sdk40.ld_library_path == "/opt/venv/lib/python3.13/site-packages/nvidia/cu13/lib"
    assert profiles.load().ld_library_path == ""  # a classic profile puts nothing on the loader path
    # holoscan-cu12 4.6.0 breaks SDK 3.5.0's imports; torch above 2.10 pulls CUDA packages on aarch64
    assert "3.11.0" in sdk35.pins["holoscan-cu12"] and "4.6.0" not in sdk35.pins["holoscan-cu12"]
    assert "4.6.0" in sdk40.pins["holoscan-cu13"] and "5.0.0" not in sdk40.pins["holoscan-cu13"]
    for profile in (sdk35, sdk40):
        assert "2.10.0" in profile.pins["torch"] and "2.11.0" not in profile.pins["torch"]


@pytest.mark.parametrize("name", ["bookworm", "bullseye-torch1.8", "bookworm-sdk3.5", "trixie-sdk4.0"])
def test_each_locked_sdk_is_of_its_profiles_generation(name: str) -> None:
    profile = profiles.load(name)
    profile.check_sdk({p.name: p.version for p in lock.parse_lock(profile.lock_path)})


def test_a_lock_of_the_other_sdk_generation_is_refused() -> None:
    holoscan, classic = profiles.load("bookworm-sdk3.5"), profiles.load()
    with pytest.raises(GateError, match=r"bookworm-sdk3\.5-aarch64\.txt: monai-deploy-app-sdk 0\.5\.1 is not"
                       r" of the 'holoscan' generation .*'profile\.sdk'"):  # fmt: skip
        holoscan.check_sdk({"monai-deploy-app-sdk": "0.5.1"})
    with pytest.raises(GateError, match=r"monai-deploy-app-sdk 3\.5\.0 is not of the 'classic' generation"):
        classic.check_sdk({"Monai_Deploy_App_SDK": "3.5.0"})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('sdk = "holoscan"', 'sdk = "holoscan4"'), r"'profile.sdk' is 'holoscan4'"),
        (
            lambda t: t.replace('library_path = ["nvidia/cuda_runtime/lib"]', 'library_path = ["../lib"]'),
            r"'runtime.library_path' item '../lib' must be a folder in site-packages",
        ),
        (
            lambda t: t.replace('library_path = ["nvidia/cuda_runtime/lib"]', 'library_path = "nvidia"'),
            r"'runtime.library_path' must be a list of strings",
        ),
        (
            lambda t: t.replace('libraries = ["libcudart.so.12"]', 'libraries = ["cudart"]'),
            r"'runtime.libraries' item 'cudart' must be a shared library's soname",
        ),
        (lambda t: t.replace("libraries =", "libraires ="), r"unknown field 'runtime.libraires'"),
    ],
)
def test_invalid_holoscan_profile_field_is_one_line_naming_it(tmp_path: Path, edit, message: str) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(edit(SDK35))
    with pytest.raises(GateError, match=message) as error:
        profiles.load(str(broken))
    assert str(broken) in str(error.value) and "\n" not in str(error.value)


def test_the_trixie_base_is_emulated_with_cheap_pointer_authentication(tmp_path: Path) -> None:
    """Trixie's binaries use pointer authentication; QEMU's default CPU computes it with QARMA5 in
    software (4-5 times slower): the profile's qemu_cpu reaches the build's steps as a build arg."""
    from tests.test_build_plan import _args, _build_args

    assert profiles.load("trixie-sdk4.0").base.qemu_cpu == "max,pauth-impdef=on"
    assert _build_args(_args("trixie-sdk4.0", tmp_path / "t"))["QEMU_CPU"] == "max,pauth-impdef=on"
    assert "QEMU_CPU" not in _build_args(_args("bookworm", tmp_path / "b"))  # unset: no step or cache changes
    trixie = (profiles.PROFILES_DIR / "trixie-sdk4.0.toml").read_text()
    broken = tmp_path / "broken.toml"
    broken.write_text(trixie.replace('qemu_cpu = "max,pauth-impdef=on"', 'qemu_cpu = "max pauth"'))
    with pytest.raises(GateError, match=r"broken\.toml: field 'base\.qemu_cpu' is 'max pauth'; expected"):
        profiles.load(str(broken))
