"""`nox -s build` keeps the current and the previous `<profile>-<rev>` tag per profile, removes older ones,
and never touches another profile's tags or tags of another form."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from validation import build, contract, revision_tags, run
from validation.revision_tags import RevisionTag

REV = ["a" * 12, "b" * 12, "c" * 12, "d" * 12]  # committed in this order
# commit times as git writes them, in several offsets: the last sorts first as text, last as an instant
TIMES = [
    "2026-01-01T10:00:00+00:00",
    "2026-02-01T10:00:00+01:00",
    "2026-03-02T01:00:00Z",
    "2026-03-01T23:00:00-05:00",  # 2026-03-02T04:00Z
]


def test_keeps_current_and_previous_of_the_profile_only() -> None:
    found = [RevisionTag(f"bookworm-{rev}", "bookworm", time) for rev, time in zip(REV, TIMES, strict=True)]
    found += [
        RevisionTag(f"bullseye-{REV[0]}", "bullseye", TIMES[0]),  # another profile
        RevisionTag(f"bookworm-x-{REV[0]}", "bookworm-x", TIMES[0]),  # a profile whose name starts alike
        RevisionTag("bookworm", "bookworm", TIMES[0]),  # the moving profile tag
        RevisionTag("bookworm-release", "bookworm", TIMES[0]),  # a user's --tag
        RevisionTag(f"bookworm-{REV[0]}-dirty", "bookworm", TIMES[0]),
        RevisionTag(f"bookworm-{'e' * 12}", "bullseye", TIMES[0]),  # right name, another profile's image
    ]
    removed = revision_tags.to_remove(found, "bookworm", f"bookworm-{REV[3]}")
    assert sorted(removed) == sorted([f"bookworm-{REV[0]}", f"bookworm-{REV[1]}", f"bookworm-{REV[0]}-dirty"])


def test_building_an_older_revision_keeps_the_newest_other_one() -> None:
    found = [RevisionTag(f"bookworm-{rev}", "bookworm", time) for rev, time in zip(REV, TIMES, strict=True)]
    assert revision_tags.to_remove(found, "bookworm", f"bookworm-{REV[0]}") == [
        f"bookworm-{REV[2]}",
        f"bookworm-{REV[1]}",
    ]


def test_nothing_to_remove_with_two_revisions() -> None:
    found = [RevisionTag(f"bookworm-{rev}", "bookworm", t) for rev, t in zip(REV[:2], TIMES[:2], strict=True)]
    assert revision_tags.to_remove(found, "bookworm", f"bookworm-{REV[1]}") == []


@pytest.fixture
def repository(docker_host: None, tmp_path: Path) -> Iterator[str]:
    """A throwaway repository of tiny labelled images (one file each), removed afterwards."""
    name = f"armgate/tag-prune-test-{uuid.uuid4().hex[:8]}"
    yield name
    tags = subprocess.run(
        ["docker", "image", "ls", name, "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    if tags:
        subprocess.run(["docker", "image", "rm", *tags], capture_output=True, check=False)


def _tiny_image(context: Path, reference: str, profile: str, created: str) -> None:
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY marker /marker\n")
    (context / "marker").write_text(reference)
    command = [
        "docker", "buildx", "build", "--platform", "linux/arm64", "--load", "--network", "none",
        "--label", f"org.armgate.profile={profile}", "--label", f"org.opencontainers.image.created={created}",
        "--tag", reference, str(context),
    ]  # fmt: skip
    subprocess.run(command, capture_output=True, check=True)


@pytest.mark.docker
def test_prune_removes_older_tags_from_the_engine(repository: str, tmp_path: Path) -> None:
    for index, (rev, time) in enumerate(zip(REV, TIMES, strict=True)):
        _tiny_image(tmp_path / f"b{index}", f"{repository}:bookworm-{rev}", "bookworm", time)
    _tiny_image(tmp_path / "other", f"{repository}:bullseye-{REV[0]}", "bullseye", TIMES[0])
    removed = revision_tags.prune(repository, "bookworm", f"bookworm-{REV[3]}")
    assert sorted(removed) == [f"bookworm-{REV[0]}", f"bookworm-{REV[1]}"]
    listing = ["docker", "image", "ls", repository, "--format", "{{.Tag}}"]
    left = subprocess.run(listing, capture_output=True, text=True, check=True).stdout.split()
    assert sorted(left) == sorted([f"bookworm-{REV[2]}", f"bookworm-{REV[3]}", f"bullseye-{REV[0]}"])


@pytest.mark.docker
def test_prune_spares_an_image_held_by_a_running_gate(repository: str, tmp_path: Path) -> None:
    """A gate holds its image with a container: an older revision it is gating keeps its tag, while an
    unheld one of the same age goes (a build beside a running gate must not pull its image away)."""
    for index, (rev, time) in enumerate(zip(REV, TIMES, strict=True)):
        _tiny_image(tmp_path / f"b{index}", f"{repository}:bookworm-{rev}", "bookworm", time)
    with run.holding(f"{repository}:bookworm-{REV[0]}", "linux/arm64", {"org.armgate.test": "prune"}):
        removed = revision_tags.prune(repository, "bookworm", f"bookworm-{REV[3]}")
        listing = ["docker", "image", "ls", repository, "--format", "{{.Tag}}"]
        left = subprocess.run(listing, capture_output=True, text=True, check=True).stdout.split()
    assert removed == [f"bookworm-{REV[1]}"]
    assert sorted(left) == sorted([f"bookworm-{REV[0]}", f"bookworm-{REV[2]}", f"bookworm-{REV[3]}"])
    assert not run.leftover_containers("org.armgate.test=prune")


def _app_at(source: Path) -> contract.AppContract:
    return dataclasses.replace(contract.load(), source=source)


def test_an_app_outside_any_repository_is_revised_by_its_files(tmp_path: Path) -> None:
    """An app outside armgate's checkout gets a revision of its own: editing it makes a new tag, so the
    image gated before keeps its own (the build prunes only revisions older than the previous one)."""
    source = tmp_path / "app"
    source.mkdir()
    (source / "__main__.py").write_text("print('segment')\n")
    first, created = build.app_revision(_app_at(source))
    assert re.fullmatch(r"[0-9a-f]{12}", first) and created == build.git_revision()[1]
    (source / "__pycache__").mkdir()
    (source / "__pycache__" / "x.pyc").write_bytes(b"bytecode")
    assert build.app_revision(_app_at(source))[0] == first  # bytecode is not the app
    (source / "__main__.py").write_text("print('segment')  # edited\n")
    assert build.app_revision(_app_at(source))[0] != first
    assert re.fullmatch(revision_tags.REVISION_TAG, first)


def test_an_app_in_its_own_repository_is_revised_by_its_commit(tmp_path: Path) -> None:
    source = tmp_path / "team-app"
    source.mkdir()
    (source / "__main__.py").write_text("print('segment')\n")
    git = ["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "app"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    assert build.app_revision(_app_at(source))[0] == head.stdout.strip()
    (source / "__main__.py").write_text("print('segment')  # edited\n")
    assert build.app_revision(_app_at(source))[0] == head.stdout.strip() + "-dirty"


def test_armgates_own_apps_take_armgates_revision() -> None:
    revision, created = build.app_revision(contract.load())
    assert revision.removesuffix("-dirty") == build.git_revision()[0].removesuffix("-dirty")
    assert created == build.git_revision()[1]
