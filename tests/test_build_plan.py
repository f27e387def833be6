"""The buildx invocation: always buildx for linux/arm64, never the classic builder, nothing baked in."""

from __future__ import annotations

from pathlib import Path

from validation import build, contract, profiles


def _args(profile_name: str, tmp_path: Path) -> list[str]:
    profile = profiles.load(profile_name)
    app = contract.load()
    context = build.stage_context(app, tmp_path)
    return build.buildx_args(
        profile,
        app,
        profile.base.reference,
        tmp_path,
        ["armgate/demo:x"],
        {"l": "v"},
        tmp_path / "iid",
        context,
    )


def _build_args(args: list[str]) -> dict[str, str]:
    pairs = [args[i + 1] for i, arg in enumerate(args) if arg == "--build-arg"]
    return dict(pair.split("=", 1) for pair in pairs)


def test_default_profile_builds_hermetically_for_arm64(tmp_path: Path) -> None:
    args = _args("bookworm", tmp_path)
    assert args[args.index("--platform") + 1] == "linux/arm64"
    assert "--load" in args
    assert args[args.index("--network") + 1] == "none"
    assert f"wheels={tmp_path}" in args and f"locks={profiles.LOCKS_DIR}" in args
    values = _build_args(args)
    assert values["INSTALL_MODE"] == "wheelhouse"
    assert values["LOCK_FILE"] == "bookworm-aarch64.txt"
    assert values["BASE_IMAGE"].startswith("armgate/base:bookworm-")
    assert "PACKAGES" not in values
    assert args[-1] == str(tmp_path / "context")


def test_the_context_holds_the_app_and_the_contracts_entrypoint(tmp_path: Path) -> None:
    """Only the app's folder (no bytecode) is sent, and the ENTRYPOINT is the contract's."""
    app = contract.load()
    (app.source / "__pycache__").mkdir(exist_ok=True)
    context = build.stage_context(app, tmp_path)
    assert sorted(path.name for path in context.iterdir()) == ["Dockerfile", "app"]
    assert not list(context.rglob("__pycache__")) and (context / "app" / app.main).is_file()
    entry = [
        line for line in (context / "Dockerfile").read_text().splitlines() if line.startswith("ENTRYPOINT")
    ]
    assert entry == [
        'ENTRYPOINT ["python3", "./__main__.py", "-i", "/input", "-m", "/model/model.ts", "-o", "/output"]'
    ]


def test_clara_profile_passes_the_clara_agx_build_args(tmp_path: Path) -> None:
    values = _build_args(_args("clara-agx-21.05", tmp_path))
    assert values["CONTAINER_REGISTRY"] == "nvcr.io/nvidia"
    assert values["AGX_PT_TAG"] == "21.05-1.7-py3"
    assert values["INSTALL_MODE"] == "network"
    assert values["UPGRADE"] == "setuptools==57.4.0 wheel==0.37.0"
    assert "monai-deploy-app-sdk>=0.1.0" in values["PACKAGES"]


def test_dockerfile_keeps_wheels_and_caches_out_of_layers() -> None:
    text = build.DOCKERFILE.read_text()
    assert "--mount=type=bind,from=wheels" in text
    assert "COPY wheels" not in text and "ADD wheels" not in text
    assert "PIP_NO_CACHE_DIR=1" in text
    # The app is copied after the packages are installed, so app changes reuse the package layer.
    assert text.index('pip" install') < text.index("COPY app/")
    assert "\nUSER ${APP_USER}" in text
