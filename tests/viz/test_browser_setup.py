"""The browser tests skip without Chromium, except under SEGKIT_REQUIRE_BROWSER=1 (CI), where they fail."""

from __future__ import annotations

from pathlib import Path

import _browser
import pytest


def test_missing_browser_skips_or_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_browser, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("SEGKIT_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium chromium-driver"):
        _browser.require_chromium()
    monkeypatch.setenv("SEGKIT_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="no-chromium"):
        _browser.require_chromium()
