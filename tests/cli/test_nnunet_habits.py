"""nnU-Net habits: ``-d 501``, exported ``nnUNet_*`` folders as a config layer, and the folder flags."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import segkit.backends.registry as registry
from segkit.testing import FakeBackend, fake_entry_points

REAL_DISCOVER = registry.discover


@pytest.fixture
def with_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake backend, here with a planning step (it checks that the raw dataset is there)."""
    monkeypatch.setattr(registry, "discover", lambda: {**REAL_DISCOVER(), **fake_entry_points()})
    monkeypatch.setattr(FakeBackend, "capabilities", dataclasses.replace(FakeBackend.capabilities, prepare=True))


@pytest.fixture
def exported(cohort: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A dataset prepared into folders given by flag, which are then exported like an nnU-Net user does."""
    monkeypatch.chdir(tmp_path)
    nn = tmp_path / "my_nnunet"
    result = run_cli("data", "prepare", "--workers", "1", "--nnunet-raw", nn / "raw")
    assert result.code == 0, result.err
    monkeypatch.setenv("nnUNet_raw", str(nn / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(nn / "preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(nn / "results"))
    return nn


def _sources(out: str) -> dict[str, str]:
    tail = out.split("# where the values come from (anything not listed: default):\n")[1]
    return dict(line.removeprefix("#   ").split(": ", 1) for line in tail.splitlines())


def test_config_show_takes_exported_folders_from_the_environment(exported: Path, run_cli) -> None:
    result = run_cli("config", "show")
    assert result.code == 0, result.err
    assert f"raw: {exported / 'raw'}" in result.out
    assert f"results: {exported / 'results'}" in result.out
    assert _sources(result.out) == {
        "nnunet.raw": "environment",
        "nnunet.preprocessed": "environment",
        "nnunet.results": "environment",
    }


def test_yaml_set_and_flag_beat_the_environment(exported: Path, tmp_path: Path, run_cli) -> None:
    config = tmp_path / "cfg" / "run.yaml"
    config.parent.mkdir()
    config.write_text("nnunet:\n  raw: yaml_raw\n  results: yaml_results\n")
    result = run_cli(
        "config", "show", "--config", config, "--set", "nnunet.results=set_results", "--nnunet-preprocessed", "pp"
    )
    assert result.code == 0, result.err
    assert f"raw: {tmp_path / 'cfg' / 'yaml_raw'}" in result.out
    assert "results: set_results" in result.out
    assert "preprocessed: pp" in result.out
    assert _sources(result.out) == {"nnunet.raw": str(config), "nnunet.preprocessed": "flag", "nnunet.results": "--set"}


@pytest.mark.parametrize("given", ["501", "Dataset501", "Dataset501_BraTSPostTx"])
def test_dataset_number_resolves_on_config_show(exported: Path, run_cli, given: str) -> None:
    result = run_cli("config", "show", "-d", given)
    assert result.code == 0, result.err
    assert "dataset: Dataset501_BraTSPostTx" in result.out


def test_unknown_and_ambiguous_dataset_numbers(exported: Path, run_cli) -> None:
    result = run_cli("config", "show", "-d", "502")
    assert result.code == 2
    first = result.err.splitlines()[0]
    assert first.startswith("error: dataset 502: no Dataset502_* folder in ")
    assert str(exported / "raw") in first
    assert "Traceback" not in result.err
    (exported / "results" / "Dataset501_Other").mkdir(parents=True)
    result = run_cli("train", "-d", "501")
    assert result.code == 2
    assert result.err.splitlines()[0].startswith(
        "error: dataset 501 is ambiguous: Dataset501_BraTSPostTx, Dataset501_Other (in "
    )


def test_plan_train_infer_with_dataset_number(with_fake, exported: Path, tmp_path: Path, run_cli) -> None:
    # data prepare wrote to --nnunet-raw; with the folders exported, plan finds the dataset by number
    result = run_cli("data", "plan", "-d", "501", "--set", "plan.backend=fake", "--json")
    assert result.code == 0, result.err
    result = run_cli("data", "plan", "-d", "501", "--set", "plan.backend=fake", "--nnunet-raw", tmp_path / "empty")
    assert result.code == 2
    assert result.err.startswith("error: dataset 501: no Dataset501_* folder in ")
    result = run_cli("train", "-d", "501", "--backend", "fake", "--fold", "0", "--device", "cpu", "--json")
    assert result.code == 0, result.err
    assert Path(json.loads(result.out)[0]["model_dir"]) == exported / "results" / "Dataset501_BraTSPostTx" / "fake"
    result = run_cli(
        "infer", "-d", "Dataset501", "--backend", "fake", "-i", "training_data", "-o", "preds", "--fold", "0"
    )
    assert result.code == 0, result.err
    assert len(list((tmp_path / "preds").glob("*.nii.gz"))) == 6


def test_folder_flags_on_plan_train_and_infer(with_fake, cohort: Path, tmp_path: Path, run_cli, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    raw, results = tmp_path / "elsewhere" / "raw", tmp_path / "elsewhere" / "results"
    assert run_cli("data", "prepare", "--workers", "1", "--nnunet-raw", raw).code == 0
    result = run_cli("data", "plan", "--nnunet-raw", raw, "--set", "plan.backend=fake")
    assert result.code == 0, result.err
    args = ["--backend", "fake", "--fold", "0", "--nnunet-raw", raw, "--nnunet-results", results, "-d", "501"]
    result = run_cli("train", *args, "--device", "cpu")
    assert result.code == 0, result.err
    assert (results / "Dataset501_BraTSPostTx" / "fake" / "fold_0" / "model.json").is_file()
    result = run_cli("infer", *args, "-i", "training_data", "-o", "preds", "--nnunet-preprocessed", tmp_path / "pp")
    assert result.code == 0, result.err
