"""Build the linux/arm64 image of the app for a target profile, with buildx only.

The classic builder can label images from an arm64 base as amd64 (Debian's docker.io does), so every
build, the base included, goes through `docker buildx build --platform linux/arm64 --load`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from validation import (
    app_lock,
    contract,
    engine,
    generation,
    host,
    lock,
    profiles,
    progress,
    revision_tags,
    sbom,
)
from validation.errors import GateError
from validation.shared_files import replace_text, turn

ROOT = profiles.ROOT
REPORTS = Path(os.environ.get("ARMGATE_REPORTS", ROOT / "reports"))
DOCKERFILE = ROOT / "container" / "Dockerfile"
BASE_DOCKERFILE = ROOT / "container" / "base.Dockerfile"
PULL_TIMEOUT_S = 60
# Beside the build context: lock/ (the app's lock, when its contract names requirements) and wheels/ (what
# that lock adds over the profile's), the two inputs of the app's own install step.
APP_REQUIREMENTS = "app-requirements"


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
    app_name: str
    app_contract: str

    @classmethod
    def read(cls, path: Path) -> BuildRecord:
        """The record `nox -s build` wrote; one line naming the file when there is none (or an old one)."""
        if not path.is_file():
            raise GateError(f"{path}: no build record; run `nox -s build` first or pass --image REF")
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            raise GateError(f"{path}: not a build record of this armgate; run `nox -s build` again") from None


def _git(folder: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def git_revision() -> tuple[str, str]:
    """(short revision, commit time) of armgate: the commit time makes the `created` label reproducible."""
    revision = _git(ROOT, "rev-parse", "--short=12", "HEAD") or "unknown"
    if _git(ROOT, "status", "--porcelain", "--", "app", "container"):
        revision += "-dirty"
    return revision, _git(ROOT, "log", "-1", "--format=%cI") or "1970-01-01T00:00:00Z"


def source_hash(folder: Path) -> str:
    """sha256 of a folder's files (paths and bytes; bytecode aside), as the build copies them."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if "__pycache__" in relative.parts or path.suffix == ".pyc":
            continue
        digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def app_revision(app: contract.AppContract) -> tuple[str, str]:
    """(revision, commit time) of the app the image holds: armgate's own for an app in this checkout; the
    app's repository's for an app in another git work tree (-dirty when its folder has changes); else the
    first 12 hex digits of its files' hash, with armgate's commit time. An edited app is a new revision."""
    source = app.source
    if source == ROOT or ROOT in source.parents:
        revision, created = git_revision()
        if _git(ROOT, "status", "--porcelain", "--", str(source)) and not revision.endswith("-dirty"):
            revision += "-dirty"
        return revision, created
    head = _git(source, "rev-parse", "--short=12", "HEAD")
    if head:
        dirty = "-dirty" if _git(source, "status", "--porcelain", "--", ".") else ""
        return head + dirty, _git(source, "log", "-1", "--format=%cI") or git_revision()[1]
    return source_hash(source)[:12], git_revision()[1]


def require_engine() -> None:
    for check in (host.check_engine(), host.check_buildx()):
        if not check.ok:
            raise GateError(f"{check.name}: {check.detail}; run `nox -s prepare` first")


def make_debootstrap_base(profile: profiles.Profile) -> str:
    """Debootstrap an arm64 rootfs once per recipe and load it as an image labelled linux/arm64."""
    base = profile.base
    reference = base.reference
    found = engine.inspect_image(reference)
    if found and found.architecture == "arm64":
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
        if base.qemu_cpu:  # debootstrap's second stage runs the base's own binaries under emulation
            command = ["env", f"QEMU_CPU={base.qemu_cpu}", *command]
        log = cache / "debootstrap.log"
        with progress.step(f"debootstrap {base.suite} {profile.platform}") as current:
            if progress.run_command(current, command, log) != 0:
                raise GateError(f"debootstrap of {base.suite} for {profile.platform} failed: see {log}")
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (rootfs / junk).glob("*"):
                    if path.is_file():
                        path.unlink()
            current.update(detail=f"packing {tarball.name}")
            subprocess.run(
                ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball) + ".part", "."], check=True
            )
            os.replace(str(tarball) + ".part", tarball)
            shutil.rmtree(rootfs)
    shutil.copy(BASE_DOCKERFILE, cache / "Dockerfile")
    base_args = ["--platform", profile.platform, "--load", "--tag", reference, str(cache)]
    _run_buildx(base_args, f"base {reference}")
    return reference


def pull_base(profile: profiles.Profile) -> str:
    """A vendor base must already be local or pullable now; fail fast and say what to do instead."""
    reference = profile.base.reference
    if engine.inspect_image(reference):
        return reference
    try:
        result = engine.docker("pull", "--platform", profile.platform, reference, timeout=PULL_TIMEOUT_S)
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


def _run_buildx(args: list[str], what: str) -> None:
    """`docker buildx build` with plain output into a log: live progress on a terminal, one line elsewhere."""
    log = REPORTS / "logs" / f"buildx-{re.sub(r'[^A-Za-z0-9_.-]+', '_', what)}.log"
    with progress.step(f"buildx {what}") as current:
        if engine.buildx_build(args, log, current) != 0:
            print(progress.tail(log), file=sys.stderr, flush=True)
            raise GateError(f"docker buildx build failed: the failing step is above, the full log in {log}")


def stage_context(app: contract.AppContract, scratch: Path) -> Path:
    """The build context: the app's folder as app/ (no bytecode) and the Dockerfile with the
    contract's ENTRYPOINT, so an app anywhere on disk builds the same way as this repo's."""
    context = scratch / "context"
    shutil.copytree(app.source, context / "app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    entrypoint = json.dumps(list(app.entrypoint))
    # the variables a Holoscan-generation app reads its paths from, at the mounts ([app] env)
    env = "".join(f"ENV {name}={json.dumps(value)}\n" for name, value in generation.image_env(app).items())
    (context / "Dockerfile").write_text(DOCKERFILE.read_text() + env + f"ENTRYPOINT {entrypoint}\n")
    for part in ("lock", "wheels"):  # empty unless stage_app_requirements fills them
        (scratch / APP_REQUIREMENTS / part).mkdir(parents=True, exist_ok=True)
    return context


def stage_app_requirements(profile: profiles.Profile, app_lock_path: Path, context: Path) -> None:
    """The app's lock and the wheels it adds over the profile's, for the app's install step."""
    staged = context.parent / APP_REQUIREMENTS
    shutil.copy(app_lock_path, staged / "lock" / app_lock_path.name)
    app_lock.stage_wheels(profile, app_lock_path, staged / "wheels")


def buildx_args(
    profile: profiles.Profile,
    app: contract.AppContract,
    base_reference: str,
    wheels: Path,
    tags: list[str],
    labels: dict[str, str],
    iidfile: Path,
    context: Path,
    app_lock_path: Path | None = None,
) -> list[str]:
    """The arguments of `docker buildx build` for the app image (a pure function: unit-tested).
    `app_lock_path`: the app's own lock (the contract names requirements), installed over the profile's."""
    build_args = {
        "BASE_IMAGE": base_reference,
        "APP_NAME": app.name,
        "APP_USER": app.user,
        "APP_UID": str(app.uid),
        "INSTALL_MODE": profile.install,
    }
    if profile.install == "wheelhouse":
        build_args["LOCK_FILE"] = profile.lock_path.name
        build_args["VENV"] = profiles.VENV
        build_args["LIBRARY_PATH"] = profile.ld_library_path
    else:
        build_args["PACKAGES"] = " ".join(profile.packages)
        build_args["UPGRADE"] = " ".join(profile.upgrade)
    if profile.base.qemu_cpu:
        build_args["QEMU_CPU"] = profile.base.qemu_cpu
    # Hermetic profiles build with no network at all: a step that tries to download fails loudly.
    network = "none" if profile.install == "wheelhouse" else "default"
    args = ["--platform", profile.platform, "--load", "--network", network]
    args += ["--file", str(context / "Dockerfile")]
    args += ["--build-context", f"wheels={wheels}", "--build-context", f"locks={profile.lock_path.parent}"]
    staged = context.parent / APP_REQUIREMENTS
    args += ["--build-context", f"applock={staged / 'lock'}"]
    args += ["--build-context", f"appwheels={staged / 'wheels'}"]
    if app_lock_path is not None:
        build_args["APP_LOCK_FILE"] = app_lock_path.name
    for key, value in {**profile.base.build_args, **build_args}.items():
        args += ["--build-arg", f"{key}={value}"]
    for key, value in labels.items():
        args += ["--label", f"{key}={value}"]
    for tag in tags:
        args += ["--tag", tag]
    return [*args, "--iidfile", str(iidfile), str(context)]


def build(
    profile: profiles.Profile,
    extra_tags: list[str] = (),
    report: Path | None = None,
    app: contract.AppContract | None = None,
    no_cache: bool = False,
    app_locks: Path | None = None,
) -> BuildRecord:
    app = app or contract.load()
    generation.check(app, profile)  # an app of the other App SDK generation: one line, nothing built
    # the app's own lock (fresh, or one line naming the command that makes it), else the profile's
    app_lock_path = app_lock.require_fresh(profile, app, app_locks) if app.requirements else None
    installed_lock = app_lock.installed_lock(profile, app, app_locks)
    locked = lock.parse_lock(installed_lock) if installed_lock else []
    contract.check_floors(app, profile, {package.name: package.version for package in locked})
    profile.check_sdk({package.name: package.version for package in locked})
    require_engine()
    base_reference = pull_base(profile) if profile.base.kind != "debootstrap" else ""
    # the base images, the wheelhouse and the build record are this checkout's: one build at a time
    with turn(lock.CACHE / "build.lock", "build"):
        started = time.monotonic()
        if profile.base.kind == "debootstrap":
            base_reference = make_debootstrap_base(profile)
        revision, created = app_revision(app)
        lock_sha = lock.lock_hash(installed_lock) if installed_lock else None
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
            context = stage_context(app, Path(scratch))
            if profile.base.qemu_cpu:  # every emulated run of the image too: gate, model check, a site on x86
                dockerfile = context / "Dockerfile"
                dockerfile.write_text(dockerfile.read_text() + f"ENV QEMU_CPU={profile.base.qemu_cpu}\n")
            if app_lock_path is not None:
                stage_app_requirements(profile, app_lock_path, context)
            args = buildx_args(
                profile, app, base_reference, wheels, tags, labels, iidfile, context, app_lock_path
            )
            _run_buildx(["--no-cache", *args] if no_cache else args, tags[0])
            image_id = iidfile.read_text().strip()
        facts = engine.require_image(image_id, f"{image}: the image just built is not on the engine")
        platform = facts.platform
        if platform != profile.platform:
            raise GateError(
                f"{image}: built as {platform}, expected {profile.platform}; see README troubleshooting"
            )
        revision_tags.prune(f"armgate/{app.name}", profile.name, f"{profile.name}-{revision}")
        report = report or REPORTS / "build.json"
        sbom_path = sbom.write_sbom(
            image, image_id, profile.platform, installed_lock, report.with_name("sbom.cdx.json")
        )
        record = BuildRecord(
            image=image,
            tags=tags,
            image_id=image_id,
            platform=platform,
            architecture=facts.architecture or "?",
            profile=profile.name,
            base=base_reference,
            lock_sha256=lock_sha,
            revision=revision,
            seconds=round(time.monotonic() - started, 1),
            size_bytes=facts.size,
            sbom=str(sbom_path),
            app_name=app.name,
            app_contract=str(app.path),
        )
        replace_text(report, json.dumps(asdict(record), indent=2) + "\n")
        return record


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m validation build", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=profiles.DEFAULT_PROFILE, help="profile name or TOML path")
    parser.add_argument("--tag", action="append", default=[], help="an extra tag for the image")
    parser.add_argument("--report", type=Path, help="where to write build.json (default reports/build.json)")
    parser.add_argument("--app", type=Path, default=contract.DEFAULT_CONTRACT, help="app contract (TOML)")
    parser.add_argument("--no-cache", action="store_true", help="rebuild every layer above the base image")
    parser.add_argument("--locks", type=Path, help="folder of the app's locks (default: locks/ by it)")
    args = parser.parse_args(argv)
    profile, app = profiles.load(args.profile), contract.load(args.app)
    record = build(profile, args.tag, args.report, app, args.no_cache, args.locks)
    print(
        f"built {record.image} ({record.image_id[:19]}) {record.platform}, "
        f"{record.size_bytes / 1e9:.2f} GB in {record.seconds:.0f} s"
    )
    return 0
