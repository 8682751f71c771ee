"""``segkit eval`` end to end on small files: reports, exit codes, bad input, missing/extra predictions."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _helpers import spacing_phantom
from _helpers import write_nifti as write_label

from segkit.metrics.lesionwise import OFFICIAL_KEYS, score_case

REPORTS = ("lesion_metrics.json", "nnunet_metrics.json", "full_metrics.json", "per_case.csv", "lesion_metrics.png")


def _eval(run_cli, gt: Path, pred: Path, out: Path, *extra: str):
    return run_cli("eval", gt, pred, "--output-dir", out, "--skip-nnunet", "--workers", "1", *extra)


def _cases(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.nii.gz"))


def test_writes_every_report(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    out = tmp_path / "out"
    result = _eval(run_cli, gt, pred, out, "--pretty")
    assert result.code == 0, result.err
    for name in REPORTS:
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    lesion = json.loads((out / "lesion_metrics.json").read_text())
    assert lesion["regions"] == ["WT", "TC", "NETC", "SNFH", "ET", "RC"]
    assert set(lesion["cases"]) == {p.name[: -len(".nii.gz")] for p in _cases(gt)}
    for stats in lesion["summary"]["ET"].values():
        assert set(stats) == {"mean", "median", "min", "max", "std", "n"}
    first = next(iter(lesion["cases"].values()))
    assert set(first["metrics"]["WT"]) == set(OFFICIAL_KEYS)
    nnunet = json.loads((out / "nnunet_metrics.json").read_text())
    assert list(nnunet) == ["foreground_mean", "mean", "metric_per_case"]
    assert set(nnunet["mean"]) == {"1", "2", "3", "4", "(1, 2, 3)", "(1, 3)"}
    manifest = json.loads((out / "full_metrics.json").read_text())
    assert manifest["protocol"] == "brats2024"
    assert manifest["hd95_penalty"]["setting"] == "auto"
    assert manifest["hd95_penalty"]["used"] == {f"{np.sqrt(3 * 32**2):g}": "volume diagonal"}
    assert manifest["nnunet_check"]["status"] == "skipped"
    assert set(manifest["timing"]["per_case"]) == set(lesion["cases"])
    assert manifest["segkit_version"]
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert len(rows) == 4
    assert rows[0]["status"] == "ok"
    assert (out / "lesion_metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "lesion-wise metrics" in result.out
    assert "ET" in result.out


def test_report_numbers_equal_the_metric_functions(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    out = tmp_path / "out"
    assert _eval(run_cli, gt, pred, out, "--hd95-penalty", "337").code == 0
    lesion = json.loads((out / "lesion_metrics.json").read_text())
    for path in _cases(gt):
        case = path.name[: -len(".nii.gz")]
        g = np.asarray(nib.load(str(path)).dataobj)
        p = np.asarray(nib.load(str(pred / path.name)).dataobj)
        direct = score_case(g, p, (1.0, 1.0, 1.0), penalty=337.0)
        assert lesion["cases"][case]["metrics"] == json.loads(json.dumps(direct.regions))
        assert lesion["cases"][case]["hd95_penalty"] == 337.0


def test_half_millimetre_cases_use_the_prediction_spacing(run_cli, tmp_path) -> None:
    # Known answer at 0.5 mm: a 100-voxel GT lesion is 12.5 mm³ and leaves the means (threshold 20 mm³),
    # while a 30-voxel prediction lesion survives the prediction filter (20 voxels) as a false positive.
    gt_data, pred_data = spacing_phantom()
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    write_label(tmp_path / "gt" / "case.nii.gz", gt_data, affine)
    write_label(tmp_path / "pred" / "case.nii.gz", pred_data, affine)
    out = tmp_path / "out"
    assert _eval(run_cli, tmp_path / "gt", tmp_path / "pred", out, "--hd95-penalty", "100").code == 0
    case = json.loads((out / "lesion_metrics.json").read_text())["cases"]["case"]
    assert case["spacing_mm"] == [0.5, 0.5, 0.5]
    wt = case["metrics"]["WT"]
    assert wt["GT_Complete_Volume"] == pytest.approx(1100 * 0.125)
    assert (wt["Num_TP"], wt["Num_FP"], wt["Num_FN"]) == (1, 1, 0)
    assert wt["LesionWise_Score_Dice"] == pytest.approx(0.5)
    assert wt["LesionWise_Score_HD95"] == pytest.approx(50.0)
    assert [row["counted"] for row in case["lesions"] if row["Label"] == "WT"] == [True, False]


def test_json_summary_on_stdout(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    result = _eval(run_cli, gt, pred, tmp_path / "out", "--json")
    assert result.code == 0
    summary = json.loads(result.out)
    assert summary["cases"] == {
        "reference": 4,
        "scored": 4,
        "missing_predictions": 0,
        "unusable_predictions": 0,
        "extra_predictions": 0,
        "failed": 0,
    }
    assert summary["lesion"]["WT"]["LesionWise_Score_Dice"]["n"] == 4
    assert summary["outputs"]["full_metrics"].endswith("full_metrics.json")


def test_labels_and_omit_aggregates(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    out = tmp_path / "out"
    assert _eval(run_cli, gt, pred, out, "--labels", "1", "3", "--omit-aggregates").code == 0
    lesion = json.loads((out / "lesion_metrics.json").read_text())
    assert lesion["regions"] == ["NETC", "ET"]
    assert set(json.loads((out / "nnunet_metrics.json").read_text())["mean"]) == {"1", "3"}


def test_output_overrides_and_no_figure(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    out = tmp_path / "out"
    other = tmp_path / "elsewhere"
    result = _eval(
        run_cli,
        gt,
        pred,
        out,
        "--lesion-output",
        other / "lw.json",
        "--nnunet-output",
        other / "nn.json",
        "--combined-output",
        other / "all.json",
        "--no-figure",
    )
    assert result.code == 0, result.err
    assert sorted(p.name for p in other.iterdir()) == ["all.json", "lw.json", "nn.json"]
    assert sorted(p.name for p in out.iterdir()) == ["per_case.csv"]
    assert json.loads((other / "all.json").read_text())["outputs"]["figure"] is None


def test_missing_prediction_is_scored_as_empty_and_extra_is_listed(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    files = _cases(pred)
    missing = files[0]
    gt_labels = np.asarray(nib.load(str(gt / missing.name)).dataobj)
    missing.unlink()
    files[1].rename(pred / files[1].name.replace(".nii.gz", "_pred.nii.gz"))  # suffix still matches
    write_label(pred / "stranger.nii.gz", np.zeros((4, 4, 4), np.uint8), np.eye(4))
    out = tmp_path / "out"
    result = _eval(run_cli, gt, pred, out)
    assert result.code == 0
    assert "without a prediction" in result.err
    assert "stranger.nii.gz" in result.err
    lesion = json.loads((out / "lesion_metrics.json").read_text())
    case = missing.name[: -len(".nii.gz")]
    assert lesion["missing_predictions"] == [case]
    assert lesion["cases"][case]["status"] == "missing_prediction"
    empty = score_case(gt_labels, np.zeros_like(gt_labels), (1.0, 1.0, 1.0), penalty=np.sqrt(3 * 32**2))
    assert lesion["cases"][case]["metrics"] == json.loads(json.dumps(empty.regions))
    assert lesion["extra_predictions"][0].endswith("stranger.nii.gz")
    assert lesion["summary"]["WT"]["LesionWise_Score_Dice"]["n"] == 4  # the missing case is in the means
    nnunet = json.loads((out / "nnunet_metrics.json").read_text())
    assert len(nnunet["metric_per_case"]) == 4


def _corrupt(path: Path) -> None:
    path.write_bytes(gzip.compress(b"not a nifti header at all" * 20))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _shape(path: Path) -> None:
    write_label(path, np.zeros((30, 32, 32), np.uint8), np.diag([-1.0, 1, 1, 1]))


def _affine(path: Path) -> None:
    img = nib.load(str(path))
    affine = img.affine.copy()
    affine[0, 3] += 2.0
    write_label(path, np.asarray(img.dataobj), affine)


def _spacing(path: Path) -> None:
    img = nib.load(str(path))
    affine = img.affine.copy()
    affine[:3, 0] *= 2.0
    write_label(path, np.asarray(img.dataobj), affine)


def _float_labels(path: Path) -> None:
    img = nib.load(str(path))
    data = np.asarray(img.dataobj).astype(np.float32)
    data[16, 16, 16] = 1.5
    write_label(path, data, img.affine)


def _range_labels(path: Path) -> None:
    img = nib.load(str(path))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 7
    write_label(path, data, img.affine)


BAD_INPUTS = {
    "corrupt file": (_corrupt, "not a readable NIfTI"),
    "truncated file": (_truncate, "truncated or corrupt"),
    "shape mismatch": (_shape, "grid differs from the reference's (shape (30, 32, 32) vs (32, 32, 32))"),
    "affine mismatch": (_affine, "grid differs from the reference's (origin shifted by 2 mm"),
    "spacing mismatch": (_spacing, "grid differs from the reference's (voxel size 2x1x1 mm vs 1x1x1 mm"),
    "non-integer labels": (_float_labels, "label map is not integer-valued (e.g. 1.5)"),
    "out-of-range labels": (_range_labels, "labels outside 0-4: 7"),
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_prediction_is_reported_and_the_rest_scored(run_cli, label_pairs, tmp_path, kind) -> None:
    damage, reason = BAD_INPUTS[kind]
    gt, pred = label_pairs
    bad = _cases(pred)[2]
    damage(bad)
    out = tmp_path / "out"
    result = _eval(run_cli, gt, pred, out)
    assert result.code == 0, result.err
    case = bad.name[: -len(".nii.gz")]
    lesion = json.loads((out / "lesion_metrics.json").read_text())
    assert lesion["cases"][case]["status"] == "unusable_prediction"
    assert reason in lesion["unusable_predictions"][case]
    assert reason in lesion["cases"][case]["reason"]
    assert "\n" not in lesion["unusable_predictions"][case]
    assert lesion["failed"] == {}
    assert sum(c["status"] == "ok" for c in lesion["cases"].values()) == 3
    assert lesion["summary"]["WT"]["LesionWise_Score_Dice"]["n"] == 4  # every reference case counts
    assert f"warning: {case}:" in result.err
    manifest = json.loads((out / "full_metrics.json").read_text())
    assert case in manifest["cases"]["unusable_predictions"]
    row = next(r for r in csv.DictReader((out / "per_case.csv").open()) if r["case"] == case)
    assert row["status"] == "unusable_prediction"
    assert reason in row["reason"]

    strict = _eval(run_cli, gt, pred, tmp_path / "strict", "--strict")
    assert strict.code == 1
    lines = [line for line in strict.err.splitlines() if line.strip()]
    assert lines[0].startswith(f"error: {case}:")
    assert reason in lines[0]
    assert not (tmp_path / "strict").exists()  # no report, and no empty folder left behind


def test_bad_reference_file_is_reported(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    bad = _cases(gt)[0]
    _range_labels(bad)
    out = tmp_path / "out"
    result = _eval(run_cli, gt, pred, out)
    assert result.code == 1  # a reference that cannot be read cannot be scored: the run fails ...
    case = bad.name[: -len(".nii.gz")]
    assert result.err.splitlines()[-2].startswith(f"error: 1 reference case(s) could not be scored, first {case}: ")
    assert "Traceback" not in result.err
    failed = json.loads((out / "lesion_metrics.json").read_text())["failed"]  # ... but the reports list it
    assert list(failed) == [case]
    assert failed[case].startswith("reference ")
    assert json.loads((out / "full_metrics.json").read_text())["cases"]["scored"] == 3


def test_duplicate_prediction_ids(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    first = _cases(pred)[0]
    case = first.name[: -len(".nii.gz")]
    (pred / f"{case}_pred.nii.gz").write_bytes(first.read_bytes())
    out = tmp_path / "out"
    result = _eval(run_cli, gt, pred, out)
    assert result.code == 0
    lesion = json.loads((out / "lesion_metrics.json").read_text())
    assert "duplicate case id in the predictions" in lesion["unusable_predictions"][case]
    assert lesion["cases"][case]["status"] == "unusable_prediction"
    assert lesion["summary"]["WT"]["LesionWise_Score_Dice"]["n"] == 4
    strict = _eval(run_cli, gt, pred, tmp_path / "strict", "--strict")
    assert strict.code == 1
    assert "duplicate case id" in strict.err
    assert not (tmp_path / "strict").exists()


def test_empty_reference_folder_is_one_line_error(run_cli, tmp_path) -> None:
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    result = _eval(run_cli, tmp_path / "gt", tmp_path / "pred", tmp_path / "out")
    assert result.code == 1
    assert result.err.splitlines()[0].startswith("error: ")
    assert "no reference label files" in result.err
    assert not (tmp_path / "out" / "full_metrics.json").exists()


def test_empty_prediction_folder(run_cli, label_pairs, tmp_path) -> None:
    gt, _ = label_pairs
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    result = _eval(run_cli, gt, empty, out)
    assert result.code == 1
    first = result.err.splitlines()[0]
    assert first.startswith(f"error: {empty}: no prediction file matches any of the 4 reference case(s)")
    assert "(0 prediction file(s) found)" in first
    assert not out.exists()  # nothing written, no empty report folder left behind


def test_predictions_named_for_other_cases(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    for path in _cases(pred):
        path.rename(pred / f"other-{path.name}")
    result = _eval(run_cli, gt, pred, tmp_path / "out")
    assert result.code == 1
    assert "no prediction file matches any of the 4 reference case(s) (4 prediction file(s) found)" in result.err


def test_missing_arguments_and_bad_options_are_usage_errors(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    result = run_cli("eval")
    assert result.code == 2
    assert "no reference folder given" in result.err
    bad_penalty = _eval(run_cli, gt, pred, tmp_path / "o", "--hd95-penalty", "far")
    assert bad_penalty.code == 2
    assert "eval.hd95_penalty" in bad_penalty.err
    bad_label = _eval(run_cli, gt, pred, tmp_path / "o", "--labels", "5")
    assert bad_label.code == 2
    assert "eval.labels" in bad_label.err
    for value in ("inf", "1e400", "nan", "-inf", "0"):
        result = _eval(run_cli, gt, pred, tmp_path / "o", "--hd95-penalty", value)
        assert result.code == 2, value
        assert "eval.hd95_penalty" in result.err
    assert not (tmp_path / "o").exists()


def test_output_is_the_old_scripts_name_for_lesion_output(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    target = tmp_path / "elsewhere" / "x.json"
    result = run_cli("eval", gt, pred, "--output", target, "--output-dir", tmp_path / "out", "--skip-nnunet", "-j", "1")
    assert result.code == 0, result.err
    assert set(json.loads(target.read_text())["cases"]) == {p.name[: -len(".nii.gz")] for p in _cases(gt)}
    assert not (tmp_path / "out" / "lesion_metrics.json").exists()


def test_config_file_and_precedence(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    config = tmp_path / "run.yaml"
    config.write_text(
        f"version: 1\neval:\n  gt: {gt}\n  pred: {pred}\n  output_dir: from_yaml\n  hd95_penalty: 200\n"
        "  skip_nnunet: true\n  figure: false\n  workers: 1\n"
    )
    result = run_cli("eval", "--config", config, "--set", "eval.hd95_penalty=250", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["hd95_penalty"] == {"setting": 250.0, "used": {"250": "explicit"}}
    assert Path(summary["outputs"]["full_metrics"]).parent == tmp_path / "from_yaml"
    flag = run_cli("eval", "--config", config, "--hd95-penalty", "300", "--json", "--overwrite")
    assert json.loads(flag.out)["hd95_penalty"]["setting"] == 300.0


def test_failed_report_writing_leaves_old_reports(run_cli, label_pairs, tmp_path, monkeypatch) -> None:
    gt, pred = label_pairs
    out = tmp_path / "out"
    assert _eval(run_cli, gt, pred, out).code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import segkit.evaluation.figure

    def broken(*args, **kwargs):
        raise RuntimeError("figure exploded")

    monkeypatch.setattr(segkit.evaluation.figure, "render_png", broken)
    with pytest.raises(RuntimeError, match="figure exploded"):
        _eval(run_cli, gt, pred, out, "--hd95-penalty", "10", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_parallel_workers_give_the_same_numbers(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    assert _eval(run_cli, gt, pred, tmp_path / "one").code == 0
    result = run_cli("eval", gt, pred, "--output-dir", tmp_path / "two", "--skip-nnunet", "--workers", "2")
    assert result.code == 0
    one = json.loads((tmp_path / "one" / "lesion_metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "lesion_metrics.json").read_text())
    assert one["cases"] == two["cases"]
    assert one["summary"] == two["summary"]


def test_eval_is_a_top_level_command(run_cli) -> None:
    assert "eval" in run_cli("--help").out
    usage = run_cli("eval", "--help")
    assert usage.code == 0
    assert "GT" in usage.out
    assert "--hd95-penalty" in usage.out


def test_library_api_with_explicit_paths(label_pairs, tmp_path) -> None:
    # How `segkit infer --run-evaluation` calls it: a config with gt, pred and output folder set.
    from segkit import api
    from segkit.config import load_config
    from segkit.progress import RecordingProgress

    gt, pred = label_pairs
    out = tmp_path / "reports"
    cfg = load_config(
        sets=[f"eval.gt={gt}", f"eval.pred={pred}", f"eval.output_dir={out}", "eval.skip_nnunet=true", "eval.workers=1"]
    )
    progress = RecordingProgress()
    result = api.evaluate(cfg, progress=progress)
    assert result.paths.combined == out / "full_metrics.json"
    assert result.paths.combined.is_file()
    assert len(result.evaluation.scored) == 4
    assert result.summary["cases"]["scored"] == 4
    assert ("start", "scoring cases", 4) in progress.events
    assert sum(1 for e in progress.events if e[0] == "advance") == 4


def test_library_api_needs_both_folders() -> None:
    from segkit import api
    from segkit.config import load_config
    from segkit.errors import ConfigError

    with pytest.raises(ConfigError, match="no prediction folder given"):
        api.evaluate(load_config(sets=["eval.gt=somewhere"]))


def test_no_reference_readable_writes_reports_and_fails(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    for path in _cases(gt):
        _corrupt(path)
    out = tmp_path / "out"
    result = _eval(run_cli, gt, pred, out)
    assert result.code == 1
    first = _cases(gt)[0]
    line = next(x for x in result.err.splitlines() if x.startswith("error: "))
    assert line.startswith(f"error: 4 reference case(s) could not be scored, first {first.name[: -len('.nii.gz')]}: ")
    assert "not a readable NIfTI" in line
    assert "Traceback" not in result.err
    assert len(json.loads((out / "lesion_metrics.json").read_text())["failed"]) == 4


@pytest.mark.parametrize(
    ("flags", "code", "message"),
    [
        (("--nnunet-output", "{out}/taken"), 1, "{out}/taken: is a folder, not a report file"),
        (("--lesion-output", "{out}/r/full_metrics.json"), 2, "two reports would be written to the same file"),
        (("--output-dir", "{gt}/reports"), 1, "the output overlaps the reference folder {gt}"),
    ],
)
def test_report_paths_are_checked_before_scoring(run_cli, label_pairs, tmp_path, flags, code, message) -> None:
    gt, pred = label_pairs
    (tmp_path / "taken").mkdir()
    fill = {"out": tmp_path, "gt": gt}
    flags = tuple(f.format(**fill) for f in flags)
    before = sorted(p.name for p in gt.iterdir())
    result = run_cli("eval", gt, pred, "--output-dir", tmp_path / "r", "--skip-nnunet", "-j", "1", *flags)
    assert result.code == code, result.err
    assert message.format(**fill) in result.err.splitlines()[0]
    assert not (tmp_path / "r").exists()
    assert list((tmp_path / "taken").iterdir()) == []
    assert sorted(p.name for p in gt.iterdir()) == before
