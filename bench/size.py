"""Image size against two baselines built in the same run from the same base, lock and app.

- the hand-written Dockerfile recipe (container/bench/recipe.Dockerfile): wheels COPYed into a layer;
- a competent single-stage Dockerfile (container/bench/single-stage.Dockerfile): wheels bind-mounted
  into the one RUN that installs them, --no-cache-dir. The target applies to this one.

Sizes are deterministic, so each image is built once. What the shipped image holds that it may not
need (tests, headers, bytecode, static libraries) is measured from its filesystem on the host.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from bench.common import Context, buildx, image_size
from bench.figures import Figure, Headline, Target
from validation import build, engine, lock
from validation.shared_files import turn

BASELINES = {
    "recipe": build.ROOT / "container" / "bench" / "recipe.Dockerfile",
    "single_stage": build.ROOT / "container" / "bench" / "single-stage.Dockerfile",
}
# The target holds against the competent single-stage Dockerfile; the hand-written recipe is shown beside.
SIZE_OVER = {
    "single_stage": Headline(
        "size_over_single_stage", "3  image size ÷ competent single-stage", Target("<=", 0.90)
    ),
    "recipe": Headline("size_over_recipe", "3  image size ÷ hand-written recipe"),
}
HEADLINES = (SIZE_OVER["single_stage"],)
# What a runtime image may drop, by path: first match wins. A distribution's own files (its
# .dist-info, licenses included) are never counted.
PACKAGE_FILE = r"/site-packages/(?![^/]+\.dist-info/)"
TRIMMABLE = (
    ("bytecode (__pycache__, *.pyc)", re.compile(r"(/__pycache__/|\.pyc$)")),
    ("test suites", re.compile(PACKAGE_FILE + r"[^/]+/(?:.*/)?tests?/")),  # not testing/: imported
    ("C/C++ headers", re.compile(PACKAGE_FILE + r".*(?:/include/|\.(?:h|hpp|cuh)$)")),
    ("static libraries", re.compile(r"\.a$")),
)


def trimmable_bytes(image: str, platform: str) -> dict[str, int]:
    """Bytes per TRIMMABLE category in the image's filesystem (created, never started)."""
    totals = {label: 0 for label, _ in TRIMMABLE}
    with engine.exported(image, platform, f"armgate-bench-size-{uuid.uuid4().hex[:8]}") as archive:
        for member in archive:
            if member.isfile():
                path = "/" + member.name.removeprefix("./")
                label = next((label for label, pattern in TRIMMABLE if pattern.search(path)), None)
                if label:
                    totals[label] += member.size
    return totals


def baseline_args(ctx: Context, dockerfile: Path, base: str, wheels: Path, tag: str, tree: Path) -> list[str]:
    return [
        "--platform",
        ctx.profile.platform,
        "--load",
        "--network",
        "none",
        "--file",
        str(dockerfile),
        "--build-context",
        f"wheels={wheels}",
        "--build-context",
        f"locks={ctx.profile.lock_path.parent}",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--build-arg",
        f"LOCK_FILE={ctx.profile.lock_path.name}",
        "--tag",
        tag,
        str(tree),
    ]


def section_size(ctx: Context) -> list[Figure]:
    """The shipped image against both baselines; the trimmable bytes it carries."""
    with turn(lock.CACHE / "build.lock", "the size baselines' base and wheels"):  # as a build takes them
        base = build.make_debootstrap_base(ctx.profile)
        wheels = lock.ensure_wheelhouse(ctx.profile)
    app_bytes = image_size(ctx.image)
    figures = []
    sizes: dict[str, int] = {}
    for key, dockerfile in BASELINES.items():
        tag = ctx.tag(key.replace("_", "-"))
        seconds = buildx(
            baseline_args(ctx, dockerfile, base, wheels, tag, build.ROOT), ctx.logs / f"size-{key}.log"
        )
        sizes[key] = image_size(tag)
        print(f"  {key}: {sizes[key] / 1e9:.3f} GB, built in {seconds:.0f} s", flush=True)
    trimmable = trimmable_bytes(ctx.image, ctx.profile.platform)
    trim_text = ", ".join(f"{label} {size / 1e6:.0f} MB" for label, size in trimmable.items())
    for key, size in sizes.items():
        path = BASELINES[key].relative_to(build.ROOT)
        figures.append(
            SIZE_OVER[key].figure(
                [app_bytes / size],
                detail=f"{app_bytes / 1e9:.3f} GB / {size / 1e9:.3f} GB ({path})",
                extra={"app_bytes": app_bytes, "baseline_bytes": size},
            )
        )
    figures.append(
        Figure(
            "image_gb",
            "   image size",
            [app_bytes / 1e9],
            unit="GB",
            detail=f"{ctx.image}; of which trimmable: {trim_text}",
            extra={"trimmable_bytes": trimmable},
        ),
    )
    return figures
