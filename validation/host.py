"""Host preparation: a Docker engine, buildx, arm64 emulation, debootstrap and the test tools.

Checks first and only acts on what is missing, so a prepared host costs a few seconds.
As root on Debian/Ubuntu it installs and starts what is missing; anywhere else it prints
the commands to run. Facts behind each step are in the README's troubleshooting section.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from validation import engine
from validation.errors import GateError

BINFMT_AARCH64 = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
DOCKERD_LOG = Path("/var/log/armgate-dockerd.log")
# buildx is not packaged for Debian bookworm; trixie's package installs beside bookworm's engine.
TRIXIE_SOURCE = Path("/etc/apt/sources.list.d/armgate-trixie.sources")
TRIXIE_PIN = Path("/etc/apt/preferences.d/armgate-trixie")
# failing check -> (the tool that shows the package is installed, the packages that bring it)
PACKAGES_FOR_CHECK = {
    "docker engine": ("dockerd", ("docker.io",)),
    "arm64 execution": ("qemu-aarch64-static", ("qemu-user-static", "binfmt-support")),
    "debootstrap": ("debootstrap", ("debootstrap",)),
}
APT_PACKAGES = ("docker.io", "qemu-user-static", "binfmt-support", "debootstrap")
# Tools armgate's own tests call (`nox -s tests`): an independent DICOM validator and a real browser
# that opens report.html. tool on PATH -> the Debian package that brings it.
TEST_TOOLS = {
    "dciodvfy": "dicom3tools",
    "dcmcjpeg": "dcmtk",  # an independent encoder of the compressed transfer syntaxes under test
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def is_arm64_host() -> bool:
    return platform.machine() in ("aarch64", "arm64")


def _quiet(cmd: list[str], timeout: float = 20) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def check_engine() -> Check:
    result = engine.probe("version", "--format", "{{.Server.Version}}")
    if result is None:
        return Check("docker engine", False, "no docker client on PATH")
    if result.returncode != 0:
        return Check("docker engine", False, "no engine answers on the docker socket")
    return Check("docker engine", True, f"engine {result.stdout.strip()}")


def check_buildx() -> Check:
    result = engine.probe("buildx", "version")
    ok = result is not None and result.returncode == 0
    return Check("buildx", ok, result.stdout.strip() if ok and result else "docker buildx not found")


def check_binfmt() -> Check:
    if is_arm64_host():
        return Check("arm64 execution", True, "native arm64 host, no emulation needed")
    try:
        text = BINFMT_AARCH64.read_text()
    except OSError:
        return Check("arm64 execution", False, f"{BINFMT_AARCH64} is not registered")
    flags = re.search(r"^flags: *(\S*)", text, re.M)
    enabled = text.startswith("enabled")
    # F (fix binary) lets containers use the host's interpreter without it being in their rootfs.
    ok = enabled and flags is not None and "F" in flags.group(1)
    detail = f"qemu-aarch64 {'enabled' if enabled else 'disabled'}, flags {flags.group(1) if flags else '?'}"
    return Check("arm64 execution", ok, detail)


def check_debootstrap() -> Check:
    path = shutil.which("debootstrap")
    return Check("debootstrap", path is not None, path or "debootstrap not found")


def missing_test_tools() -> list[str]:
    return [tool for tool in TEST_TOOLS if shutil.which(tool) is None]


def check_test_tools() -> Check:
    missing = missing_test_tools()
    if missing:
        packages = " ".join(TEST_TOOLS[tool] for tool in missing)
        return Check("test tools", False, f"{', '.join(missing)} not found (Debian packages: {packages})")
    return Check("test tools", True, ", ".join(TEST_TOOLS))


def checks() -> list[Check]:
    return [check_engine(), check_buildx(), check_binfmt(), check_debootstrap(), check_test_tools()]


def debian_mirror() -> str:
    """The Debian archive this host's apt already uses (also the mirror debootstrap reads)."""
    if env := os.environ.get("ARMGATE_DEBIAN_MIRROR"):
        return env
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        for stanza in path.read_text().split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and re.search(r"\b(bookworm|trixie)\b(?!-security)", suites.group(1)):
                return uris.group(1)
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            match = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(bookworm|trixie)\s", line)
            if match:
                return match.group(1)
    raise GateError(
        "no Debian mirror found in /etc/apt/sources*: set ARMGATE_DEBIAN_MIRROR to a Debian archive URL"
    )


def _run(cmd: list[str], **kwargs: object) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def _apt_has_candidate(package: str) -> bool:
    result = _quiet(["apt-cache", "policy", package])
    return bool(result and re.search(r"Candidate: (?!\(none\))", result.stdout))


def _add_trixie_source() -> None:
    TRIXIE_SOURCE.write_text(
        "Types: deb\n"
        f"URIs: {debian_mirror()}\n"
        "Suites: trixie\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    # Priority 100: nothing else on the host is upgraded to trixie, only what we ask for by -t.
    TRIXIE_PIN.write_text("Package: *\nPin: release n=trixie\nPin-Priority: 100\n")


def install_packages(status: dict[str, Check]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    needed = [
        package
        for check, (tool, packages) in PACKAGES_FOR_CHECK.items()
        if not status[check].ok and not shutil.which(tool)
        for package in packages
    ]
    needed += [TEST_TOOLS[tool] for tool in missing_test_tools()]
    if not needed and status["buildx"].ok:
        return
    _run(["apt-get", "update", "-qq"], env=env)
    if needed:
        _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *needed], env=env)
    if not status["buildx"].ok:
        if _apt_has_candidate("docker-buildx"):
            _run(["apt-get", "install", "-y", "-qq", "docker-buildx"], env=env)
        else:
            _add_trixie_source()
            _run(["apt-get", "update", "-qq"], env=env)
            _run(["apt-get", "install", "-y", "-qq", "-t", "trixie", "docker-buildx"], env=env)


def enable_binfmt() -> None:
    if not Path("/proc/sys/fs/binfmt_misc/register").exists():
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"])
    if shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=False)


def start_engine(timeout: float = 60) -> None:
    """Start dockerd detached. No bridge and no iptables: the gate needs no container network."""
    print(f"+ dockerd --bridge=none --iptables=false  (log: {DOCKERD_LOG})", flush=True)
    with DOCKERD_LOG.open("ab") as log:
        subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check_engine().ok:
            return
        time.sleep(1)
    raise GateError(f"dockerd did not answer within {timeout:.0f} s: see {DOCKERD_LOG}")


def manual_commands(status: dict[str, Check]) -> list[str]:
    """What a non-root user (or a non-apt host) must run, from the failing checks."""
    commands = []
    if not status["docker engine"].ok or not status["debootstrap"].ok or not status["arm64 execution"].ok:
        commands.append("sudo apt-get update && sudo apt-get install -y " + " ".join(APT_PACKAGES))
    if missing := missing_test_tools():
        commands.append("sudo apt-get install -y " + " ".join(TEST_TOOLS[tool] for tool in missing))
    if not status["buildx"].ok:
        commands.append("sudo apt-get install -y docker-buildx   # Debian 12: from trixie, see README")
    if not status["docker engine"].ok:
        commands.append("sudo dockerd --bridge=none --iptables=false &   # or: sudo systemctl start docker")
    return commands


def prepare(install: bool = True) -> list[Check]:
    """Make the host ready, or raise GateError with the commands that would."""
    status = {check.name: check for check in checks()}
    if all(check.ok for check in status.values()):
        return list(status.values())
    can_install = install and os.geteuid() == 0 and shutil.which("apt-get") is not None
    if not can_install:
        missing = ", ".join(name for name, check in status.items() if not check.ok)
        raise GateError(f"host not ready ({missing}); run: " + " ; ".join(manual_commands(status)))
    install_packages(status)
    if not is_arm64_host():
        enable_binfmt()
    if not check_engine().ok:
        start_engine()
    final = checks()
    failed = [check for check in final if not check.ok]
    if failed:
        raise GateError("host still not ready: " + "; ".join(f"{c.name}: {c.detail}" for c in failed))
    return final
