"""Cohort statistics (`segkit data stats`): known answers, problems recorded, cache hits and misses."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from segkit.data.stats import (
    PERCENTILES,
    case_statistics,
    compute_stats,
    dataset_stats,
    label_volumes,
    load_cached,
    modality_stats,
    summarise,
)
from segkit.errors import DataError
from segkit.io import read_volume


def test_label_volumes_known_answer() -> None:
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[:2, :5, :4] = 1  # 40 voxels
    labels[5:, :, :2] = 2  # 100
    labels[9, 9, 1] = 3  # 1, replacing an SNFH voxel
    volumes = label_volumes(labels, (1.0, 1.0, 1.5))
    assert volumes["NETC"] == {"voxels": 40, "ml": pytest.approx(0.06)}
    assert volumes["SNFH"]["voxels"] == 99  # one SNFH voxel was overwritten by ET
    assert volumes["ET"]["voxels"] == 1
    assert volumes["RC"] == {"voxels": 0, "ml": 0.0}
    assert volumes["WT"]["voxels"] == 140
    assert volumes["TC"]["voxels"] == 41
    assert volumes["WT"]["ml"] == pytest.approx(140 * 1.5 / 1000)


def test_modality_stats_use_non_zero_voxels() -> None:
    data = np.zeros((4, 5, 6))
    data.ravel()[:100] = np.arange(1, 101)
    stats = modality_stats(data, bins=10)
    assert stats.voxels == 100
    assert stats.min == 1.0
    assert stats.max == 100.0
    assert stats.mean == pytest.approx(50.5)
    assert stats.percentiles["p50"] == pytest.approx(50.5)
    assert list(stats.percentiles) == [f"p{p:g}" for p in PERCENTILES]
    assert stats.hist_counts == [10] * 10
    assert stats.hist_edges[0] == 1.0
    assert stats.hist_edges[-1] == 100.0
    empty = modality_stats(np.zeros(8))
    assert empty.voxels == 0
    assert np.isnan(empty.mean)


def test_case_statistics_match_the_files(cohort: Path) -> None:
    from segkit.data.cases import scan_case_folder

    case = scan_case_folder(cohort / "BraTS-GLI-00000-000")
    stats = case_statistics(case, bins=16)
    seg = read_volume(case.seg)
    counts = np.bincount(seg.data.ravel(), minlength=5)
    assert [stats.labels[name]["voxels"] for name in ("NETC", "SNFH", "ET", "RC")] == list(counts[1:5])
    assert stats.shape == [24, 24, 24]
    assert stats.spacing == [1.0, 1.0, 1.0]
    t2f = read_volume(case.images["t2f"]).data
    assert stats.modalities["t2f"].voxels == int((t2f != 0).sum())
    assert stats.modalities["t2f"].percentiles["p99"] == pytest.approx(np.percentile(t2f[t2f != 0], 99))
    assert sum(stats.modalities["t2f"].hist_counts) == stats.modalities["t2f"].voxels
    assert stats.missing == []
    assert stats.errors == []


def test_missing_and_unreadable_files_are_recorded(cohort: Path) -> None:
    (cohort / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t2w.nii.gz").unlink()
    broken = cohort / "BraTS-GLI-00002-000" / "BraTS-GLI-00002-000-t1n.nii.gz"
    broken.write_bytes(gzip.compress(b"not a nifti"))
    (cohort / "BraTS-GLI-00003-000" / "BraTS-GLI-00003-000-seg.nii.gz").unlink()
    stats = compute_stats([cohort], workers=1)
    by_id = {c.case_id: c for c in stats.cases}
    assert by_id["BraTS-GLI-00001-000"].missing == ["t2w"]
    assert "t2w" not in by_id["BraTS-GLI-00001-000"].modalities
    assert by_id["BraTS-GLI-00002-000"].errors[0].startswith(f"{broken}: ")
    assert by_id["BraTS-GLI-00003-000"].labels is None
    summary = summarise(stats.cases)
    assert summary["cases"] == 6
    assert summary["labelled"] == 5
    assert summary["unlabelled"] == 1
    assert [p["case"] for p in summary["problems"]] == ["BraTS-GLI-00001-000", "BraTS-GLI-00002-000"]
    assert summary["shapes"] == {"24x24x24": 6}
    assert summary["intensity"]["t2w"]["p50"]["n"] == 5


@pytest.mark.parametrize(
    ("value", "dtype", "problem"),
    [
        (7, np.int16, "labels outside 0-4: 7"),
        (-1, np.int16, "labels outside 0-4: -1"),
        (1.5, np.float32, "label map is not integer-valued (e.g. 1.5)"),
    ],
)
def test_a_bad_label_map_is_a_problem_of_its_case_not_clipped(cohort: Path, value, dtype, problem) -> None:
    from segkit.io import write_volume

    seg_path = cohort / "BraTS-GLI-00004-000" / "BraTS-GLI-00004-000-seg.nii.gz"
    seg = read_volume(seg_path)
    data = seg.data.astype(dtype)
    data[0, 0, 0] = value
    write_volume(seg_path, data, seg.affine)
    stats = compute_stats([cohort], workers=1)
    bad = next(c for c in stats.cases if c.case_id == "BraTS-GLI-00004-000")
    assert bad.labels is None  # no numbers from a map that is not one
    assert bad.errors == [f"{seg_path}: {problem}"]
    summary = summarise(stats.cases)
    assert [p["case"] for p in summary["problems"]] == ["BraTS-GLI-00004-000"]
    assert summary["labelled"] == 5


def test_summary_aggregates(cohort: Path) -> None:
    stats = compute_stats([cohort], workers=1)
    summary = summarise(stats.cases)
    medians = [c.modalities["t1c"].percentiles["p50"] for c in stats.cases]
    assert summary["intensity"]["t1c"]["p50"]["median"] == pytest.approx(float(np.median(medians)))
    wt = [c.labels["WT"]["ml"] for c in stats.cases]
    assert summary["label_volumes"]["WT"]["max"] == pytest.approx(max(wt))
    assert summary["label_volumes"]["WT"]["present"] == sum(1 for v in wt if v > 0)


def test_cache_hit_miss_and_recompute(cohort: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = dataset_stats([cohort], cache_dir=cache, workers=1)
    assert first.source == "computed"
    assert first.cache_path is not None
    assert first.cache_path.parent == cache
    second = dataset_stats([cohort], cache_dir=cache, workers=1)
    assert second.source == "cache"
    assert second.stats == first.stats
    # touching one file changes the key
    seg = cohort / "BraTS-GLI-00004-000" / "BraTS-GLI-00004-000-seg.nii.gz"
    st = seg.stat()
    os.utime(seg, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert load_cached([cohort], cache) is None
    stale = load_cached([cohort], cache, stale_ok=True)
    assert stale is not None
    assert stale.source == "stale-cache"
    third = dataset_stats([cohort], cache_dir=cache, workers=1)
    assert third.source == "computed"
    assert third.stats.key != first.stats.key
    assert dataset_stats([cohort], cache_dir=cache, recompute=True, workers=1).source == "computed"
    assert len(list(cache.glob("stats-*.json"))) == 2
    # other bins are another key
    assert load_cached([cohort], cache, bins=32) is None


def test_damaged_cache_file_is_ignored(cohort: Path, tmp_path: Path) -> None:
    first = dataset_stats([cohort], cache_dir=tmp_path, workers=1)
    first.cache_path.write_text("{broken", encoding="utf-8")
    assert dataset_stats([cohort], cache_dir=tmp_path, workers=1).source == "computed"


def test_pool_gives_the_same_numbers(cohort: Path) -> None:
    serial = compute_stats([cohort], workers=1)
    pooled = compute_stats([cohort], workers=2)
    assert [c.case_id for c in pooled.cases] == [c.case_id for c in serial.cases]
    assert pooled.cases == serial.cases


def test_empty_and_missing_roots(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no case folders found in"):
        compute_stats([tmp_path / "empty"])
    with pytest.raises(DataError, match="data root not found"):
        compute_stats([tmp_path / "nope"])


def test_cli_json_and_table(run_cli, cohort: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = run_cli("data", "stats", cohort, "--cache-dir", cache, "-j", "1", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["source"] == "computed"
    assert data["summary"]["cases"] == 6
    assert len(data["cases"]) == 6
    assert set(data["cases"][0]["labels"]) >= {"NETC", "SNFH", "ET", "RC", "WT", "TC"}
    again = json.loads(run_cli("data", "stats", cohort, "--cache-dir", cache, "--json").out)
    assert again["source"] == "cache"
    table = run_cli("data", "stats", cohort, "--cache-dir", cache)
    assert table.code == 0
    assert "6 cases (6 labelled)" in table.out
    assert "label volumes (ml)" in table.out
    nocache = run_cli("data", "stats", cohort, "--no-cache", "-j", "1", "--cache-dir", tmp_path / "c2", "--json")
    assert json.loads(nocache.out)["source"] == "computed"
    assert not (tmp_path / "c2").exists()


def test_cli_without_roots(run_cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("data", "stats")
    assert result.code == 1
    assert "no data roots found" in result.err
