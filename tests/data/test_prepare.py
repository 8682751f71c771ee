"""`segkit data prepare`: nnU-Net raw layout, links, dataset.json, staleness, and bad inputs."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from _helpers import make_case, snapshot
from corruptions import ALL, duplicate_into, missing_seg

DATASET = "Dataset501_BraTSPostTx"


def raw_leftovers(raw: Path) -> list[str]:
    return sorted(p.name for p in raw.iterdir()) if raw.exists() else []


def prepare(run_cli, raw: Path, *args):
    return run_cli("data", "prepare", "--nnunet-raw", raw, "--workers", "1", *args)


def test_layout_links_and_dataset_json(cohort: Path, tmp_path: Path, run_cli) -> None:
    test_root = tmp_path / "validation_data"
    make_case(test_root, "BraTS-GLI-00100-000", shape=(24, 24, 24))
    make_case(test_root, "BraTS-GLI-00101-000", shape=(24, 24, 24), labelled=False)
    before = snapshot(cohort, test_root)
    raw = tmp_path / "raw"
    result = prepare(run_cli, raw, "--train-sources", cohort, "--test-sources", test_root)
    assert result.code == 0, result.err
    ds = raw / DATASET
    ids = sorted(p.name for p in cohort.iterdir() if p.is_dir())
    assert sorted(p.name for p in (ds / "labelsTr").iterdir()) == [f"{i}.nii.gz" for i in ids]
    assert len(list((ds / "imagesTr").iterdir())) == 4 * len(ids)
    assert sorted(p.name for p in (ds / "labelsTs").iterdir()) == ["BraTS-GLI-00100-000.nii.gz"]
    assert len(list((ds / "imagesTs").iterdir())) == 8
    # channel order 0 t1n, 1 t1c, 2 t2w, 3 t2f, as hard links to the raw files
    case = ids[0]
    for channel, modality in enumerate(("t1n", "t1c", "t2w", "t2f")):
        linked = ds / "imagesTr" / f"{case}_{channel:04d}.nii.gz"
        assert os.path.samefile(linked, cohort / case / f"{case}-{modality}.nii.gz")
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "t1n", "1": "t1c", "2": "t2w", "3": "t2f"}
    assert meta["labels"] == {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3, "RC": 4}
    assert meta["numTraining"] == 6
    assert meta["file_ending"] == ".nii.gz"
    assert meta["segkit"]["test_cases"] == ["BraTS-GLI-00100-000", "BraTS-GLI-00101-000"]
    assert meta["segkit"]["labelled_test_cases"] == ["BraTS-GLI-00100-000"]
    assert raw_leftovers(raw) == [DATASET]
    assert snapshot(cohort, test_root) == before


def test_copy_fallback(cohort: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    result = prepare(run_cli, tmp_path / "raw", "--train-sources", cohort, "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert (out["links"], out["copies"]) == (0, 30)
    linked = tmp_path / "raw" / DATASET / "labelsTr"
    assert all(not os.path.samefile(p, cohort / p.name[:-7] / f"{p.name[:-7]}-seg.nii.gz") for p in linked.iterdir())


def test_require_test_labels(cohort: Path, tmp_path: Path, run_cli) -> None:
    test_root = tmp_path / "validation_data"
    make_case(test_root, "BraTS-GLI-00101-000", shape=(24, 24, 24), labelled=False)
    raw = tmp_path / "raw"
    result = prepare(run_cli, raw, "--train-sources", cohort, "--test-sources", test_root, "--require-test-labels")
    assert result.code == 1
    assert "BraTS-GLI-00101-000" in result.err
    assert "missing segmentation" in result.err
    assert raw_leftovers(raw) == []


def test_multi_value_flag_syntax_of_the_seed(cohort: Path, tmp_path: Path, run_cli) -> None:
    second = tmp_path / "training_data_additional"
    make_case(second, "BraTS-GLI-00200-000", shape=(24, 24, 24))
    result = prepare(run_cli, tmp_path / "raw", "--train-sources", cohort, second, "--clean", "--json")
    assert result.code == 0, result.err
    assert len(json.loads(result.out)["training_cases"]) == 7


def test_stale_cases_need_clean(cohort: Path, tmp_path: Path, run_cli) -> None:
    raw = tmp_path / "raw"
    assert prepare(run_cli, raw, "--train-sources", cohort).code == 0
    # same sources again: rebuilt in place
    result = prepare(run_cli, raw, "--train-sources", cohort)
    assert result.code == 0
    assert result.out.startswith("rebuilt")
    # drop a case from the sources: refuses without --clean, naming the stale case
    victim = sorted(p for p in cohort.iterdir() if p.is_dir())[-1]
    import shutil

    shutil.rmtree(victim)
    result = prepare(run_cli, raw, "--train-sources", cohort)
    assert result.code == 1
    assert victim.name in result.err
    assert "--clean" in result.err
    assert (raw / DATASET / "labelsTr" / f"{victim.name}.nii.gz").exists()
    result = prepare(run_cli, raw, "--train-sources", cohort, "--clean")
    assert result.code == 0
    assert not (raw / DATASET / "labelsTr" / f"{victim.name}.nii.gz").exists()
    assert raw_leftovers(raw) == [DATASET]


def test_refuses_to_replace_a_foreign_folder(cohort: Path, tmp_path: Path, run_cli) -> None:
    target = tmp_path / "raw" / DATASET
    target.mkdir(parents=True)
    (target / "mine.txt").write_text("x")
    result = prepare(run_cli, tmp_path / "raw", "--train-sources", cohort)
    assert result.code == 1
    assert "is not an nnU-Net dataset" in result.err
    assert (target / "mine.txt").exists()


@pytest.mark.parametrize("corrupt", [*ALL, missing_seg], ids=lambda f: f.__name__)
def test_bad_input_leaves_nothing(cohort: Path, tmp_path: Path, run_cli, corrupt) -> None:
    folder = sorted(p for p in cohort.iterdir() if p.is_dir())[2]
    kind, message = corrupt(folder)
    before = snapshot(cohort)
    raw = tmp_path / "raw"
    result = prepare(run_cli, raw, "--train-sources", cohort)
    assert result.code == 1
    first = result.err.splitlines()[0]
    assert first.startswith(f"error: {folder.name}: ")
    assert f"{folder.name}-{kind}.nii.gz" in first
    assert message in first
    assert raw_leftovers(raw) == []
    assert snapshot(cohort) == before


def test_duplicate_ids(cohort: Path, tmp_path: Path, run_cli) -> None:
    other = tmp_path / "validation_data"
    other.mkdir()
    case_id = duplicate_into(cohort, other)
    result = prepare(run_cli, tmp_path / "raw", "--train-sources", cohort, "--test-sources", other)
    assert result.code == 1
    assert result.err.startswith(f"error: {case_id}: duplicate case id")
    assert raw_leftovers(tmp_path / "raw") == []


@pytest.mark.parametrize("name", ["Dataset5_X", "Task501_X", "Dataset501-X", "Dataset501_"])
def test_bad_dataset_id(cohort: Path, tmp_path: Path, run_cli, name: str) -> None:
    result = prepare(run_cli, tmp_path / "raw", "--train-sources", cohort, "--dataset-id", name)
    assert result.code == 2
    assert "DatasetNNN_Name" in result.err
    assert raw_leftovers(tmp_path / "raw") == []


def test_dataset_number_already_used(cohort: Path, tmp_path: Path, run_cli) -> None:
    (tmp_path / "raw" / "Dataset501_Other").mkdir(parents=True)
    result = prepare(run_cli, tmp_path / "raw", "--train-sources", cohort)
    assert result.code == 2
    assert "Dataset501_Other" in result.err


def test_output_not_writable(cohort: Path, tmp_path: Path, run_cli) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = prepare(run_cli, blocker / "raw", "--train-sources", cohort)
    assert result.code == 1
    assert "output folder is not writable" in result.err
    assert str(blocker) in result.err


def test_refuses_to_write_into_a_data_root(cohort: Path, run_cli) -> None:
    before = snapshot(cohort)
    result = prepare(run_cli, cohort, "--train-sources", cohort)
    assert result.code == 1
    assert "overlaps the data root" in result.err
    assert snapshot(cohort) == before


def test_no_training_cases(tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("data", "prepare")
    assert result.code == 2
    assert "no training sources" in result.err


def test_default_roots_and_yaml_config(cohort: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "run.yaml").write_text(
        "dataset: Dataset502_Synth\nnnunet:\n  raw: ../outputs/raw\nprepare:\n  workers: 1\n"
    )
    monkeypatch.chdir(tmp_path)
    result = run_cli("data", "prepare", "--config", configs / "run.yaml")
    assert result.code == 0, result.err
    assert (tmp_path / "outputs" / "raw" / "Dataset502_Synth" / "dataset.json").is_file()


def test_region_labels_round_trip_through_nnunet(cohort: Path, tmp_path: Path, run_cli) -> None:
    """nnU-Net's own LabelManager reads segkit's region dataset.json and restores BraTS labels."""
    import numpy as np
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    result = prepare(run_cli, tmp_path / "raw", "--train-sources", cohort, "--regions")
    assert result.code == 0, result.err
    meta = json.loads((tmp_path / "raw" / DATASET / "dataset.json").read_text())
    manager = LabelManager(meta["labels"], meta["regions_class_order"])
    assert manager.has_regions
    labels = np.random.default_rng(0).integers(0, 5, size=(6, 7, 8))
    regions = [np.isin(labels, r) for r in ([1, 2, 3], [1, 3], [3], [4])]
    probabilities = np.stack(regions).astype(np.float32)
    restored = manager.convert_probabilities_to_segmentation(probabilities)
    assert np.array_equal(restored, labels)
