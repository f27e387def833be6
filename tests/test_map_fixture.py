"""The fixture MAP's recipe without Docker: the offline rules change exactly the generated Dockerfile's
instructions that need the network, and the app packaged is the Holoscan fixture app but for where it finds
its model (a MAP keeps it in <modelRoot>/<name>/)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fixtures import map_build
from validation.errors import GateError

HOLOSCAN_APP = map_build.ROOT / "fixtures" / "holoscan" / "app"
MAP_APP = map_build.MAP_DIR / "app"
# The shape of the instructions the packager's CUDA 12 template writes for a Python app on arm64, by the
# texts the rules match (the template itself is the packager's, not armgate's, and is not copied here).
GENERATED = """FROM base-image AS base

RUN apt-get update \\
    && apt-get install -y curl \\
        jq \\
    && rm -rf /var/lib/apt/lists/*

# Update NV GPG repo key
RUN curl -OL https://example.invalid/cuda-keyring_1.1-1_all.deb \\
    && dpkg -i cuda-keyring_1.1-1_all.deb
RUN apt update && apt-get install -y python3-minimal=${PYTHON_VERSION} python3=${PYTHON_VERSION}
# Requires python3-dev on aarch64
RUN apt update && apt-get install -y gcc \\
        python3-dev
RUN apt update && apt-get install -y libnuma1="2.0.18-*"
USER $UNAME
RUN pip install --upgrade pip
RUN pip install --no-cache-dir --user -r /tmp/requirements.txt
RUN pip install monai-deploy-app-sdk==3.5.0
COPY ./app /opt/holoscan/app
"""


def test_every_offline_rule_changes_one_instruction_and_says_why() -> None:
    rules = map_build.config()["offline"]
    adapted, why = map_build.adapt(GENERATED, rules)
    assert why == [rule["why"] for rule in rules]
    run_lines = "\n".join(line for line in adapted.splitlines() if not line.startswith("#"))
    for network in ("apt-get", "apt update", "curl", "--upgrade pip", "--user"):
        assert network not in run_lines, network
    assert "RUN --mount=type=bind,source=debs,target=/debs dpkg -i /debs/jq_*.deb" in adapted
    assert "RUN pip install --no-index --no-cache-dir -r /tmp/requirements.txt" in adapted
    kept = ["FROM base-image AS base", "# Requires python3-dev on aarch64", "USER $UNAME",
            "RUN pip install monai-deploy-app-sdk==3.5.0", "COPY ./app /opt/holoscan/app"]  # fmt: skip
    assert all(line in adapted.splitlines() for line in kept), "the rest is the packager's, as written"


def test_a_rule_that_matches_no_instruction_or_several_fails_in_one_line() -> None:
    with pytest.raises(GateError, match=r"offline rule 'wget' matches 0 instructions .* template changed"):
        map_build.adapt(GENERATED, [{"match": "wget", "why": "-"}])
    with pytest.raises(GateError, match=r"offline rule 'RUN pip' matches 3 instructions"):
        map_build.adapt(GENERATED, [{"match": "RUN pip", "why": "-"}])


def test_instructions_keep_their_continuation_lines() -> None:
    parts = map_build.instructions("RUN a \\\n  b\n# c \\\nRUN d\n")
    assert parts == ["RUN a \\\n  b", "# c \\", "RUN d"], "a comment ends in no continuation"


def _top_level(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    body = [
        node
        for node in tree.body
        if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
    ]
    return {getattr(node, "name", ast.dump(node)): ast.dump(node) for node in body}


def test_the_packaged_app_is_the_holoscan_fixture_app_but_for_its_model_lookup() -> None:
    laid_over = sorted(path.name for path in MAP_APP.glob("*.py"))
    assert laid_over == ["spleen_app.py"], "only the model lookup differs"
    ours, theirs = _top_level(MAP_APP / "spleen_app.py"), _top_level(HOLOSCAN_APP / "spleen_app.py")
    different = sorted(name for name in ours.keys() | theirs.keys() if ours.get(name) != theirs.get(name))
    assert different == ["model_file"], different


def _model_file():
    """The overlay's model_file, run without the SDK the module imports (not installed here)."""
    tree = ast.parse((MAP_APP / "spleen_app.py").read_text())
    function = next(node for node in tree.body if getattr(node, "name", "") == "model_file")
    namespace = {"Path": Path, "MODEL_FILE_NAME": "model.ts"}
    exec(compile(ast.Module([function], []), "spleen_app.py", "exec"), namespace)
    return namespace["model_file"]


def test_the_model_is_found_where_a_map_keeps_it_and_where_the_fixture_app_did(tmp_path: Path) -> None:
    model_file = _model_file()
    nested = tmp_path / "models" / "model" / "model.ts"
    nested.parent.mkdir(parents=True)
    nested.write_bytes(b"ts")
    assert model_file(str(tmp_path / "models")) == nested, "a MAP's <modelRoot>/<name>/model.ts"
    assert model_file(str(nested)) == nested, "a file is itself"
    (tmp_path / "models" / "model.ts").write_bytes(b"ts")
    assert model_file(str(tmp_path / "models")) == tmp_path / "models" / "model.ts", "the folder's own first"
    (tmp_path / "two" / "a").mkdir(parents=True)
    (tmp_path / "two" / "b").mkdir()
    for name in ("a", "b"):
        (tmp_path / "two" / name / "model.ts").write_bytes(b"ts")
    assert model_file(str(tmp_path / "two")) == tmp_path / "two" / "model.ts", "two models: none is chosen"
