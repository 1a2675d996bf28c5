"""The report renders in a real browser (headless Chromium) with no console errors, verdict on top.

Needs the Debian packages chromium and chromium-driver (`make test` installs them where it can)."""

from headstart import fit_folder
from tests.conftest import browser_needed

pytestmark = browser_needed


def test_report_renders_without_console_errors_and_shows_the_verdict(colour_splits, tmp_path, browser):
    _, summary = fit_folder(colour_splits, tmp_path / "run", backbone="tiny", engine="torch", strategy="linear")
    browser.get((tmp_path / "run" / "report.html").as_uri())
    verdict = browser.find_element("id", "verdict")
    assert summary.verdict in verdict.text and verdict.is_displayed()
    assert verdict.location["y"] < 300  # on top, above the fold
    images = browser.find_elements("css selector", "img")
    assert images and all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img) for img in images)
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
