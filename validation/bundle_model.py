"""MONAI Bundle TorchScript models: what the archive declares, and whether the image's SDK can serve it.

A Bundle TorchScript is an ordinary TorchScript archive that also holds `<root>/extra/metadata.json`
(network data format, package versions) and `<root>/extra/inference.json` (pre- and post-processing,
inferer). The MONAI Deploy App SDK's MonaiBundleInferenceOperator reads them with the image's MONAI,
looking for `<stem>/extra/...` where stem is the name of the file the app is given. That reading breaks
with the stack, not with the model: SDK 0.5.1 asks the metadata for `optional_packages_version`, which
MONAI >= 1.4 renames while reading, and its module wants torch >= 1.10.2. So for an app that uses the
operator, the model check runs the image's own operator code on the model (its config reading and its
optional imports) instead of re-stating its rules here.
"""

from __future__ import annotations

import ast
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

METADATA = "extra/metadata.json"
OPERATOR = "MonaiBundleInferenceOperator"
OPERATOR_MODULE = "monai_bundle_inference_operator"
PACKAGE_KEYS = ("required_packages_version", "optional_packages_version")
BUNDLE_MARKER = "ARMGATE_BUNDLE "

# Runs in the image after the model check's forward (Python 3.9 on the oldest profile): the SDK's
# bundle operator, built without its __init__ (which differs between SDK generations), reads the model's
# configs with the image's MONAI exactly as it does before its first inference; every optional import
# of the operator's module that failed in this image and that its code uses (e.g. torch below the version
# it asks for; not nibabel, which SDK 0.5.1 and 3.5.0 import and never use) is named.
PROBE = """
def _first_line(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return type(error).__name__ + ": " + (lines[0] if lines else "")

def _bundle_probe(path, packages):
    import importlib
    from pathlib import Path
    found = {"ok": False, "failed_imports": [], "missing_packages": [], "renamed": {}}
    try:
        from importlib import metadata as _metadata
        for name in ("monai-deploy-app-sdk", "monai"):
            found[name] = _metadata.version(name)
        for name in packages:
            try:
                _metadata.version(name)
            except _metadata.PackageNotFoundError:
                found["missing_packages"].append(name)
    except Exception as error:
        found["error"] = _first_line(error)
        return found
    try:
        from monai.bundle import utils as _bundle_utils
        found["renamed"] = dict(getattr(_bundle_utils, "DEPRECATED_ID_MAPPING", {}))
    except Exception:
        pass
    try:
        module = importlib.import_module("monai.deploy.operators.monai_bundle_inference_operator")
    except Exception as error:
        found["error"] = "import of the SDK's bundle operator failed: " + _first_line(error)
        return found
    import inspect
    used = set()
    codes = [const for const in compile(inspect.getsource(module), "operator", "exec").co_consts
             if hasattr(const, "co_names")]
    while codes:  # the names its functions and methods read, not the ones the module merely imports
        code = codes.pop()
        used.update(code.co_names)
        codes += [const for const in code.co_consts if hasattr(const, "co_names")]
    for name, value in sorted(vars(module).items()):
        if type(value).__name__ == "_LazyRaise" and name in used:
            try:
                getattr(value, "__name__")
            except Exception as error:
                found["failed_imports"].append(_first_line(error))
    operator = module.MonaiBundleInferenceOperator.__new__(module.MonaiBundleInferenceOperator)
    operator._bundle_path = Path(path)
    operator._bundle_config_names = module.BundleConfigNames()
    try:
        operator._init_config(operator._bundle_config_names.config_names)
    except Exception as error:
        found["error"] = _first_line(error)
        return found
    found["ok"] = not found["failed_imports"]
    return found
"""


@dataclass(frozen=True)
class BundleFacts:
    """What a Bundle archive's metadata.json says, read on the host without torch."""

    root: str  # the archive's root folder: the SDK finds it only under the file stem the app is given
    metadata: dict[str, Any] = field(hash=False)

    def io_format(self, direction: str) -> dict[str, Any]:
        """The first input or output of network_data_format ("inputs" or "outputs")."""
        entries = self.metadata.get("network_data_format", {}).get(direction, {})
        return next(iter(entries.values()), {}) if isinstance(entries, dict) else {}

    @property
    def packages(self) -> dict[str, str]:
        """The package versions the metadata names, under either key."""
        named: dict[str, str] = {}
        for key in PACKAGE_KEYS:
            value = self.metadata.get(key)
            if isinstance(value, dict):
                named.update({str(k): str(v) for k, v in value.items()})
        return named

    @property
    def output_channels(self) -> int | None:
        channels = self.io_format("outputs").get("num_channels")
        return channels if isinstance(channels, int) else None

    def describe(self) -> str:
        """E.g. "MONAI Bundle 'name' 0.1.0 (1 -> 3 channels; monai 1.3.2, torch 1.8.1)"."""
        inputs, outputs = self.io_format("inputs"), self.io_format("outputs")
        made = ", ".join(
            f"{package} {self.metadata[key]}"
            for package, key in (("monai", "monai_version"), ("torch", "pytorch_version"))
            if key in self.metadata
        )
        channels = f"{inputs.get('num_channels', '?')} -> {outputs.get('num_channels', '?')} channels"
        name = self.metadata.get("name", self.root)
        return f"MONAI Bundle {name!r} {self.metadata.get('version', '')}".rstrip() + f" ({channels}; {made})"


def bundle_facts(model: Path) -> BundleFacts | None:
    """The archive's Bundle metadata, or None for a TorchScript file without one."""
    try:
        with zipfile.ZipFile(model) as archive:
            names = [name for name in archive.namelist() if name.split("/", 1)[-1] == METADATA]
            if not names:
                return None
            text = archive.read(names[0])
    except (zipfile.BadZipFile, OSError):
        return None  # the model check's archive reading names the file
    try:
        metadata = json.loads(text)
    except ValueError:
        metadata = {}
    return BundleFacts(names[0].split("/", 1)[0], metadata if isinstance(metadata, dict) else {})


def uses_sdk_bundle_operator(source: Path) -> bool:
    """Whether the app's code imports the SDK's bundle operator (by name or by its module).

    Only such an app depends on the operator reading the model; the syntax tree is read, so a mention
    in a comment or docstring does not count."""
    for path in sorted(source.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if module.endswith(OPERATOR_MODULE) or any(alias.name == OPERATOR for alias in node.names):
                    return True
            elif isinstance(node, ast.Import) and any(a.name.endswith(OPERATOR_MODULE) for a in node.names):
                return True
    return False


def operator_problem(facts: BundleFacts, found: dict[str, Any] | None, mount: str) -> str | None:
    """Why the image's SDK cannot serve the Bundle, in one clause with its fix; None when it can."""
    if found is None:
        return (
            "the probe ended before the SDK's bundle operator read it (no answer in its output); fix: run "
            "the app once in the image and read its log"
        )
    sdk = f"monai-deploy-app-sdk {found.get('monai-deploy-app-sdk', '?')}"
    stack = f"the image's {sdk} bundle operator with MONAI {found.get('monai', '?')}"
    if found.get("failed_imports"):
        return (
            f"{stack} cannot run: {'; '.join(found['failed_imports'])[:300]}; fix: gate it on a profile "
            "whose packages meet the operator's versions"
        )
    error = str(found.get("error", ""))
    if error:
        return f"{stack} cannot read its configs: {error[:300]}{_explain(facts, error, found, mount)}"
    return None


def missing_packages_note(found: dict[str, Any] | None) -> str:
    """The metadata's packages the image lacks: said, not failed (Bundles also list what only their
    training needs, e.g. pytorch-ignite)."""
    missing = (found or {}).get("missing_packages") or []
    return f"; its metadata names {', '.join(missing)}, which the image lacks" if missing else ""


def _explain(facts: BundleFacts, error: str, found: dict[str, Any], mount: str) -> str:
    """The likely cause of a config-reading error, from what the archive and the image's MONAI say."""
    stem = PurePosixPath(mount).stem
    if facts.root != stem:
        return (
            f" (the archive's root folder is {facts.root!r}, the app opens it as "
            f"{PurePosixPath(mount).name}: the SDK looks for {stem}/{METADATA}); fix: save it again with "
            f"torch.jit.save to a file named {PurePosixPath(mount).name}, whose stem becomes the root folder"
        )
    renamed = found.get("renamed") or {}
    for old, new in renamed.items():
        if old in error:
            return (
                f" (MONAI {found.get('monai', '?')} reads the metadata key {old!r} as {new!r}, so no "
                f"metadata.json can give the operator {old!r}); fix: also put the metadata under "
                '"_meta_" in extra/inference.json, which the operator reads unrenamed (README: Bundle '
                "models), or use a profile with MONAI < 1.4"
            )
    key = error.split(":", 1)[-1].strip().strip("'\"")
    if error.startswith("KeyError") and key and key not in facts.metadata:
        return f" (its metadata.json has no {key!r}); fix: export the Bundle with {key!r} in its metadata"
    return "; fix: export the Bundle with configs this SDK and MONAI read (README: Bundle models)"
