"""report.html in a real browser: Debian's chromium, headless, driven by Playwright (its own
browser download is not used; `make test` installs chromium with apt-get, see the Makefile's
test-deps). Every thumbnail must have loaded after scrolling the whole page (so lazy ones load
too) and no script or console error may occur; a screenshot is kept in out/report-screenshot.png.
The checker is also shown to fail on a broken thumbnail and on a script error."""
import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import ROOT
from pipelines import dedup_images

SCREENSHOT = ROOT / "out" / "report-screenshot.png"

_SCROLL_THROUGH = """async () => {
  for (let y = 0; y <= document.documentElement.scrollHeight; y += window.innerHeight / 2) {
    window.scrollTo(0, y);
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  }
}"""
_IMAGES = "() => [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}))"


def chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail("chromium not found: `make test` installs Debian's chromium with apt-get when run as "
                    "root; otherwise `sudo apt-get install chromium`, or set CHROMIUM to its path")
    return found


def browser_problems(page_path: Path, screenshot: Path = None) -> tuple:
    """Open ``page_path`` headless: (images seen, problems: thumbnails that did not load, script
    errors, console errors)."""
    from playwright.sync_api import sync_playwright

    problems = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
            page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
                    if msg.type in ("error", "assert") else None)
            page.goto(page_path.as_uri(), wait_until="load")
            page.evaluate(_SCROLL_THROUGH)
            page.wait_for_function("() => [...document.images].every(i => i.complete)")
            images = page.evaluate(_IMAGES)
            problems += [f"thumbnail not loaded: {i['alt']}" for i in images if not i["width"]]
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return images, problems


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser") / "out"
    assert dedup_images.main(["--output", str(out), "--backend", "state"]) == 0
    return out / "report.html"


def test_sample_report_loads_every_thumbnail_without_errors(sample_report):
    if SCREENSHOT.exists():
        SCREENSHOT.unlink()
    images, problems = browser_problems(sample_report, SCREENSHOT)
    assert problems == []
    page = sample_report.read_text()
    assert len(images) == page.count("<img ") and len(images) >= 10
    assert page.count('loading="lazy"') == len(images)
    assert SCREENSHOT.stat().st_size > 10_000


@pytest.mark.parametrize("breakage, expected", [
    ("thumbnail", "thumbnail not loaded: "),
    ("script", "script error: "),
])
def test_the_browser_check_fails_on_a_broken_page(sample_report, tmp_path, breakage, expected):
    page = sample_report.read_text()
    if breakage == "thumbnail":  # the first thumbnail's JPEG cut to a few bytes
        page, n = re.subn(r'src="data:image/jpeg;base64,[^"]+"', 'src="data:image/jpeg;base64,/9j/4AAQ"', page, count=1)
    else:
        page, n = page.replace("</body>", "<script>no_such_function()</script></body>"), 1
    assert n == 1
    broken = tmp_path / "report.html"
    broken.write_text(page)
    _, problems = browser_problems(broken)
    assert len(problems) == 1 and problems[0].startswith(expected), problems
