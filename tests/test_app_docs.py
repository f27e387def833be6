"""What the docs say about the app's Python is what its contract declares (container/app.toml)."""

from __future__ import annotations

import re

from validation import contract, profiles

APP = contract.load()


def oldest_python() -> str:
    """The lowest version the contract's requires_python admits (its `>=` bound)."""
    bounds = [spec.version for spec in APP.requires_python if spec.operator == ">="]
    assert len(bounds) == 1, APP.requires_python
    return bounds[0]


def stated_pythons(text: str) -> set[str]:
    """Every "Python X.Y" a text names as one the app runs on."""
    return set(re.findall(r"[Rr]uns on Python (\d+\.\d+)", text))


def test_the_app_docs_name_the_contracts_oldest_python() -> None:
    readme = (APP.source / "README.md").read_text()
    assert stated_pythons(readme) == {oldest_python()}, "app/README.md"
    pyproject = (profiles.ROOT / "pyproject.toml").read_text()
    ignore = next(line for line in pyproject.splitlines() if line.startswith('"app/**"'))
    assert stated_pythons(ignore) == {oldest_python()}, ignore


def test_a_stale_python_in_the_docs_is_caught() -> None:
    assert stated_pythons("Runs on Python 3.8 (clara-agx base) and newer.") == {"3.8"} != {oldest_python()}
