"""The web console in a real browser: headless Chromium (Debian's chromium + chromium-driver) via Selenium.

In CI (``CI=true``) a missing browser fails these tests; elsewhere they skip, saying why.
Screenshots of each page go to ``SCREENSHOT_DIR`` (default ``test-artifacts/screenshots``, git-ignored).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from emotion_service.http.app import create_app

from .server import ROOT
from .signals import encode, voice_like
from .stream_client import answers, serving
from .test_stream import _settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = Path(os.environ.get("SCREENSHOT_DIR") or ROOT / "test-artifacts" / "screenshots")
HTML = "text/html"


def _browser_or_reason() -> str | None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        return f"{' and '.join(missing)} not installed: apt-get install -y chromium chromium-driver (.ci/run does it)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -r requirements-dev.txt"
    return None


@pytest.fixture(scope="module")
def browser_ready() -> None:
    reason = _browser_or_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)  # CI must run them
    print(f"skipping the browser tests: {reason}")
    pytest.skip(reason)


@pytest.fixture
def driver_for(browser_ready, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers = []

    def start(width: int = 1100, height: int = 900, microphone: Path | None = None, phone: bool = False):
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         f"--window-size={width},{height}", "--lang=en-US"):  # fmt: skip
            options.add_argument(argument)
        if phone:  # a window cannot be narrower than ~500 px: emulate the phone's screen instead
            options.add_experimental_option(
                "mobileEmulation", {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2}}
            )
        if microphone is not None:
            options.add_argument("--use-fake-ui-for-media-stream")
            options.add_argument("--use-fake-device-for-media-stream")
            options.add_argument(f"--use-file-for-fake-audio-capture={microphone}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(30)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


@pytest.fixture
def site(analyzer, tmp_path):
    app = create_app(_settings(job_dir=str(tmp_path / "jobs"), stream_max_speed=100), analyzer)
    with serving(app) as url:
        yield url.replace("ws://", "http://") + "/"
    app.extensions["emotion_jobs"].close()


def _errors(driver, allowed: tuple[str, ...] = ()) -> list[str]:
    entries = driver.get_log("browser")
    return [e["message"] for e in entries if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)]


def _shot(driver, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 5000
    return path


def _wait(driver, condition, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def test_file_page_shows_a_result_and_the_apis_message(driver_for, site, tmp_path):
    from selenium.webdriver.common.by import By

    recording = tmp_path / "answer.wav"
    recording.write_bytes(encode(voice_like(2.5)))
    notes = tmp_path / "notes.txt"
    notes.write_text("not a recording\n" * 20)
    driver = driver_for()
    driver.get(site)
    assert driver.find_element(By.ID, "tab-file").get_attribute("aria-selected") == "true"
    driver.find_element(By.ID, "lang").send_keys("English")
    assert driver.find_element(By.ID, "analyze-btn").text == "Analyse"
    driver.find_element(By.ID, "file-input").send_keys(str(recording))
    driver.find_element(By.ID, "analyze-btn").click()
    emotion = _wait(driver, lambda d: d.find_elements(By.ID, "result-emotion"))[0]
    assert emotion.text.strip()
    result = driver.find_element(By.ID, "file-result").text
    assert "Confidence" in result and "%" in result and "Speaking time" in result and "Advice" in result
    assert len(driver.find_elements(By.CSS_SELECTOR, "#file-result .bar")) == 8
    assert _errors(driver) == []
    _shot(driver, "file-result")

    driver.find_element(By.ID, "file-input").send_keys(str(notes))
    driver.find_element(By.ID, "analyze-btn").click()
    error = _wait(
        driver, lambda d: d.find_element(By.ID, "file-error").is_displayed() and d.find_element(By.ID, "file-error")
    )
    # The API's own message, as the API wrote it.
    assert "not a supported audio format" in error.text or "audio" in error.text.lower(), error.text
    assert driver.find_element(By.ID, "file-result").text == ""
    assert _errors(driver, allowed=("status of 400",)) == []
    _shot(driver, "file-error")

    # Phone-sized screen, Chinese.
    small = driver_for(390, 844, phone=True)
    small.get(site)
    small.find_element(By.ID, "lang").send_keys("中文")
    small.find_element(By.ID, "file-input").send_keys(str(recording))
    small.find_element(By.ID, "analyze-btn").click()
    _wait(small, lambda d: d.find_elements(By.ID, "result-emotion"))
    _shot(small, "phone-zh")
    assert small.find_element(By.ID, "tab-interview").text == "面试"
    assert "置信度" in small.find_element(By.ID, "file-result").text
    width = small.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390, width  # nothing wider than the screen


def test_keyboard_moves_between_tabs(driver_for, site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = driver_for()
    driver.get(site)
    driver.find_element(By.ID, "tab-file").send_keys(Keys.ARROW_RIGHT)
    assert driver.switch_to.active_element.get_attribute("id") == "tab-live"
    assert driver.find_element(By.ID, "panel-live").is_displayed()
    assert not driver.find_element(By.ID, "panel-file").is_displayed()


def test_live_page_with_a_fake_microphone(driver_for, site, tmp_path):
    from selenium.webdriver.common.by import By

    microphone = tmp_path / "microphone.wav"
    signal = np.concatenate([answers(3, seconds=1.8, gap=1.4, rate=48_000), np.zeros(48_000 * 2, np.float32)])
    microphone.write_bytes(encode(signal, rate=48_000, subtype="PCM_16"))
    driver = driver_for(microphone=microphone)
    driver.get(site)
    driver.find_element(By.ID, "lang").send_keys("English")
    driver.find_element(By.ID, "tab-live").click()
    driver.find_element(By.ID, "live-start").click()
    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#live-timeline .seg")) >= 2, timeout=40)
    level = driver.find_element(By.ID, "level-text").text
    assert "dB" in level
    figures = driver.find_element(By.ID, "live-figures").text
    assert "Segments" in figures and "Latest emotion" in figures
    _shot(driver, "live-recording")
    driver.find_element(By.ID, "live-stop").click()
    summary = _wait(
        driver, lambda d: d.find_element(By.ID, "live-summary").text.strip() and d.find_element(By.ID, "live-summary")
    )
    assert "Summary" in summary.text and "Advice" in summary.text and "Speaking time" in summary.text
    assert not driver.find_element(By.ID, "live-error").is_displayed(), driver.find_element(By.ID, "live-error").text
    time.sleep(0.3)
    assert _errors(driver) == []
    _shot(driver, "live-summary")


def test_interview_page_draws_the_timeline(driver_for, site, tmp_path):
    from selenium.webdriver.common.by import By

    recording = tmp_path / "interview.wav"
    recording.write_bytes(encode(answers(4, seconds=2.0, gap=1.5)))  # 14.5 s
    driver = driver_for()
    driver.get(site)
    driver.find_element(By.ID, "lang").send_keys("English")
    driver.find_element(By.ID, "tab-interview").click()
    driver.find_element(By.ID, "job-file").send_keys(str(recording))
    driver.find_element(By.ID, "job-ranges").send_keys("0-7.5 Q1\n7.5-14.5 Q2")
    driver.find_element(By.ID, "job-submit").click()
    _wait(driver, lambda d: d.find_element(By.ID, "job-result").is_displayed(), timeout=60)
    segments = driver.find_elements(By.CSS_SELECTOR, "#job-timeline rect.segment")
    assert len(segments) == 4
    assert len(driver.find_elements(By.CSS_SELECTOR, "#job-timeline rect.question")) == 2
    assert driver.find_elements(By.CSS_SELECTOR, "#job-timeline polyline.arousal")
    assert float(segments[0].get_attribute("width")) > 50
    assert "Q2" in driver.find_element(By.ID, "job-questions").text
    assert "Advice" in driver.find_element(By.ID, "job-assessment").text
    csv = driver.execute_script("return consoleApi.timelineCsv(consoleApi.result())")
    lines = csv.strip().split("\n")
    assert lines[0].startswith("index,start,end,question,emotion_label") and len(lines) == 5
    assert lines[1].split(",")[3] == "1" and lines[4].split(",")[3] == "2"  # per question
    assert _errors(driver) == []
    _shot(driver, "interview")
