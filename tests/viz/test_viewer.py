"""`segkit viz app`: the case index and its security, the viewer service, the Dash routes, a real browser."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pytest
from _browser import chrome, console_errors, png_size, screenshot, serve
from _vizdata import LABELLED, SHAPE, UNLABELLED, write_misregistered

from segkit.errors import DataError
from segkit.io import read_volume, write_volume
from segkit.viz import render as R  # noqa: N812
from segkit.viz.app import create_app
from segkit.viz.viewer import CaseIndex, UnknownCaseError, Viewer, ViewRequest

SECOND = "BraTS-GLI-00001-000"
BAD_IDS = [
    "../../etc/passwd",
    "/etc/passwd",
    f"{LABELLED}/../{SECOND}",
    "..",
    ".hidden",
    "C:\\Windows\\win.ini",
    "BraTS-GLI-99999-000",
    "",
    None,
    5,
    ["BraTS-GLI-00000-000"],
    {"id": LABELLED},
]


@pytest.fixture
def predictions(viz_root: Path, tmp_path: Path) -> Path:
    """A prediction folder with one shifted prediction for the first case."""
    seg = read_volume(viz_root / LABELLED / f"{LABELLED}-seg.nii.gz")
    write_volume(tmp_path / "pred" / f"{LABELLED}.nii.gz", np.roll(seg.data, 2, axis=0), seg.affine)
    return tmp_path / "pred"


# --- the index ---------------------------------------------------------------------------------------


def test_index_lists_cases_and_predictions(viz_root: Path, predictions: Path) -> None:
    index = CaseIndex.build([viz_root], predictions)
    assert list(index.cases) == [LABELLED, SECOND, UNLABELLED]
    assert index.predictions == {LABELLED: predictions / f"{LABELLED}.nii.gz"}
    assert index.problems(UNLABELLED) == ["no segmentation (unlabelled case)"]


def test_index_finds_predictions_by_the_names_eval_accepts(viz_root: Path, tmp_path: Path) -> None:
    seg = read_volume(viz_root / LABELLED / f"{LABELLED}-seg.nii.gz")
    pred_dir = tmp_path / "named"
    first = write_volume(pred_dir / f"{LABELLED}_pred.nii.gz", seg.data, seg.affine)
    second = write_volume(pred_dir / f"{SECOND}-seg.nii.gz", seg.data, seg.affine)
    write_volume(pred_dir / f"{UNLABELLED}.nii.gz", seg.data, seg.affine)
    write_volume(pred_dir / f"{UNLABELLED}-pred.nii.gz", seg.data, seg.affine)  # two for one case
    write_volume(pred_dir / "BraTS-GLI-99999-000.nii.gz", seg.data, seg.affine)  # no such case
    index = CaseIndex.build([viz_root], pred_dir)
    assert index.predictions == {LABELLED: first, SECOND: second}
    assert set(index.ambiguous) == {UNLABELLED}
    assert index.problems(UNLABELLED)[-1] == (
        f"several predictions, none shown: {UNLABELLED}-pred.nii.gz, {UNLABELLED}.nii.gz"
    )
    # the same files as `segkit eval` pairs
    from segkit.evaluation.matching import prediction_files

    found = prediction_files(pred_dir)
    assert {case: paths for case, paths in found.items() if len(paths) == 1 and case in index.cases} == {
        LABELLED: [first],
        SECOND: [second],
    }


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_unknown_or_path_like_ids_are_refused_without_reading(viz_root: Path, no_reads, bad) -> None:
    viewer = Viewer(CaseIndex.build([viz_root]))
    with pytest.raises(UnknownCaseError):
        viewer.index.resolve(bad)
    with pytest.raises(UnknownCaseError):
        viewer.render(ViewRequest(case_id=bad))  # type: ignore[arg-type]
    assert no_reads == []


def test_index_errors(tmp_path: Path, viz_root: Path) -> None:
    with pytest.raises(DataError, match="no data roots"):
        CaseIndex.build([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no case folders found"):
        CaseIndex.build([tmp_path / "empty"])
    with pytest.raises(DataError, match="prediction folder not found"):
        CaseIndex.build([viz_root], tmp_path / "nope")


# --- the Dash routes, called as the browser would ------------------------------------------------------


def _post(app, output: str, values: dict[str, object], changed: str) -> dict:
    """POST to Dash's callback route with the given input/state values (what a browser sends)."""
    spec = next(d for d in app.server.test_client().get("/_dash-dependencies").get_json() if d["output"] == output)

    def fill(items):
        return [{**item, "value": values.get(f"{item['id']}.{item['property']}")} for item in items]

    outputs = [{"id": o.split(".")[0], "property": o.split(".")[1]} for o in output.strip(".").split("...")]
    body = {
        "output": output,
        "outputs": outputs if output.startswith("..") else outputs[0],  # a single output is not a list
        "inputs": fill(spec["inputs"]),
        "state": fill(spec["state"]),
        "changedPropIds": [changed],
    }
    response = app.server.test_client().post("/_dash-update-component", json=body)
    assert response.status_code == 200, response.data[:500]
    return response.get_json()["response"]


RENDER = "..view.figure...status.children...slice-label.children.."
VIEW = {
    "modality.value": "all",
    "axis.value": "axial",
    "slice.value": 5,
    "overlay.value": ["on"],
    "alpha.value": 0.4,
    "style.value": "fill",
    "pred-mode.value": "off",
}


@pytest.mark.parametrize("bad", ["../../../etc/passwd", "/etc/passwd", "BraTS-GLI-77777-000", 42], ids=repr)
def test_render_route_refuses_bad_ids_without_reading(viz_root: Path, no_reads, bad) -> None:
    app = create_app(CaseIndex.build([viz_root]))
    response = _post(app, RENDER, {"case.value": bad, **VIEW}, "case.value")
    status = json.dumps(response["status"]["children"])
    assert "not a case id" in status or "unknown case" in status
    assert response["view"]["figure"]["data"] == []
    hover = _post(
        app,
        "hover-info.children",
        {"view.hoverData": {"points": [{"x": 3, "y": 3}]}, "case.value": bad, **VIEW},
        "view.hoverData",
    )
    assert hover["hover-info"]["children"] == ""
    assert no_reads == []


def test_render_route_draws_a_slice_and_reports_hover(viz_root: Path) -> None:
    app = create_app(CaseIndex.build([viz_root]))
    response = _post(app, RENDER, {"case.value": LABELLED, **VIEW}, "case.value")
    figure = response["view"]["figure"]
    width, height = png_size(figure["data"][0]["source"])
    assert (width, height) == (4 * SHAPE[0] + 3 * 4, SHAPE[1])  # four modalities side by side
    assert response["slice-label"]["children"] == f"axial 5/{SHAPE[2] - 1} (file index 5)"
    hover = _post(
        app,
        "hover-info.children",
        {"view.hoverData": {"points": [{"x": 12, "y": 14}]}, "case.value": LABELLED, **VIEW},
        "view.hoverData",
    )
    text = hover["hover-info"]["children"]
    assert text.startswith("voxel (")
    assert "t1c " in text
    assert "label " in text


def test_case_with_missing_or_broken_files_shows_the_problem(viz_root: Path) -> None:
    (viz_root / SECOND / f"{SECOND}-t2w.nii.gz").unlink()
    broken = viz_root / LABELLED / f"{LABELLED}-t1n.nii.gz"
    broken.write_bytes(gzip.compress(b"garbage"))
    app = create_app(CaseIndex.build([viz_root]))
    ok = _post(app, RENDER, {"case.value": SECOND, **VIEW}, "case.value")
    assert "t2w.nii.gz missing" in json.dumps(ok["status"])
    assert len(ok["view"]["figure"]["data"]) == 1  # the three other modalities still show
    assert png_size(ok["view"]["figure"]["data"][0]["source"])[0] == 3 * SHAPE[0] + 2 * 4
    t2w = _post(app, RENDER, {"case.value": SECOND, **VIEW, "modality.value": "t2w"}, "modality.value")
    assert "no t2w image" in json.dumps(t2w["status"])
    bad = _post(app, RENDER, {"case.value": LABELLED, **VIEW}, "case.value")
    assert str(broken) in json.dumps(bad["status"])
    assert bad["view"]["figure"]["data"] == []


def test_bad_control_values_are_messages(viz_root: Path) -> None:
    app = create_app(CaseIndex.build([viz_root]))
    for key, value in [("modality.value", "../t1c"), ("axis.value", "oblique"), ("slice.value", "x")]:
        response = _post(app, RENDER, {"case.value": LABELLED, **VIEW, key: value}, key)
        assert response["view"]["figure"]["data"] == []
        assert response["status"]["children"]


BAD_NUMBERS = ["nan", "inf", "-inf", "1e400", float("nan"), float("inf"), 10**400, "x", [3], {"v": 1}]


@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
@pytest.mark.parametrize("control", ["slice", "alpha"])
def test_non_finite_slice_or_opacity_is_a_message(viz_root: Path, control: str, bad: object) -> None:
    from segkit.viz.app import probe_view, render_view

    viewer = Viewer(CaseIndex.build([viz_root]))
    values = {"slice": 5, "alpha": 0.4, control: bad}
    args = (LABELLED, "all", "axial", values["slice"], ["on"], values["alpha"], "fill", "off")
    figure, status, label = render_view(viewer, *args)
    assert figure["data"] == []
    assert ("slice" if control == "slice" else "opacity") in str(status)
    assert label == ""
    assert probe_view(viewer, {"points": [{"x": 3, "y": 3}]}, *args) == ""


@pytest.mark.parametrize(("control", "value", "shown"), [("slice", "-5", 0), ("slice", None, 0), ("slice", 1e9, 19)])
def test_out_of_range_or_missing_values_are_clamped_or_defaulted(viz_root, control, value, shown) -> None:
    from segkit.viz.app import render_view

    viewer = Viewer(CaseIndex.build([viz_root]))
    values = {"slice": 5, "alpha": 0.4, control: value}
    args = (LABELLED, "all", "axial", values["slice"], ["on"], values["alpha"], "fill", "off")
    figure, status, label = render_view(viewer, *args)
    assert len(figure["data"]) == 1, status
    assert label.startswith(f"axial {shown}/")


@pytest.mark.parametrize("alpha", ["-5", None, "7", 1e300])
def test_opacity_out_of_range_or_missing_renders(viz_root: Path, alpha: object) -> None:
    from segkit.viz.app import render_view

    viewer = Viewer(CaseIndex.build([viz_root]))
    figure, status, _ = render_view(viewer, LABELLED, "t1c", "axial", 5, ["on"], alpha, "fill", "off")
    assert len(figure["data"]) == 1, status


def test_viewer_service_rejects_non_finite_requests(viz_root: Path) -> None:
    viewer = Viewer(CaseIndex.build([viz_root]))
    for request in (
        ViewRequest(LABELLED, index=float("inf")),  # type: ignore[arg-type]
        ViewRequest(LABELLED, index=float("nan")),  # type: ignore[arg-type]
        ViewRequest(LABELLED, alpha=float("nan")),
        ViewRequest(LABELLED, alpha=float("-inf")),
    ):
        with pytest.raises(DataError, match="must be a finite number"):
            viewer.render(request)
    assert viewer.render(ViewRequest(LABELLED, index=-5, alpha=-5.0)).index == 0


@pytest.mark.parametrize("bad", [*BAD_NUMBERS, None])
def test_slice_slider_callback_never_raises(viz_root: Path, bad: object) -> None:
    from segkit.viz.app import slice_range

    viewer = Viewer(CaseIndex.build([viz_root]))
    count = SHAPE[2]
    for trigger in ("case", "axis", "slice-next", "slice-prev10", None):
        assert slice_range(viewer, LABELLED, "axial", trigger, bad, bad) is not None
        assert slice_range(viewer, LABELLED, "axial", trigger, 5, bad) is not None
        new_max, value = slice_range(viewer, LABELLED, "axial", trigger, bad, 19)  # type: ignore[misc]
        assert new_max == count - 1
        assert 0 <= value <= count - 1
    assert slice_range(viewer, LABELLED, "axial", "slice-next10", 5, 19) == (count - 1, 15)
    assert slice_range(viewer, LABELLED, "axial", "case", 19, 19) == (count - 1, count - 1)
    assert slice_range(viewer, LABELLED, "oblique", "case", 5, 19) is None


def test_render_route_with_non_finite_values(viz_root: Path) -> None:
    app = create_app(CaseIndex.build([viz_root]))
    for key, value in [
        ("slice.value", "nan"),
        ("slice.value", "1e400"),
        ("alpha.value", "inf"),
        ("alpha.value", "nan"),
    ]:
        response = _post(app, RENDER, {"case.value": LABELLED, **VIEW, key: value}, key)
        assert response["view"]["figure"]["data"] == []
        assert "finite number" in json.dumps(response["status"])


# --- the viewer service ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("shifted", "origin shifted by 30 mm"), ("rescaled", "voxel size 2x2x3 mm vs 1x1x1.5 mm")],
)
def test_misregistered_prediction_is_refused(viz_root: Path, tmp_path: Path, kind: str, reason: str) -> None:
    pred = write_misregistered(viz_root / LABELLED, tmp_path / kind, kind)
    viewer = Viewer(CaseIndex.build([viz_root], pred.parent))
    with pytest.raises(DataError, match="grid differs") as info:
        viewer.render(ViewRequest(LABELLED, pred_mode="errors"))
    assert str(info.value).startswith(f"{pred}: grid differs from {LABELLED}-t1c.nii.gz (")
    assert reason in str(info.value)
    from segkit.viz.app import render_view

    figure, status, _ = render_view(viewer, LABELLED, "all", "axial", 5, ["on"], 0.4, "fill", "beside")
    assert figure["data"] == []
    assert reason in str(status)


@pytest.mark.parametrize("value", [7, -1])
def test_label_maps_outside_the_brats_labels_are_refused(viz_root: Path, value: int) -> None:
    from segkit.data.cases import scan_case_folder
    from segkit.viz.volumes import load_case_volumes

    path = viz_root / LABELLED / f"{LABELLED}-seg.nii.gz"
    seg = read_volume(path)
    data = seg.data.astype(np.int16)
    data[0, 0, 0] = value
    write_volume(path, data, seg.affine)
    with pytest.raises(DataError, match=f"labels outside 0-4: {value}$") as info:
        load_case_volumes(scan_case_folder(viz_root / LABELLED), labels="required")
    assert str(info.value).startswith(f"{path}: ")


def test_prediction_views(viz_root: Path, predictions: Path) -> None:
    viewer = Viewer(CaseIndex.build([viz_root], predictions))
    base = ViewRequest(LABELLED, modality="t1c", index=10, alpha=1.0)
    single = viewer.render(base)
    beside = viewer.render(ViewRequest(LABELLED, modality="t1c", index=10, alpha=1.0, pred_mode="beside"))
    assert beside.image.shape[0] == 2 * single.image.shape[0] + 4  # prediction row below
    assert [p.kind for p in beside.panels] == ["ground truth", "prediction"]
    errors = viewer.render(ViewRequest(LABELLED, modality="t1c", index=10, alpha=1.0, pred_mode="errors"))
    volumes = viewer.volumes(LABELLED)
    codes = R.error_codes(
        R.display_slice(volumes.labels, "axial", 10), R.display_slice(volumes.prediction, "axial", 10)
    )
    for code in (R.TP, R.FP, R.FN):
        assert (errors.image[codes == code] == R.ERROR_COLOURS[code]).all()
    with pytest.raises(DataError, match="no prediction"):
        viewer.render(ViewRequest(SECOND, pred_mode="beside"))


def test_probe_reports_the_file_voxel(viz_root: Path) -> None:
    viewer = Viewer(CaseIndex.build([viz_root]))
    request = ViewRequest(LABELLED, modality="t2f", axis="coronal", index=9)
    rendered = viewer.render(request)
    text = viewer.probe(request, 6, 4)  # row 6, column 4: inside the only panel
    voxel = tuple(int(v) for v in text.split("(")[1].split(")")[0].split(","))
    t2f = read_volume(viz_root / LABELLED / f"{LABELLED}-t2f.nii.gz").data
    seg = read_volume(viz_root / LABELLED / f"{LABELLED}-seg.nii.gz").data
    assert f"t2f {float(t2f[voxel]):.6g}" in text
    assert f"label {int(seg[voxel])}" in text
    # LAS grid: image column 4 (patient's right side of the picture) is x = 23 - ... in RAS, file x = 4
    assert voxel[0] == 4
    assert voxel[1] == rendered.file_index
    assert viewer.probe(request, 10_000, 10_000) == ""


def test_volume_cache_is_least_recently_used(viz_root: Path) -> None:
    viewer = Viewer(CaseIndex.build([viz_root]), cache_cases=2)
    for case_id in (LABELLED, SECOND, LABELLED, UNLABELLED):
        viewer.volumes(case_id)
    assert viewer.cached_ids() == [LABELLED, UNLABELLED]


# --- the command -----------------------------------------------------------------------------------


def test_cli_builds_the_app_and_serves_on_loopback(run_cli, viz_root: Path, monkeypatch) -> None:
    import segkit.viz.server

    calls = []
    monkeypatch.setattr(segkit.viz.server, "serve", lambda app, **kw: calls.append((app, kw)))
    result = run_cli("viz", "app", "--data-root", viz_root)
    assert result.code == 0, result.err
    ((app, kwargs),) = calls
    assert kwargs == {"host": "127.0.0.1", "port": 8050, "debug": False, "open_browser": False}
    assert list(app.segkit_viewer.index.cases) == [LABELLED, SECOND, UNLABELLED]
    assert "http://127.0.0.1:8050/" in result.out
    run_cli("viz", "app", "--data-root", viz_root, "--port", "9000", "--open-browser", "--debug")
    assert calls[1][1] == {"host": "127.0.0.1", "port": 9000, "debug": True, "open_browser": True}


def test_cli_takes_several_roots_and_a_prediction_folder(run_cli, viz_root, predictions, tmp_path, monkeypatch):
    import segkit.viz.server
    from segkit.data.synth import write_cohort

    other = write_cohort(tmp_path / "validation_data", cases=1, shape=(16, 16, 16), seed=1, start=50).root
    calls = []
    monkeypatch.setattr(segkit.viz.server, "serve", lambda app, **kw: calls.append(app))
    result = run_cli("viz", "app", "--data-root", viz_root, other, "--pred-dir", predictions)
    assert result.code == 0, result.err
    index = calls[0].segkit_viewer.index
    assert index.roots == (viz_root, other)
    assert "BraTS-GLI-00050-000" in index.cases
    assert list(index.predictions) == [LABELLED]


def test_cli_without_roots(run_cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("viz", "app")
    assert result.code == 1
    assert "no data roots found" in result.err


def test_debug_mode_only_on_loopback(run_cli, viz_root: Path, monkeypatch) -> None:
    # Dash's debug mode enables Werkzeug's interactive debugger: code execution for whoever reaches it.
    from segkit.errors import ConfigError
    from segkit.viz import server

    app = create_app(CaseIndex.build([viz_root]))
    runs = []
    monkeypatch.setattr(app, "run", lambda **kw: runs.append(kw))
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        with pytest.raises(ConfigError, match="--debug only with a loopback --host"):
            server.serve(app, host=host, port=8051, debug=True)
    assert runs == []
    server.serve(app, host="localhost", port=8051, debug=True)
    assert runs[0]["debug"] is True
    monkeypatch.setattr(server, "serve", lambda app, **kw: runs.append(kw))
    for command in ("app", "stats"):
        result = run_cli("viz", command, "--data-root", viz_root, "--host", "0.0.0.0", "--debug")
        assert result.code == 2
        assert result.err.startswith("error: --debug only with a loopback --host (got 0.0.0.0)")
        assert "segkit" not in result.out  # refused before anything was built or announced
    assert len(runs) == 1


def test_serve_warns_off_loopback_and_never_checks_versions(monkeypatch, caplog, viz_root: Path) -> None:
    from segkit.viz import server

    app = create_app(CaseIndex.build([viz_root]))
    runs = []
    monkeypatch.setattr(app, "run", lambda **kw: runs.append(kw))
    server.serve(app, host="0.0.0.0", port=8051)
    assert runs == [{"host": "0.0.0.0", "port": 8051, "debug": False, "dev_tools_disable_version_check": True}]
    assert "anyone who can reach this machine" in caplog.text
    assert server.is_loopback("127.0.0.1")
    assert server.is_loopback("::1")
    assert not server.is_loopback("0.0.0.0")
    assert server.app_url("0.0.0.0", 8050) == "http://127.0.0.1:8050/"


# --- a real browser ----------------------------------------------------------------------------------


def _wait(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # the page is still rendering
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_viewer_in_a_headless_browser(viz_root: Path, predictions: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    app = create_app(CaseIndex.build([viz_root], predictions))
    with chrome() as driver, serve(app) as url:
        driver.get(url)

        def image() -> str:
            return driver.find_element(By.CSS_SELECTOR, "#view image").get_attribute("href")

        def label() -> str:
            return driver.find_element(By.ID, "slice-label").text

        first = _wait(image, what="the first slice")
        assert _wait(lambda: label().startswith("axial 10/19"), what="slider at the middle")

        # pick a case from the dropdown
        driver.find_element(By.ID, "case").click()
        option = _wait(
            lambda: next(o for o in driver.find_elements(By.CSS_SELECTOR, "[role=option]") if SECOND in o.text),
            what="dropdown options",
        )
        option.click()
        second = _wait(lambda: image() != first and image(), what="the second case")
        assert SECOND in driver.find_element(By.ID, "case").text

        # move the slider with its handle's keyboard support, then with the page's keys
        thumb = driver.find_element(By.CSS_SELECTOR, "#slice [role=slider]")
        start = int(thumb.get_attribute("aria-valuenow"))
        thumb.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
        _wait(lambda: int(thumb.get_attribute("aria-valuenow")) == start + 3, what="slider moved by 3")
        moved = _wait(lambda: image() != second and image(), what="a new slice")
        driver.find_element(By.TAG_NAME, "h2").click()  # focus the page, not a control
        ActionChains(driver).send_keys(Keys.PAGE_DOWN).perform()
        _wait(lambda: int(thumb.get_attribute("aria-valuenow")) == start + 3 - 10, what="PageDown: 10 back")
        _wait(lambda: image() != moved, what="the slice after PageDown")
        driver.find_element(By.ID, "slice-next").click()
        _wait(lambda: int(thumb.get_attribute("aria-valuenow")) == start + 3 - 9, what="+1 button")

        # voxel under the cursor
        graph = driver.find_element(By.CSS_SELECTOR, "#view .nsewdrag")
        first_panel = -int(graph.rect["width"] * 3 / 8)  # offsets are from the centre; four panels
        ActionChains(driver).move_to_element_with_offset(graph, first_panel, 5).perform()
        ActionChains(driver).move_to_element_with_offset(graph, first_panel + 2, 0).perform()
        info = _wait(lambda: driver.find_element(By.ID, "hover-info").text, what="hover information")
        assert info.startswith("voxel (")
        assert "label" in info

        # back to the case with a prediction, shown beside the ground truth
        driver.find_element(By.ID, "case").click()
        _wait(
            lambda: next(o for o in driver.find_elements(By.CSS_SELECTOR, "[role=option]") if LABELLED in o.text),
            what="dropdown options",
        ).click()
        single = _wait(
            lambda: png_size(image()) if LABELLED in driver.find_element(By.ID, "case").text else None,
            what="first case again",
        )
        driver.find_element(By.CSS_SELECTOR, "#pred-mode input[value=beside]").click()
        doubled = _wait(lambda: png_size(image())[1] > single[1] and png_size(image()), what="prediction row")
        assert doubled[1] == 2 * single[1] + 4
        before = image()
        driver.find_element(By.ID, "slice-next10").click()  # into the tumour for the screenshot
        _wait(lambda: image() != before, what="+10 button")
        path = screenshot(driver, "viewer")
        assert path.stat().st_size > 10_000
        assert console_errors(driver) == []
