"""armgate's sessions: `nox -l` lists them. Logic lives in validation/, not here."""

from __future__ import annotations

import nox

nox.needs_version = ">=2025.2.9"
# virtualenv + pip, not uv: pip takes the CPU torch these machines keep on disk, uv would fetch
# a multi-GB CUDA build. Venvs are reused so a second run does not reinstall torch.
nox.options.default_venv_backend = "virtualenv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


def install_groups(session: nox.Session, *groups: str) -> None:
    requirements = [req for group in groups for req in nox.project.dependency_groups(PYPROJECT, group)]
    session.install(*dict.fromkeys(requirements))


@nox.session(venv_backend="none")
def prepare(session: nox.Session) -> None:
    """Check the host for Docker, buildx, arm64 emulation and debootstrap; as root, install them."""
    session.run("python3", "-m", "validation", "host", *session.posargs, external=True)


@nox.session(default=False)
def lock(session: nox.Session) -> None:
    """Resolve each hermetic profile's requirements for its target into container/locks/."""
    install_groups(session, "harness")
    session.run("python", "-m", "validation", "lock", *session.posargs)


@nox.session(default=False)
def build(session: nox.Session) -> None:
    """Build the linux/arm64 image for a profile (--profile NAME) and write reports/build.json."""
    install_groups(session, "harness")
    session.run("python", "-m", "validation", "build", *session.posargs)


@nox.session(default=False)
def acceptance(session: nox.Session) -> None:
    """Gate the built image: image checks, inference on the fixture cases, mask comparison, report."""
    install_groups(session, "harness", "app")
    session.run("python", "-m", "validation", "acceptance", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Run armgate's own test suite (builds and gates the default image; Docker required in CI)."""
    install_groups(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(default=False)
def fixtures(session: nox.Session) -> None:
    """Regenerate the fixture cases, model and goldens (--check: fail if they differ from git)."""
    install_groups(session, "harness", "app")
    session.run("python", "-m", "fixtures.generate", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Measure armgate against baselines run alongside (reports/bench.json); `-- readme`: the README table."""
    install_groups(session, "test")
    session.run("python", "-m", "bench", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and format-check with ruff."""
    install_groups(session, "lint")
    session.run("ruff", "check", ".", *session.posargs)
