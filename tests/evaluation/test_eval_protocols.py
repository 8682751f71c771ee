"""``segkit eval`` with several lesion-wise protocols: plug-in reports, brats2025 variants, bad options."""

from __future__ import annotations

import csv
import json
import math

import pytest

from segkit.config.models import EvalConfig
from segkit.evaluation.cases import prediction_spacing
from segkit.io import read_labels
from segkit.metrics.panoptic import REGION_KEYS, VARIANTS, score_case
from segkit.metrics.protocols import BRATS2025_TASKS, PROTOCOLS


def _eval(run_cli, gt, pred, out, *extra):
    return run_cli("eval", gt, pred, "--output-dir", out, "--skip-nnunet", "--workers", "1", "--no-figure", *extra)


def test_every_task_has_its_regions() -> None:
    assert set(VARIANTS) == set(BRATS2025_TASKS)
    assert [r.name for r in PROTOCOLS["brats2025"].all_regions(EvalConfig(task="ped"))] == [
        "wt",
        "tc",
        "et",
        "netc",
        "cc",
        "ed",
    ]


def test_both_protocols_in_one_pass(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    out = tmp_path / "out"
    result = _eval(run_cli, gt, pred, out, "--protocol", "brats2024", "brats2025", "--json")
    assert result.code == 0, result.err
    first = json.loads((out / "lesion_metrics.json").read_text())
    second = json.loads((out / "lesion_metrics_brats2025.json").read_text())
    assert first["protocol"] == "brats2024"
    assert second["protocol"] == "brats2025"
    assert second["task"] == "gli"
    assert second["regions"] == ["wt", "tc", "netc", "snfh", "et", "rc"]
    case, entry = next(iter(second["cases"].items()))
    assert set(entry["metrics"]["wt"]) == set(REGION_KEYS)
    assert "lesionwise_dsc_mean_wt" in entry["table"]
    # The numbers of the report are those of the function on the same files.
    gt_volume = read_labels(gt / f"{case}.nii.gz")
    pred_volume = read_labels(pred / f"{case}.nii.gz")
    direct = score_case(gt_volume.data, pred_volume.data, prediction_spacing(pred_volume))
    for key in ("tp", "fp", "fn", "sq_dsc", "global_bin_dsc"):
        assert entry["metrics"]["et"][key] == pytest.approx(direct["et"].values[key], nan_ok=True)
    summary = json.loads(result.out)
    assert summary["protocols"] == ["brats2024", "brats2025"]
    assert summary["lesion_by_protocol"]["brats2025"]["wt"]["lesionwise_dsc_mean"]["n"] == 4
    manifest = json.loads((out / "full_metrics.json").read_text())
    assert manifest["outputs"]["lesion_metrics_brats2025"].endswith("lesion_metrics_brats2025.json")
    with (out / "per_case.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {"WT_LesionWise_Score_Dice", "all_instance_f1_wt", "global_hd95_et"} <= set(rows[0])
    assert all(not math.isinf(float(r["global_hd95_et"])) for r in rows)  # inf became 373


def test_brats2025_alone_and_its_console_table(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    out = tmp_path / "out"
    result = _eval(run_cli, gt, pred, out, "--protocol", "brats2025")
    assert result.code == 0, result.err
    assert "brats2025 lesion-wise metrics" in result.out
    assert "LW NSD" in result.out
    report = json.loads((out / "lesion_metrics.json").read_text())
    assert report["protocol"] == "brats2025"
    assert "hd95_penalty" not in report
    assert not (out / "lesion_metrics_brats2025.json").exists()


def test_task_variant_and_label_warnings(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    out = tmp_path / "out"
    result = _eval(run_cli, gt, pred, out, "--protocol", "brats2025", "--task", "MenRT", "--json")
    assert result.code == 0, result.err
    report = json.loads((out / "lesion_metrics.json").read_text())
    assert report["regions"] == ["gtv"]
    warnings = json.loads(result.out)["warnings"]
    assert sum("belong to no region" in w for w in warnings) == 1  # once per run, not per case


def test_mets_size_columns(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    out = tmp_path / "out"
    flags = ("--protocol", "brats2025", "--task", "mets", "--vol-threshold", "50", "--overlap-threshold", "0.1")
    result = _eval(run_cli, gt, pred, out, *flags)
    assert result.code == 0, result.err
    with (out / "per_case.csv").open() as handle:
        row = next(csv.DictReader(handle))
    assert {"small_instance_f1_et", "large_instance_tp_wt", "lesionwise_nsd_mean_rc"} <= set(row)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--protocol", "brats2030"), "unknown protocol 'brats2030'; available: brats2024, brats2025"),
        (("--task", "ped"), "--task belongs to protocol brats2025, which is not chosen"),
        (("--protocol", "brats2025", "--hd95-penalty", "337"), "--hd95-penalty belongs to protocol brats2024"),
        (("--protocol", "brats2025", "--task", "lung"), "unknown brats2025 task 'lung'"),
        (("--protocol", "brats2025", "--vol-threshold", "10"), "--vol-threshold and --overlap-threshold go together"),
        (("--protocol", "brats2025", "--task", "MenRT", "--labels", "3"), "labels [3] are not scored"),
    ],
)
def test_bad_protocol_options_are_one_line_errors(run_cli, label_pairs, tmp_path, flags, message) -> None:
    gt, pred = label_pairs
    out = tmp_path / "out"
    result = _eval(run_cli, gt, pred, out, *flags)
    assert result.code != 0
    assert message in result.err
    assert len([line for line in result.err.splitlines() if line.strip()]) <= 2  # the error and its hint
    assert not out.exists()


def test_old_config_with_one_protocol_name_loads(run_cli, label_pairs, tmp_path) -> None:
    gt, pred = label_pairs
    config = tmp_path / "run.yaml"
    config.write_text("eval:\n  protocol: brats2025\n  task: GoAT\n")
    out = tmp_path / "out"
    result = _eval(run_cli, gt, pred, out, "--config", config)
    assert result.code == 0, result.err
    assert json.loads((out / "lesion_metrics.json").read_text())["regions"] == ["wt", "tc", "et"]


def test_several_protocols_after_one_flag_leave_the_folders(run_cli, label_pairs, tmp_path) -> None:
    from segkit.cli._argv import expand_multi_value

    argv = ["eval", "--protocol", "brats2024", "brats2025", "gt", "pred"]
    assert expand_multi_value(argv) == ["eval", "--protocol", "brats2024", "--protocol", "brats2025", "gt", "pred"]
    gt, pred = label_pairs
    out = tmp_path / "out"
    flags = ("-o", out, "--skip-nnunet", "--no-figure")
    result = run_cli("eval", "--protocol", "brats2025", "brats2024", gt, pred, *flags)
    assert result.code == 0, result.err
    assert json.loads((out / "lesion_metrics_brats2024.json").read_text())["protocol"] == "brats2024"
