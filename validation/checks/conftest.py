"""Fixtures of the gate's checks: the gate session, and testinfra's host for the image."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import testinfra

from validation.evidence import Evidence
from validation.plugin import GATE_EVIDENCE, GATE_SESSION
from validation.session import GateSession


@pytest.fixture(scope="session")
def gate(pytestconfig: pytest.Config) -> GateSession:
    return pytestconfig.stash[GATE_SESSION]


@pytest.fixture(scope="session")
def evidence(pytestconfig: pytest.Config) -> Evidence:
    """What the case runs wrote, read and compared once (validation/evidence.py)."""
    return pytestconfig.stash[GATE_EVIDENCE]


@pytest.fixture(scope="session")
def image_host(gate: GateSession) -> Iterator[testinfra.host.Host]:
    """A sleeping container of the image, reached through testinfra's docker:// backend; removed
    when the checks end."""
    with gate.inspection_container() as name:
        yield testinfra.get_host(f"docker://{name}")
