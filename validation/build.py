"""Build the linux/arm64 image of the app for a target profile, with buildx only.

The classic builder labels images from an arm64 base as amd64 on this engine, so every build
here, the base included, goes through `docker buildx build --platform linux/arm64 --load`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from validation import host, lock, profiles, sbom
from validation.errors import GateError

ROOT = profiles.ROOT
REPORTS = Path(os.environ.get("ARMGATE_REPORTS", ROOT / "reports"))
DOCKERFILE = ROOT / "container" / "Dockerfile"
BASE_DOCKERFILE = ROOT / "container" / "base.Dockerfile"
PULL_TIMEOUT_S = 60


@dataclass(frozen=True)
class BuildRecord:
    """What reports/build.json holds: enough for acceptance to find and describe the image."""

    image: str
    tags: list[str]
    image_id: str
    platform: str
    architecture: str
    profile: str
    base: str
    lock_sha256: str | None
    revision: str
    seconds: float
    size_bytes: int
    sbom: str


def _docker(*args: str, timeout: float | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise GateError("docker client not found: run `nox -s prepare` (or install docker.io)") from None
    if check and result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise GateError(f"docker {args[0]} failed: {lines[-1] if lines else 'no message'}")
    return result


def image_inspect(reference: str) -> dict | None:
    result = _docker("image", "inspect", reference, check=False)
    return json.loads(result.stdout)[0] if result.returncode == 0 else None


def git_revision() -> tuple[str, str]:
    """(short revision, commit time): the commit time makes the `created` label reproducible."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    revision = git("rev-parse", "--short=12", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "app", "container"):
        revision += "-dirty"
    return revision, git("log", "-1", "--format=%cI") or "1970-01-01T00:00:00Z"


def require_engine() -> None:
    for check in (host.check_engine(), host.check_buildx()):
        if not check.ok:
            raise GateError(f"{check.name}: {check.detail}; run `nox -s prepare` first")


def make_debootstrap_base(profile: profiles.Profile) -> str:
    """Debootstrap an arm64 rootfs once per recipe and load it as an image labelled linux/arm64."""
    base = profile.base
    reference = base.reference
    found = image_inspect(reference)
    if found and found.get("Architecture") == "arm64":
        return reference
    cache = lock.CACHE / "base" / f"{base.suite}-{base.recipe_hash()}"
    tarball = cache / "rootfs.tar"
    if not tarball.is_file():
        if os.geteuid() != 0:
            raise GateError(
                f"making the base {reference} needs debootstrap as root: rerun the build with sudo"
            )
        if shutil.which("debootstrap") is None:
            raise GateError("debootstrap not found: run `nox -s prepare` (or apt-get install debootstrap)")
        cache.mkdir(parents=True, exist_ok=True)
        rootfs = cache / "rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        command = [
            "debootstrap", f"--arch={profile.platform.split('/')[1]}", f"--variant={base.variant}",
            f"--include={','.join(base.include)}", base.suite, str(rootfs), host.debian_mirror(),
        ]  # fmt: skip
        print(f"making base {reference}: {' '.join(command)}", flush=True)
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = cache / "debootstrap.log"
            log.write_text(result.stdout + result.stderr)
            raise GateError(f"debootstrap of {base.suite} for {profile.platform} failed: see {log}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        subprocess.run(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball) + ".part", "."], check=True
        )
        os.replace(str(tarball) + ".part", tarball)
        shutil.rmtree(rootfs)
        print(f"debootstrap took {time.monotonic() - started:.0f} s", flush=True)
    shutil.copy(BASE_DOCKERFILE, cache / "Dockerfile")
    _run_buildx(["--platform", profile.platform, "--load", "--tag", reference, str(cache)])
    return reference


def pull_base(profile: profiles.Profile) -> str:
    """A vendor base must already be local or pullable now; fail fast and say what to do instead."""
    reference = profile.base.reference
    if image_inspect(reference):
        return reference
    try:
        result = _docker(
            "pull", "--platform", profile.platform, reference, timeout=PULL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        reason = f"no answer within {PULL_TIMEOUT_S} s"
    else:
        if result.returncode == 0:
            return reference
        reason = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
    raise GateError(
        f"cannot pull base image {reference} for profile {profile.name} ({reason}); "
        "on a host without that registry use the offline default: "
        f"nox -s build -- --profile {profiles.DEFAULT_PROFILE}"
    )


def _run_buildx(args: list[str]) -> None:
    command = ["docker", "buildx", "build", *args]
    print("+", " ".join(command), flush=True)
    if subprocess.run(command, check=False).returncode != 0:
        raise GateError("docker buildx build failed: the build log above names the failing step")


def buildx_args(
    profile: profiles.Profile,
    app: profiles.App,
    base_reference: str,
    wheels: Path,
    tags: list[str],
    labels: dict[str, str],
    iidfile: Path,
) -> list[str]:
    """The arguments of `docker buildx build` for the app image (a pure function: unit-tested)."""
    build_args = {
        "BASE_IMAGE": base_reference,
        "APP_NAME": app.name,
        "APP_SOURCE": app.source.relative_to(ROOT).as_posix(),
        "APP_USER": app.user,
        "APP_UID": str(app.uid),
        "INSTALL_MODE": profile.install,
    }
    if profile.install == "wheelhouse":
        build_args["LOCK_FILE"] = profile.lock_path.name
    else:
        build_args["PACKAGES"] = " ".join(profile.packages)
        build_args["UPGRADE"] = " ".join(profile.upgrade)
    # Hermetic profiles build with no network at all: a step that tries to download fails loudly.
    network = "none" if profile.install == "wheelhouse" else "default"
    args = ["--platform", profile.platform, "--load", "--network", network, "--file", str(DOCKERFILE)]
    args += ["--build-context", f"wheels={wheels}", "--build-context", f"locks={profile.lock_path.parent}"]
    for key, value in {**profile.base.build_args, **build_args}.items():
        args += ["--build-arg", f"{key}={value}"]
    for key, value in labels.items():
        args += ["--label", f"{key}={value}"]
    for tag in tags:
        args += ["--tag", tag]
    return [*args, "--iidfile", str(iidfile), str(ROOT)]


def build(
    profile: profiles.Profile, extra_tags: list[str] = (), report: Path | None = None, no_cache: bool = False
) -> BuildRecord:
    require_engine()
    app = profiles.load_app()
    started = time.monotonic()
    if profile.base.kind == "debootstrap":
        base_reference = make_debootstrap_base(profile)
    else:
        base_reference = pull_base(profile)
    revision, created = git_revision()
    lock_sha = lock.lock_hash(profile.lock_path) if profile.install == "wheelhouse" else None
    image = f"armgate/{app.name}:{profile.name}"
    tags = [image, f"{image}-{revision}", *extra_tags]
    labels = {
        "org.opencontainers.image.title": app.name,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.base.name": base_reference,
        "org.armgate.profile": profile.name,
        "org.armgate.lock-sha256": lock_sha or "none (installed from the network)",
    }
    with tempfile.TemporaryDirectory() as scratch:
        wheels = lock.ensure_wheelhouse(profile) if profile.install == "wheelhouse" else Path(scratch)
        iidfile = Path(scratch) / "iid"
        args = buildx_args(profile, app, base_reference, wheels, tags, labels, iidfile)
        _run_buildx(["--no-cache", *args] if no_cache else args)
        image_id = iidfile.read_text().strip()
    facts = image_inspect(image_id) or {}
    platform = f"{facts.get('Os')}/{facts.get('Architecture')}"
    if platform != profile.platform:
        raise GateError(
            f"{image}: built as {platform}, expected {profile.platform}; see README troubleshooting"
        )
    report = report or REPORTS / "build.json"
    lock_path = profile.lock_path if profile.install == "wheelhouse" else None
    sbom_path = sbom.write_sbom(
        image, image_id, profile.platform, lock_path, report.with_name("sbom.cdx.json")
    )
    record = BuildRecord(
        image=image,
        tags=tags,
        image_id=image_id,
        platform=platform,
        architecture=facts.get("Architecture", "?"),
        profile=profile.name,
        base=base_reference,
        lock_sha256=lock_sha,
        revision=revision,
        seconds=round(time.monotonic() - started, 1),
        size_bytes=int(facts.get("Size", 0)),
        sbom=str(sbom_path),
    )
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(asdict(record), indent=2) + "\n")
    return record


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m validation build", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=profiles.DEFAULT_PROFILE, help="profile name or TOML path")
    parser.add_argument("--tag", action="append", default=[], help="an extra tag for the image")
    parser.add_argument("--report", type=Path, help="where to write build.json (default reports/build.json)")
    parser.add_argument("--no-cache", action="store_true", help="rebuild every layer above the base image")
    args = parser.parse_args(argv)
    record = build(profiles.load(args.profile), args.tag, args.report, args.no_cache)
    print(
        f"built {record.image} ({record.image_id[:19]}) {record.platform}, "
        f"{record.size_bytes / 1e9:.2f} GB in {record.seconds:.0f} s"
    )
    return 0
