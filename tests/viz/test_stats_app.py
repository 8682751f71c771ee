"""`segkit viz stats`: the inspector's views, its cache buttons, its security, and a real browser."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from _browser import chrome, console_errors, screenshot, serve
from _vizdata import LABELLED, UNLABELLED

from segkit.viz.stats_app import StatsService, StatsSettings, case_view, create_stats_app, dataset_view, preview
from segkit.viz.viewer import UnknownCaseError

SECOND = "BraTS-GLI-00001-000"


def _service(root: Path, cache: Path) -> StatsService:
    return StatsService(StatsSettings((root,), cache, bins=16, workers=1))


def _text(component) -> str:
    return json.dumps(component.to_plotly_json(), default=lambda o: o.to_plotly_json())


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/hosts", "BraTS-GLI-55555-000", None, ["x"]], ids=repr)
def test_bad_case_ids_are_refused_without_reading(viz_root: Path, tmp_path: Path, no_reads, bad) -> None:
    service = _service(viz_root, tmp_path / "cache")
    with pytest.raises(UnknownCaseError):
        service.case(bad)
    figure, _table, status = case_view(service, bad)
    assert figure["data"] == []
    assert "case" in _text(status)
    assert preview(service, bad, 50) == ""
    assert no_reads == []


def test_case_view_histograms_and_labels(viz_root: Path, tmp_path: Path) -> None:
    service = _service(viz_root, tmp_path / "cache")
    figure, table, status = case_view(service, LABELLED)
    assert [trace["name"] for trace in figure["data"]] == ["t1c", "t1n", "t2f", "t2w"]
    stats = service.case(LABELLED)
    assert figure["data"][2]["y"] == stats.modalities["t2f"].hist_counts
    assert len(figure["data"][0]["x"]) == 16
    assert f"{stats.labels['ET']['voxels']:.0f}" in _text(table)
    assert status == ""
    _, table, status = case_view(service, UNLABELLED)
    assert table == "no segmentation"
    assert "seg missing" in _text(status)
    assert preview(service, LABELLED, 10) != preview(service, LABELLED, 60)
    for bad in ("nan", float("nan"), "inf", "1e400", 10**400, "x", [1]):  # no preview, never an exception
        assert preview(service, LABELLED, bad) == ""
    assert preview(service, LABELLED, "-5") == preview(service, LABELLED, None) == preview(service, LABELLED, 0)
    assert preview(service, LABELLED, 1e300) == preview(service, LABELLED, 100)


def test_dataset_tab_cache_buttons(viz_root: Path, tmp_path: Path) -> None:
    service = _service(viz_root, tmp_path / "cache")
    body, status = dataset_view(service, recompute=False)
    assert status == "no cache"
    assert "press Recompute" in _text(body)
    body, status = dataset_view(service, recompute=True)
    assert status.startswith("computed (")
    text = _text(body)
    assert "24x28x20" in text
    assert "1 x 1 x 1.5" in text
    assert "2 labelled, 1 without segmentation" in text
    body, status = dataset_view(service, recompute=False)
    assert status.startswith("cache (")
    seg = viz_root / LABELLED / f"{LABELLED}-seg.nii.gz"
    st = seg.stat()
    os.utime(seg, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    _, status = dataset_view(service, recompute=False)
    assert status.startswith("stale-cache (")
    assert "files changed" in status


def test_dataset_tab_lists_missing_files(viz_root: Path, tmp_path: Path) -> None:
    (viz_root / SECOND / f"{SECOND}-t1n.nii.gz").unlink()
    body, _ = dataset_view(_service(viz_root, tmp_path / "cache"), recompute=True)
    text = _text(body)
    assert SECOND in text
    assert "t1n" in text


def test_cli_builds_the_inspector(run_cli, viz_root: Path, tmp_path: Path, monkeypatch) -> None:
    import segkit.viz.server

    calls = []
    monkeypatch.setattr(segkit.viz.server, "serve", lambda app, **kw: calls.append((app, kw)))
    result = run_cli("viz", "stats", "--data-root", viz_root, "--cache-dir", tmp_path / "c", "--port", "8123")
    assert result.code == 0, result.err
    ((app, kwargs),) = calls
    assert kwargs == {"host": "127.0.0.1", "port": 8123, "debug": False, "open_browser": False}
    assert app.segkit_stats.settings.cache_dir == tmp_path / "c"
    assert "http://127.0.0.1:8123/" in result.out


def _wait(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # still rendering
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_inspector_in_a_headless_browser(viz_root: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    app = create_stats_app(StatsSettings((viz_root,), tmp_path / "cache", bins=32, workers=1))
    with chrome() as driver, serve(app) as url:
        driver.get(url)

        def preview_src() -> str:
            return driver.find_element(By.ID, "case-preview").get_attribute("src") or ""

        def labels_text() -> str:
            return driver.find_element(By.ID, "case-labels").text

        first = _wait(lambda: preview_src().startswith("data:image/png") and preview_src(), what="case preview")
        _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#case-histograms g.trace.bars")) == 4, what="bars")
        first_labels = _wait(labels_text, what="label table")

        driver.find_element(By.ID, "stats-case").click()
        _wait(
            lambda: next(o for o in driver.find_elements(By.CSS_SELECTOR, "[role=option]") if SECOND in o.text),
            what="dropdown options",
        ).click()
        second = _wait(lambda: preview_src() != first and preview_src(), what="the second case")
        _wait(lambda: labels_text() != first_labels, what="the second case's label table")

        thumb = driver.find_element(By.CSS_SELECTOR, "#preview-slice [role=slider]")
        thumb.send_keys(*[Keys.ARROW_LEFT] * 20)
        _wait(lambda: thumb.get_attribute("aria-valuenow") == "30", what="preview slider at 30")
        _wait(lambda: preview_src() != second, what="another preview slice")

        driver.find_element(By.XPATH, "//*[text()='Dataset statistics']").click()
        status = driver.find_element(By.ID, "dataset-status")
        _wait(lambda: status.text == "no cache", what="no cache yet")
        driver.find_element(By.ID, "recompute").click()
        _wait(lambda: status.text.startswith("computed"), what="recompute")
        tables = driver.find_element(By.ID, "dataset-tables").text
        assert "24x28x20" in tables
        assert "2 labelled, 1 without segmentation" in tables
        driver.find_element(By.ID, "load-cached").click()
        _wait(lambda: status.text.startswith("cache ("), what="load cached")
        screenshot(driver, "statistics")
        assert console_errors(driver) == []
