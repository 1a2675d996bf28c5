"""The report renders in a real browser (headless Chromium) with no console errors, verdict on top.

Needs the Debian packages chromium and chromium-driver (`make test` installs them where it can)."""

import shutil

import pytest

from headstart import fit_folder

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="headless Chromium not found: install the Debian packages chromium and chromium-driver (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test extra: pip install -e '.[test]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1600"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The explicit driver path keeps Selenium Manager from trying to download one.
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


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
