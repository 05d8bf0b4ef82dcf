"""The keyboard demo page in headless Chromium: typing changes the suggestion row.

The server is the real thing: gunicorn, the real stage-1 and reranker artifacts.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from test_serving_support import build_real_var, start_server

if TYPE_CHECKING:  # selenium is imported on use: the module loads (and skips) without it
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists() or not CHROMEDRIVER.exists(),
                       reason="needs Debian's chromium and chromium-driver (make test "
                              "installs them: apt-get install -y chromium chromium-driver)"),
]


def _row(driver: WebDriver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [cell.get_attribute("data-sticker-id") or ""
            for cell in driver.find_elements(By.CSS_SELECTOR, "#row .sticker")]


def test_typing_updates_the_suggestion_row(tiny_world: Path, tmp_path: Path) -> None:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    var = build_real_var(tiny_world, tmp_path / "var")
    server = start_server(var, workers=1, fake=False, demo=True)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(str(CHROMEDRIVER)))
    try:
        driver.get(f"{server.url}/")
        wait = WebDriverWait(driver, 15)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        wait.until(lambda d: d.find_element(By.ID, "row").get_attribute("data-rendered"))
        languages = [o.get_attribute("value") for o in
                     driver.find_elements(By.CSS_SELECTOR, "#language option")]
        assert languages and driver.find_elements(By.CSS_SELECTOR, "#user option")
        before = _row(driver)
        assert before, "the empty text box already shows a row"

        rows = [before]
        box = driver.find_element(By.ID, "text")
        for ch in "thank you":
            rendered = driver.find_element(By.ID, "row").get_attribute("data-rendered")
            box.send_keys(ch)

            def rerendered(d: WebDriver, last: str | None = rendered) -> bool:
                return d.find_element(By.ID, "row").get_attribute("data-rendered") != last

            wait.until(rerendered)  # one render per keystroke
            rows.append(_row(driver))
        assert any(r != before for r in rows[1:]), "typing never changed the row"
        status = driver.find_element(By.ID, "status")
        assert float(status.get_attribute("data-latency-ms") or "nan") > 0
        assert " ms" in status.text
        cell = driver.find_element(By.CSS_SELECTOR, "#row .sticker")
        assert cell.find_element(By.CLASS_NAME, "emoji").text
        assert cell.find_element(By.CLASS_NAME, "character").text
    finally:
        driver.quit()
        server.stop()
        shutil.rmtree(profile, ignore_errors=True)
