"""`nox -s prepare` knows the tools the tests call and says how to install the missing ones."""

from __future__ import annotations

import pytest

from validation import host

HOST_CHECKS = ("docker engine", "buildx", "arm64 execution", "debootstrap")
READY = {name: host.Check(name, True, "") for name in HOST_CHECKS}


def test_missing_test_tools_are_named_with_their_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = ("chromedriver", "dciodvfy")
    monkeypatch.setattr(host.shutil, "which", lambda tool: None if tool in missing else f"/usr/bin/{tool}")
    check = host.check_test_tools()
    assert not check.ok
    assert check.detail == "dciodvfy, chromedriver not found (Debian packages: dicom3tools chromium-driver)"
    assert host.manual_commands(READY) == ["sudo apt-get install -y dicom3tools chromium-driver"]


def test_present_test_tools_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    present = "dciodvfy, dcmcjpeg, chromium, chromedriver"
    assert host.check_test_tools() == host.Check("test tools", True, present)
    assert host.manual_commands(READY) == []
