"""What the image must be: arm64 through and through, the profile's pins, the app contract, clean."""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterator

import pytest
from packaging.utils import canonicalize_name

from validation import app_lock, engine, image_files, lock
from validation.plugin import PIN_PROPERTY

SECRET_WORDS = ("proxy", "password", "passwd=", "token", "secret", "credential", "_auth")


@pytest.fixture(scope="module", autouse=True)
def spare_core(gate) -> Iterator[None]:
    """The image checks run on a core no case run is about to take: beside the runs, not in their way."""
    with gate.spare_core():
        yield


def _config(gate) -> dict:
    return gate.image_facts.raw.get("Config") or {}


def test_architecture_is_arm64(gate) -> None:
    platform = gate.image_facts.platform
    assert platform == gate.config.profile.platform, f"image is {platform}, the profile targets linux/arm64"


def test_machine_is_aarch64(image_host) -> None:
    machine = image_host.check_output("uname -m")
    assert machine == "aarch64", f"uname -m inside the running image says {machine}"


@pytest.fixture(scope="session")
def files(gate) -> image_files.ImageFiles:
    """The image's files, read once on the host (docker export; nothing runs under emulation)."""
    facts = gate.image_facts
    return image_files.read_image(facts.id, facts.platform, gate.config.app.install_dir)


def test_every_elf_file_is_aarch64(files: image_files.ImageFiles) -> None:
    """Every ELF file anywhere in the image: a symlink cannot hide a foreign binary, its target is
    a file of the image too."""
    assert files.elf_files > 0, "no ELF file found in the image's filesystem: is the export empty?"
    assert not files.foreign_elf, f"non-AArch64 ELF files (path, e_machine): {files.foreign_elf[:5]}"


def test_every_elf_file_loads_with_the_images_own_libraries(gate, files: image_files.ImageFiles) -> None:
    """Every ELF file's GLIBC_/GLIBCXX_/CXXABI_ symbol versions are defined by the base's own C and C++
    libraries (a wheel's manylinux tag is a claim, its symbol versions the fact), and every runtime
    library the profile names (the CUDA runtime of a Holoscan profile) is on the image's loader path."""
    env = dict(item.split("=", 1) for item in _config(gate).get("Env") or [])
    profile = gate.config.profile
    problems = image_files.loader_problems(files, env.get("LD_LIBRARY_PATH", ""), profile.runtime_libraries)
    assert not problems, "; ".join(problems)


# The image's python3: its version and its import path (symlinks resolved, as the files are listed).
INTERPRETER_SCRIPT = (
    "import json, os, platform, sys; "
    "path = [os.path.realpath(p) for p in sys.path]; "
    "print(json.dumps({'version': platform.python_version(), 'path': path}))"
)


@pytest.fixture(scope="session")
def interpreter(image_host) -> dict:
    """What the image's python3 says about itself, asked once (each start is seconds under QEMU)."""
    return json.loads(image_host.check_output(f"python3 -c {shlex.quote(INTERPRETER_SCRIPT)}"))


def test_python_version(gate, interpreter: dict) -> None:
    version = interpreter["version"]
    expected = gate.config.profile.python
    assert version == expected or version.startswith(expected + "."), (
        f"python3 is {version}, profile says {expected}"
    )


@pytest.fixture(scope="session")
def installed(files: image_files.ImageFiles, interpreter: dict) -> dict[str, str]:
    """Installed distributions as the image's python3 finds them on its import path, read from their
    metadata files on the host rather than by `pip list` under emulation."""
    return files.installed(interpreter["path"])


def test_pin(gate, installed, request: pytest.FixtureRequest, pin: str) -> None:
    expected = app_lock.pins_to_check(gate.config.profile, gate.config.app)[pin]  # a profile's or the app's
    spec = expected.specifier
    found = installed.get(canonicalize_name(expected.package))
    # the report's pin table comes from this record (the gate collects it), not from the check's state
    record = {"name": pin, "expected": str(spec), "found": found, "passed": found in spec if found else False}
    request.node.user_properties.append((PIN_PROPERTY, record))
    wanted = f"{expected.source} {expected.package}{spec}"  # "the profile bookworm pins torch==2.10.0"
    assert found is not None, f"{expected.package} is not installed; {wanted}"
    assert found in spec, f"{expected.package} {found} is installed; {wanted}"


def test_pip_check(gate, image_host) -> None:
    result = image_host.run("python3 -m pip check")
    allowed = gate.config.profile.pip_check_allow
    problems = [line for line in result.stdout.splitlines() if line and not line.startswith("No broken")]
    unexpected = [line for line in problems if not any(allow in line for allow in allowed)]
    assert not unexpected, f"pip check: {unexpected}"
    # exit 1 with only allowed problems is expected; any other failure (pip missing, a crash) is not
    said = (result.stderr.strip().splitlines() or ["no message"])[-1]
    assert result.rc == 0 or (result.rc == 1 and problems), (
        f"pip check could not run (exit {result.rc}): {said}"
    )


def test_entrypoint_and_working_directory(gate) -> None:
    app = gate.config.app
    config = _config(gate)
    assert tuple(config.get("Entrypoint") or ()) == app.entrypoint, (
        f"entry point is {config.get('Entrypoint')}"
    )
    assert not config.get("Cmd"), f"a CMD {config.get('Cmd')} would append arguments to the entry point"
    assert config.get("WorkingDir") == app.install_dir, f"working directory is {config.get('WorkingDir')}"


def test_app_files_match_the_source(gate, files: image_files.ImageFiles) -> None:
    """Every app file is in the image with the source tree's content (sha256), not just present."""
    app = gate.config.app
    expected = {
        path.relative_to(app.source).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in app.source.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    found = files.app_digests
    missing = sorted(name for name in expected if name not in found)
    changed = sorted(name for name in expected if name in found and found[name] != expected[name])
    problems = [f"missing: {', '.join(missing)}"] if missing else []
    problems += [f"content differs from {app.source}: {', '.join(changed)}"] if changed else []
    assert not problems, f"app files in {app.install_dir}: {'; '.join(problems)}"


def test_runs_as_non_root_user(gate, image_host) -> None:
    app = gate.config.app
    user = _config(gate).get("User") or "root"
    assert user not in ("root", "0", "0:0"), f"image runs as {user}"
    account = image_host.user(app.user)
    assert account.exists and account.uid == app.uid, f"no passwd entry {app.user} with uid {app.uid}"
    assert image_host.check_output("id -u") == str(app.uid)


def test_no_build_leftovers_or_credentials(gate, files: image_files.ImageFiles) -> None:
    assert not files.leftovers, f"left in the image: {files.leftovers[:10]}"
    env = " ".join(_config(gate).get("Env") or []).lower()
    assert not [word for word in SECRET_WORDS if word in env], f"image environment mentions secrets: {env}"
    history = "\n".join(engine.history(gate.config.image)).lower()
    found = [word for word in SECRET_WORDS if word in history]
    assert not found, f"the image's build history mentions {found}: a build arg or step leaked a setting"


def test_oci_labels(gate) -> None:
    labels = _config(gate).get("Labels") or {}
    for key in (
        "org.opencontainers.image.revision",
        "org.opencontainers.image.created",
        "org.armgate.profile",
        "org.armgate.lock-sha256",
    ):
        assert labels.get(key), f"label {key} missing"
    profile = gate.config.profile
    assert labels["org.armgate.profile"] == profile.name, f"built for profile {labels['org.armgate.profile']}"
    installed_lock = app_lock.installed_lock(profile, gate.config.app, gate.config.app_locks)
    if installed_lock is not None:  # the app's own lock when its contract names requirements
        expected = lock.lock_hash(installed_lock) if installed_lock.is_file() else "(the lock is missing)"
        found = labels["org.armgate.lock-sha256"]
        assert found == expected, f"image built from another lock than {installed_lock}"


def test_supports_locked_down_runs(gate) -> None:
    env = dict(item.split("=", 1) for item in _config(gate).get("Env") or [])
    assert env.get("MONAI_WORKDIR", "").startswith("/tmp/"), (
        "MONAI_WORKDIR must be under /tmp for --read-only"
    )
    assert env.get("HOME", "").startswith("/tmp"), "HOME must be under /tmp for --read-only"
