"""`segkit data splits` equals nnU-Net's own split function and file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segkit.data.splits import nnunet_splits
from segkit.errors import DataError


def case_ids(n: int) -> list[str]:
    rng = __import__("random").Random(n)
    ids = [f"BraTS-GLI-{i:05d}-{rng.choice(['000', '100', '101'])}" for i in range(n)]
    rng.shuffle(ids)  # nnU-Net sorts; the order given must not matter
    return ids


@pytest.mark.parametrize("n", [5, 8, 37, 1251])
def test_equals_nnunet(n: int) -> None:
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    ids = case_ids(n)
    expected = generate_crossval_split(sorted(ids), seed=12345, n_splits=5)
    expected = [{"train": list(map(str, s["train"])), "val": list(map(str, s["val"]))} for s in expected]
    assert nnunet_splits(ids) == expected


def test_folds_partition_the_cases() -> None:
    ids = case_ids(37)
    splits = nnunet_splits(ids)
    vals = [i for s in splits for i in s["val"]]
    assert sorted(vals) == sorted(ids)
    for s in splits:
        assert sorted(s["train"] + s["val"]) == sorted(ids)


def test_fewer_cases_than_folds() -> None:
    with pytest.raises(DataError, match="needs at least 5 training cases, found 4") as info:
        nnunet_splits(case_ids(4))
    assert "--fold all" in (info.value.hint or "")


def prepared(run_cli, cohort: Path, tmp_path: Path) -> tuple[Path, Path]:
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    assert run_cli("data", "prepare", "--nnunet-raw", raw, "--train-sources", cohort, "--workers", "1").code == 0
    return raw, pre


def test_cli_writes_into_preprocessed(run_cli, cohort: Path, tmp_path: Path) -> None:
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    raw, pre = prepared(run_cli, cohort, tmp_path)
    result = run_cli("data", "splits", "--nnunet-raw", raw, "--nnunet-preprocessed", pre)
    assert result.code == 0, result.err
    path = pre / "Dataset501_BraTSPostTx" / "splits_final.json"
    written = json.loads(path.read_text())
    ids = sorted(p.name for p in cohort.iterdir() if p.is_dir())
    expected = generate_crossval_split(ids, seed=12345, n_splits=5)
    assert written == [{"train": list(s["train"]), "val": list(s["val"])} for s in expected]
    again = run_cli("data", "splits", "--nnunet-raw", raw, "--nnunet-preprocessed", pre)
    assert "unchanged" in again.out


def test_refuses_to_replace_different_splits(run_cli, cohort: Path, tmp_path: Path) -> None:
    raw, pre = prepared(run_cli, cohort, tmp_path)
    path = pre / "Dataset501_BraTSPostTx" / "splits_final.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps([{"train": ["a"], "val": ["b"]}]))
    result = run_cli("data", "splits", "--nnunet-raw", raw, "--nnunet-preprocessed", pre)
    assert result.code == 1
    assert "a different splits file already exists" in result.err
    assert json.loads(path.read_text()) == [{"train": ["a"], "val": ["b"]}]
    result = run_cli("data", "splits", "--nnunet-raw", raw, "--nnunet-preprocessed", pre, "--overwrite")
    assert result.code == 0
    assert len(json.loads(path.read_text())) == 5


def test_dataset_not_prepared(run_cli, tmp_path: Path) -> None:
    result = run_cli("data", "splits", "--nnunet-raw", tmp_path / "raw")
    assert result.code == 1
    assert "is not prepared" in result.err
