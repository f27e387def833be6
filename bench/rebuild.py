"""Rebuild figures from the real command: `python -m validation build` on a copy of the tree.

The copy holds the committed-or-edited app, container recipe and validation package, with the
app's name suffixed so its tags (armgate/<name>-bench-<token>:...) never touch the real image's.
Each build writes its build.json and SBOM in the copy, as a user's `reports/` would hold them, so
a no-op rebuild skips the SBOM exactly as it does for a user, and an app change writes a new one.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bench.common import Context, docker, run_logged
from bench.figures import Figure, Headline, Target, median, ratios
from validation import build
from validation.errors import GateError

TREE_PREFIXES = ("app/", "container/", "validation/", ".dockerignore", "pyproject.toml")
APP_FILE_TO_EDIT = "app/seg_app.py"  # in the copy only
NOOP = Headline("noop_rebuild_s", "2  no-op rebuild", Target("<=", 10.0))
APP_CHANGE = Headline("app_rebuild_over_cold", "2  app-code rebuild ÷ cold build", Target("<=", 0.10))
HEADLINES = (NOOP, APP_CHANGE)


def tracked_files(root: Path, prefixes: tuple[str, ...] = TREE_PREFIXES) -> list[str]:
    """Files git tracks under `prefixes`, as they are in the working tree (edits included)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=False)
    if listed.returncode != 0:
        raise GateError(f"{root}: git ls-files failed; the bench copies the tree git tracks")
    names = [name for name in listed.stdout.decode().split("\0") if name]
    return [name for name in names if name.startswith(prefixes) and (root / name).is_file()]


def rename_app(app_toml: Path, suffix: str) -> str:
    """Give the copy's app its own image name; returns the new name."""
    text = app_toml.read_text()
    match = re.search(r'^name\s*=\s*"([^"]+)"', text, flags=re.MULTILINE)
    if not match:
        raise GateError(f'{app_toml}: no name = "..." line in [app]')
    name = f"{match.group(1)}-{suffix}"
    app_toml.write_text(text[: match.start(1)] + name + text[match.end(1) :])
    return name


def copy_tree(destination: Path, suffix: str) -> Path:
    """The tree `python -m validation build` needs, in a folder of its own."""
    for name in tracked_files(build.ROOT):
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build.ROOT / name, target)
    rename_app(destination / "container" / "app.toml", suffix)
    return destination


def append_comment(path: Path, text: str) -> None:
    """An app-code-only change that alters no behaviour: a comment at the end of one file."""
    with path.open("a") as handle:
        handle.write(f"\n# {text}\n")


def build_command(profile: str, report: Path, no_cache: bool) -> list[str]:
    """The user's build command; --no-cache for the cold baseline."""
    command = [sys.executable, "-m", "validation", "build", "--profile", profile, "--report", str(report)]
    return [*command, "--no-cache"] if no_cache else command


def timed_build(ctx: Context, tree: Path, no_cache: bool, log_name: str) -> tuple[float, dict]:
    """Seconds of one real build in the copy (engine check, base, wheelhouse, buildx, SBOM)."""
    report = tree / "reports" / "build.json"
    command = build_command(ctx.profile.name, report, no_cache)
    seconds = run_logged(command, ctx.logs / log_name, "python -m validation build", cwd=tree)
    record = json.loads(report.read_text())
    ctx.tags.extend(tag for tag in record["tags"] if tag not in ctx.tags)
    ctx.app_images.append(record["image_id"])
    return seconds, record


def section_rebuild(ctx: Context) -> list[Figure]:
    """No-op and app-code-only rebuilds against a --no-cache build, all through the real command."""
    tree = copy_tree(ctx.scratch / "tree", f"bench-{ctx.token}")
    cold_s: list[float] = []
    noop_s: list[float] = []
    change_s: list[float] = []
    for index in range(ctx.runs):
        cold_s.append(timed_build(ctx, tree, True, f"build-cold-{index}.log")[0])
        noop_s.append(timed_build(ctx, tree, False, f"build-noop-{index}.log")[0])
        append_comment(tree / APP_FILE_TO_EDIT, f"armgate bench {ctx.token}: app-code-only change {index}")
        change_s.append(timed_build(ctx, tree, False, f"build-change-{index}.log")[0])
        print(
            f"  builds {index + 1}: cold {cold_s[-1]:.1f} s, no-op {noop_s[-1]:.1f} s, "
            f"app change {change_s[-1]:.1f} s",
            flush=True,
        )
    for image_id in dict.fromkeys(ctx.app_images[:-1]):  # ~1 GB each; the last goes with its tags
        docker("image", "rm", image_id)
    command = "python -m validation build"
    return [
        NOOP.figure(
            noop_s,
            unit="s",
            detail=f"{command}, nothing changed (SBOM kept: same image id)",
        ),
        APP_CHANGE.figure(
            ratios(change_s, cold_s),
            detail=f"{command} after one app file changed, SBOM included: {median(change_s):.1f} s / "
            f"{command} --no-cache {median(cold_s):.1f} s (base image and wheelhouse cached)",
            extra={"app_change_s": change_s, "cold_s": cold_s},
        ),
        Figure(
            "app_rebuild_s", "   app-code rebuild", change_s, unit="s", detail=f"{command}, SBOM included"
        ),
        Figure(
            "cold_build_s", "   cold build", cold_s, unit="s", detail=f"{command} --no-cache, SBOM included"
        ),
    ]
