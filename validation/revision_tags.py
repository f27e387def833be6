"""The `<profile>-<revision>` tags a build leaves: each build tags its image with the revision it was
built from, and keeps only the current revision's tag and the previous one of its profile, so that
repeated builds do not fill the engine with images no one names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from validation import engine

# `<profile>-<revision>`: app_revision()'s short hash (a git commit or the app's files' hash), "unknown"
# outside git, "-dirty" with local changes
REVISION_TAG = r"(?:[0-9a-f]{7,40}|unknown)(?:-dirty)?"
KEEP_REVISIONS = 2  # the current revision's tag and the previous one


@dataclass(frozen=True)
class RevisionTag:
    """One `<profile>-<revision>` tag of armgate's repository and what its image's labels say."""

    tag: str
    profile: str  # org.armgate.profile
    created: str  # org.opencontainers.image.created: the commit time (ISO 8601)


def to_remove(found: list[RevisionTag], profile: str, current: str) -> list[str]:
    """The revision tags of `profile` older than the current and the previous one (by commit time).

    A tag counts only when its name is `<profile>-<revision>` and its image is labelled with that
    profile, so another profile's tags (even one whose name starts with this one's) are never touched.
    """
    pattern = re.compile(rf"{re.escape(profile)}-{REVISION_TAG}")
    mine = [t for t in found if t.tag != current and t.profile == profile and pattern.fullmatch(t.tag)]

    def commit_time(entry: RevisionTag) -> datetime:
        try:
            return datetime.fromisoformat(entry.created)
        except ValueError:
            return datetime.min.replace(tzinfo=UTC)  # no readable time: oldest

    mine.sort(key=commit_time, reverse=True)
    return [t.tag for t in mine[KEEP_REVISIONS - 1 :]]


def prune(repository: str, profile: str, current: str) -> list[str]:
    """Untag `repository:<profile>-<rev>` beyond the current and previous revision; return what went.

    `docker image rm` without --force: an image still used by a container, or by another tag, stays.
    """
    found = []
    for tag in engine.image_tags(repository):
        facts = engine.inspect_image(f"{repository}:{tag}")
        labels = facts.labels if facts else {}
        created = labels.get("org.opencontainers.image.created", "")
        found.append(RevisionTag(tag, labels.get("org.armgate.profile", ""), created))
    removed = []
    for tag in to_remove(found, profile, current):
        if engine.untag(f"{repository}:{tag}"):
            removed.append(tag)
    if removed:
        print(f"removed older revision tags of {repository}: {', '.join(removed)}", flush=True)
    return removed
