"""The report as a person sees it: report.html opened in Debian's headless Chromium through selenium.

For a passing, a partial and a failing gate it asserts what is on screen at first sight: the verdict
readable (WCAG contrast >= 4.5 between its effective colour and the banner), every overlay decoded,
and the failed checks above the fold. A screenshot of each (report.png) is kept next to its report
under reports/browser/ so CI artifacts show it. Nothing is downloaded: the browser and its driver are
the Debian packages `chromium` and `chromium-driver` that `nox -s prepare` installs.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
from conftest import IN_CI

from validation import build, report, report_view
from validation.results import GateResults

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1280, 800)  # a laptop screen; "above the fold" means within its first 800 px
MIN_CONTRAST = 4.5  # WCAG 2.x AA for normal text
SCREENSHOTS = build.REPORTS / "browser"
# The banner rules before the fix: the later `.pass{color:…}` beat `.banner{color:#fff}`.
OLD_BANNER_CSS = (
    ".banner{padding:22px 20px;color:#fff;margin-bottom:8px}\n"
    ".banner.pass{background:#1e7d3b}.banner.fail{background:#b3261e}\n"
    ".banner .inner{max-width:1180px;margin:0 auto}.banner p{margin:4px 0 0;opacity:.92}\n"
    ".pass{color:#1e7d3b}.fail{color:#b3261e}\n"
)

# Colours as the browser computed them, with every ancestor's opacity, and the first opaque background.
SEEN_JS = """
const element = arguments[0];
const parse = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
let opacity = 1, background = null;
for (let node = element; node && node.nodeType === 1; node = node.parentElement) {
  const style = getComputedStyle(node);
  opacity *= Number(style.opacity);
  const bg = parse(style.backgroundColor);
  if (background === null && bg.length >= 3 && (bg.length === 3 || bg[3] > 0)) background = bg.slice(0, 3);
}
const box = element.getBoundingClientRect();
const style = getComputedStyle(element);
return {text: element.innerText, colour: parse(style.color), opacity: opacity,
        background: background || [255, 255, 255], visibility: style.visibility,
        top: box.top, bottom: box.bottom, width: box.width, height: box.height,
        viewport: window.innerHeight};
"""


def luminance(rgb: list[float]) -> float:
    """WCAG relative luminance of an sRGB colour (0..255 channels)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (v / 255 for v in rgb)]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(text: list[float], background: list[float]) -> float:
    lighter, darker = sorted((luminance(text), luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def effective_contrast(seen: dict[str, Any]) -> float:
    """Contrast of the text as drawn: its alpha and the ancestors' opacity blend it into the background."""
    alpha = (seen["colour"][3] if len(seen["colour"]) > 3 else 1.0) * seen["opacity"]
    drawn = [alpha * c + (1 - alpha) * b for c, b in zip(seen["colour"][:3], seen["background"], strict=True)]
    return contrast(drawn, seen["background"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from Debian, driven by selenium with a fresh profile; fails in CI when missing."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        message = f"{', '.join(missing)} not installed: run `nox -s prepare` (chromium, chromium-driver)"
        if IN_CI:
            pytest.fail(f"CI=true and no browser: {message}", pytrace=False)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="armgate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.set_window_size(*WINDOW)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def render(metrics: dict[str, Any], verdict: str | None = None, css: str | None = None) -> str:
    """report.html as write_report makes it; `verdict` and `css` replace the banner's verdict or rules."""
    template = report.TEMPLATE
    if css is not None:  # drop today's banner and verdict-colour rules, then add `css` after the rest
        template = re.sub(r"\.banner[^{}]*\{[^}]*\}|(?<![\w.])\.(pass|fail)\{[^}]*\}", "", template)
        template = template.replace("</style>", css + "</style>", 1)
    model = report_view.view_model(GateResults.from_dict(metrics))
    if verdict is not None:
        model["verdict"] = verdict
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    return environment.from_string(template).render(**model)


def open_report(driver: Any, html: str, name: str) -> tuple[Path, dict[str, Any]]:
    """Write report.html under reports/browser/<name>/, open it, screenshot it; what the page shows."""
    from selenium.webdriver.common.by import By

    folder = SCREENSHOTS / name
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / report.REPORT_FILE
    page.write_text(html, encoding="utf-8")
    driver.get(page.as_uri())
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.execute_script("return document.readyState") == "complete"
    seen = {
        "verdict": driver.execute_script(SEEN_JS, driver.find_element(By.CSS_SELECTOR, ".banner h1")),
        "summary": driver.execute_script(SEEN_JS, driver.find_element(By.CSS_SELECTOR, ".banner p")),
        "images": driver.execute_script(
            "return [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
        ),
        "failed": [
            driver.execute_script(SEEN_JS, item)
            for item in driver.find_elements(By.CSS_SELECTOR, "main > ul.failed > li")
        ],
    }
    screenshot = folder / "report.png"
    assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 0
    return page, seen


def assert_verdict_readable(seen: dict[str, Any], verdict: str) -> None:
    for part in ("verdict", "summary"):
        element = seen[part]
        assert element["visibility"] == "visible" and element["width"] > 0 and element["height"] > 0
        assert element["top"] >= 0 and element["bottom"] <= element["viewport"], f"{part} is below the fold"
        ratio = effective_contrast(element)
        assert ratio >= MIN_CONTRAST, (
            f"{part} {element['text']!r}: contrast {ratio:.2f} < {MIN_CONTRAST} "
            f"(text {element['colour']} on {element['background']}, opacity {element['opacity']})"
        )
    assert seen["verdict"]["text"].strip() == verdict


def assert_images_decoded(seen: dict[str, Any], expected: int) -> None:
    assert len(seen["images"]) == expected
    for alt, complete, width, height in seen["images"]:
        assert complete and width > 0 and height > 0, f"overlay {alt!r} did not decode"


def test_passing_report_in_a_browser(browser: Any, passing: dict[str, Any]) -> None:
    _, seen = open_report(browser, report.render_html(GateResults.from_dict(passing)), "pass")
    assert_verdict_readable(seen, "PASS")
    assert_images_decoded(seen, 2)
    assert seen["failed"] == []


def test_failing_report_in_a_browser(browser: Any, failing: dict[str, Any]) -> None:
    _, seen = open_report(browser, report.render_html(GateResults.from_dict(failing)), "fail")
    assert_verdict_readable(seen, "FAIL")
    assert_images_decoded(seen, 4)  # golden and ground-truth panels of the two cases with a mask
    failed = [c for c in failing["checks"] if not c["passed"]]
    assert len(seen["failed"]) == len(failed) > 0
    first = seen["failed"][0]
    assert first["bottom"] <= first["viewport"], "the first failed check is below the fold"
    assert "broken" in " ".join(item["text"] for item in seen["failed"])
    assert any("killed by its memory limit" in item["text"] for item in seen["failed"])


def test_partial_banner_in_a_browser(browser: Any, passing: dict[str, Any]) -> None:
    """PARTIAL (some checks deselected) gets its own banner, as readable as the others."""
    _, seen = open_report(browser, render(passing, verdict="PARTIAL"), "partial")
    assert_verdict_readable(seen, "PARTIAL")


@pytest.mark.parametrize("fixture", ["passing", "failing"])
def test_the_old_banner_css_is_caught(browser: Any, fixture: str, request: pytest.FixtureRequest) -> None:
    """The contrast check fails on the banner as it was: green text on green, red on red."""
    metrics = request.getfixturevalue(fixture)
    _, seen = open_report(browser, render(metrics, css=OLD_BANNER_CSS), f"old-banner-{fixture}")
    with pytest.raises(AssertionError, match=r"verdict '(PASS|FAIL)': contrast 1\.\d+ < 4\.5"):
        assert_verdict_readable(seen, "PASS" if fixture == "passing" else "FAIL")
