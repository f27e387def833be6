"""What a MAP's image must be, beyond what its manifests were checked for when the gate read them (the
command, application root, model root and models are in the image): arm64 through and through, loadable
with its own C/C++ libraries, run by a user who is not root, labelled as the MAP specification asks, and
free of credentials. A MAP is not an image of a profile: no profile pins or build labels are asked of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

import pytest

from validation import engine, image_files
from validation.checks.test_image import SECRET_WORDS

# The MAP specification's OCI annotations: a title, and the version app.json#version gives.
TITLE, VERSION = "org.opencontainers.image.title", "org.opencontainers.image.version"


@pytest.fixture(scope="module", autouse=True)
def spare_core(gate) -> Iterator[None]:
    """The image checks run on a core no case run is about to take: beside the runs, not in their way."""
    with gate.spare_core():
        yield


@pytest.fixture(scope="session")
def package(gate):
    return gate.config.app.package


@pytest.fixture(scope="session")
def files(gate, package) -> image_files.ImageFiles:
    """The image's files, read once on the host; nothing runs under emulation."""
    facts = gate.image_facts
    return image_files.read_image(facts.id, facts.platform, package.pkg.application_root)


def test_architecture_is_arm64(gate) -> None:
    platform = gate.image_facts.platform
    assert platform == gate.config.profile.platform, f"the MAP is {platform}, the gate targets linux/arm64"


def test_machine_is_aarch64(image_host) -> None:
    machine = image_host.check_output("uname -m")
    assert machine == "aarch64", f"uname -m inside the running MAP says {machine}"


def test_every_elf_file_is_aarch64(files: image_files.ImageFiles) -> None:
    assert files.elf_files > 0, "no ELF file found in the MAP's filesystem: is the export empty?"
    assert not files.foreign_elf, f"non-AArch64 ELF files (path, e_machine): {files.foreign_elf[:5]}"


def test_every_elf_file_loads_with_the_images_own_libraries(package, files: image_files.ImageFiles) -> None:
    """Every ELF file's GLIBC_/GLIBCXX_/CXXABI_ symbol versions are defined by the image's own C and C++
    libraries: a wheel or library built for a newer glibc than the MAP's base fails here, not on a device."""
    env = {**package.image_env, **package.run_env()}
    problems = image_files.loader_problems(files, env.get("LD_LIBRARY_PATH", ""), ())
    assert not problems, "; ".join(problems)


def test_runs_as_non_root_user(package, image_host) -> None:
    """The MAP runs as its own user (the packager's `holoscan`), with a passwd entry, never as root."""
    assert package.user.split(":")[0] not in ("root", "0"), f"the MAP runs as {package.user}"
    assert package.uid is not None, f"the MAP's user {package.user} has no entry in the image's /etc/passwd"
    assert package.uid != 0, f"the MAP's user {package.user} has uid 0 (root)"
    assert image_host.check_output("id -u") == str(package.uid)


def test_labels_name_the_app_and_its_version(gate, package) -> None:
    """The specification's OCI annotations: a title, and the version of app.json#version."""
    labels = gate.image_facts.labels
    assert labels.get(TITLE), f"the MAP has no {TITLE} label"
    assert labels.get(VERSION) == package.app.version, (
        f"label {VERSION} is {labels.get(VERSION)!r}, app.json#version {package.app.version!r}"
    )


def test_no_credentials(gate, files: image_files.ImageFiles) -> None:
    """No credentials file anywhere, no secret in the environment or the build history."""
    found = sorted(path for path in files.paths if PurePosixPath(path).name in image_files.CREDENTIAL_FILES)
    assert not found, f"credentials files in the MAP: {found[:10]}"
    env = " ".join((gate.image_facts.raw.get("Config") or {}).get("Env") or []).lower()
    said = [word for word in SECRET_WORDS if word in env]
    assert not said, f"the MAP's environment mentions {said}: {env}"
    history = "\n".join(engine.history(gate.config.image)).lower()
    leaked = [word for word in SECRET_WORDS if word in history]
    assert not leaked, f"the MAP's build history mentions {leaked}: a build arg or step leaked a setting"
