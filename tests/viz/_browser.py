"""A real headless Chromium for the Dash app tests, and a threaded server for an app.

Debian's ``chromium`` and ``chromium-driver`` are used from /usr/bin; Selenium Manager is never asked to
download anything. Without them the browser tests skip, unless ``SEGKIT_REQUIRE_BROWSER=1`` (CI), where
they fail instead.
"""

from __future__ import annotations

import base64
import contextlib
import os
import struct
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROME_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1100",
)


def require_chromium() -> None:
    """Skip (or fail under SEGKIT_REQUIRE_BROWSER=1) when chromium or chromedriver is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        message = f"headless browser tests need {' and '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("SEGKIT_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def chrome() -> Iterator[Any]:
    """A headless Chromium WebDriver with browser console logging, in a throw-away profile."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    previous = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # belt and braces: Selenium Manager must never download a driver
    with tempfile.TemporaryDirectory(prefix="segkit-chrome-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for arg in (*CHROME_ARGS, f"--user-data-dir={profile}"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            driver.set_page_load_timeout(60)
            yield driver
        finally:
            driver.quit()
            if previous is None:
                os.environ.pop("SE_OFFLINE", None)
            else:
                os.environ["SE_OFFLINE"] = previous


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve a Dash app on 127.0.0.1 and a free port in a background thread; yield its URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def console_errors(driver: Any) -> list[str]:
    """Browser console entries of level SEVERE since the last call (the log is drained)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def png_size(data_uri: str) -> tuple[int, int]:
    """(width, height) of a ``data:image/png;base64,`` URI, from the PNG header."""
    raw = base64.b64decode(data_uri.split(",", 1)[1])
    width, height = struct.unpack(">II", raw[16:24])
    return width, height


def screenshot(driver: Any, name: str) -> Path:
    """Save a screenshot under tests/artifacts/ (gitignored) and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
