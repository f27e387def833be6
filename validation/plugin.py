"""The gate's pytest plugin: hands the gate session to the checks, parametrizes them by case and
pin, orders and deselects them, starts the runs they need, and records each check's outcome."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from validation import app_lock, progress, verdict
from validation.metrics import families_for
from validation.results import Pin

if TYPE_CHECKING:
    from validation.evidence import Evidence
    from validation.session import GateSession

# marker -> the contract's output kind a check reads: not collected for an app that does not write it
OUTPUT_MARKERS = {"seg_output": "seg", "stl_output": "stl"}

PIN_PROPERTY = "armgate.pin"  # test_pin's record of expected and found versions (a user property)
GATE_SESSION = pytest.StashKey["GateSession"]()
GATE_EVIDENCE = pytest.StashKey["Evidence"]()


class GatePlugin:
    """Registered with pytest.main: the session (for the `gate` fixture) and parametrization."""

    def __init__(self, session: GateSession, evidence: Evidence, checks: progress.Step) -> None:
        self.session, self.evidence = session, evidence
        self.checks = checks  # "k/n checks" on a terminal; one line with the time elsewhere
        self.case_of: dict[str, str | None] = {}

    def pytest_configure(self, config: pytest.Config) -> None:
        config.stash[GATE_SESSION] = self.session
        config.stash[GATE_EVIDENCE] = self.evidence
        config.addinivalue_line(
            "markers", "host_run: needs the app's run on the host (--no-host leaves it out)"
        )
        config.addinivalue_line("markers", "seg_output: checks the DICOM SEG (only apps that write one)")
        config.addinivalue_line("markers", "stl_output: checks the STL mesh (only apps that write one)")
        config.addinivalue_line("markers", "expects_series: only cases that name their expected series")
        config.addinivalue_line("markers", "host_families: one check per family the case's [host] bounds")
        config.addinivalue_line("markers", "cross_arch: a check of the --cross-arch tier only")

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        config = self.session.config
        if metafunc.definition.get_closest_marker("host_families"):
            host = {case.name: families_for(case.tolerances["host"]) for case in config.cases}
            pairs = [(case, family) for case, families in host.items() for family in families]
            metafunc.parametrize("case,family", pairs, ids=[f"{case}-{family}" for case, family in pairs])
        elif "case" in metafunc.fixturenames:
            metafunc.parametrize("case", [case.name for case in config.cases])
        if "pin" in metafunc.fixturenames:
            metafunc.parametrize("pin", sorted(app_lock.pins_to_check(config.profile, config.app)))

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """--no-host leaves out the checks marked host_run, by marker, never by a name's substring.
        Checks of an output the app does not write (OUTPUT_MARKERS), the series check of a case that
        names no series, and a MAP's host runs do not apply: not collected."""
        app, config_cases = self.session.config.app, self.session.config.cases
        unwritten = [marker for marker, kind in OUTPUT_MARKERS.items() if kind not in app.outputs]
        items[:] = [item for item in items if not any(item.get_closest_marker(m) for m in unwritten)]
        no_series = {case.name for case in config_cases if not case.expected_series_uid}
        def applies(item: pytest.Item) -> bool:
            series_check = item.get_closest_marker("expects_series") is not None
            return not (series_check and item.callspec.params.get("case") in no_series)

        items[:] = [item for item in items if applies(item)]
        if not self.session.config.cross_arch:  # the tier's own checks, collected with --cross-arch only
            items[:] = [item for item in items if not item.get_closest_marker("cross_arch")]
        if app.package is not None:  # a MAP brings no source: there is no host run to compare with
            items[:] = [item for item in items if not item.get_closest_marker("host_run")]
        if self.session.config.no_host:
            left_out = [item for item in items if item.get_closest_marker("host_run")]
            if left_out:
                config.hook.pytest_deselected(items=left_out)
                items[:] = [item for item in items if not item.get_closest_marker("host_run")]
        self.case_of = {item.nodeid: getattr(item, "callspec", None) and item.callspec.params.get("case")
                        for item in items}  # fmt: skip
        # The image checks first: they run while the case runs go on in the background, instead of
        # after the main thread has waited for the first case.
        items.sort(key=lambda item: self.case_of[item.nodeid] is not None)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        """Every check left out (by -k or --no-host) is named in the verdict's scope."""
        self.session.deselected.extend(item.nodeid.split("::")[-1] for item in items)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Start every run the selected checks need before the first check asks for one."""
        self.checks.grow(len(session.items))
        keys = []
        for item in session.items:
            case = self.case_of.get(item.nodeid)
            if case:
                keys.append((case, "container"))
                if item.get_closest_marker("host_run"):
                    keys.append((case, "host"))
        self.session.start_runs(sorted(set(keys), key=lambda key: (key[1] == "host", key[0])))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """One record per check: its call, or the setup phase that failed or skipped it."""
        if report.when != "call" and report.outcome == "passed":
            return
        reason = ""
        if isinstance(report.longrepr, tuple):  # a skip: (file, line, "Skipped: why")
            reason = report.longrepr[2].removeprefix("Skipped: ")
        elif report.outcome != "passed":
            crash = getattr(report.longrepr, "reprcrash", None)
            reason = crash.message if crash is not None else str(report.longrepr)[-500:]
        check = verdict.Check(
            name=report.nodeid.split("::")[-1],
            group=self.case_of.get(report.nodeid) or "image",
            passed=report.outcome == "passed",
            skipped=report.outcome == "skipped",
            reason=reason.strip(),
        )
        self.session.checks.append(check)
        pins = [Pin.from_dict(value) for key, value in report.user_properties if key == PIN_PROPERTY]
        self.session.pins += pins
        self.checks.advance(detail=check.name)
