"""`segkit.api.predict`: results with their folds and scores, and one report folder per fold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import segkit.backends.registry as registry
from segkit import api
from segkit.config import load_config
from segkit.errors import ConfigError
from segkit.testing import fake_entry_points


@pytest.fixture
def trained(cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "discover", fake_entry_points)
    api.prepare(config(cohort))
    api.train(config(cohort))
    return cohort


def config(cohort: Path, **flags: Any):
    base = {
        "prepare.train_sources": [cohort],
        "prepare.test_sources": [],
        "prepare.workers": 1,
        "train.backend": "fake",
        "train.fold": [0, 1],
        "train.device": "cpu",
        "infer.backend": "fake",
        "infer.device": "cpu",
        "infer.input": [cohort],
        "infer.ground_truth": cohort,
        "eval.skip_nnunet": True,
        "eval.workers": 1,
    }
    return load_config(flags={**base, **flags})


def test_fold_template_writes_each_folds_reports_apart(trained: Path, tmp_path: Path) -> None:
    flags = {
        "infer.fold": [0, 1],
        "infer.output": tmp_path / "p" / "fold{fold}",
        "infer.run_evaluation": True,
        "infer.evaluation_output": tmp_path / "R",
    }
    results = api.predict(config(trained, **flags))
    assert [r.folds for r in results] == [(0,), (1,)]
    for fold, result in enumerate(results):
        assert result.output_dir == tmp_path / "p" / f"fold{fold}"
        assert result.evaluation is not None
        assert result.evaluation.paths.combined.parent == tmp_path / "R" / f"fold{fold}"
        assert (tmp_path / "R" / f"fold{fold}" / "lesion_metrics.json").is_file()
    assert not (tmp_path / "R" / "lesion_metrics.json").exists()


def test_fold_placeholder_in_the_report_folder_is_honoured(trained: Path, tmp_path: Path) -> None:
    flags = {
        "infer.fold": [0, 1],
        "infer.output": tmp_path / "p" / "fold{fold}",
        "infer.run_evaluation": True,
        "infer.evaluation_output": tmp_path / "reports_{fold}",
    }
    results = api.predict(config(trained, **flags))
    assert [r.evaluation.paths.combined.parent for r in results if r.evaluation] == [
        tmp_path / "reports_0",
        tmp_path / "reports_1",
    ]


def test_one_prediction_folder_keeps_the_report_folder_and_defaults(trained: Path, tmp_path: Path) -> None:
    (ensemble,) = api.predict(config(trained, **{"infer.fold": [0, 1], "infer.output": tmp_path / "e"}))
    assert ensemble.folds == (0, 1)
    assert ensemble.evaluation is None
    flags = {"infer.fold": 0, "infer.output": tmp_path / "one", "infer.run_evaluation": True}
    (one,) = api.predict(config(trained, **flags))
    assert one.evaluation is not None
    assert one.evaluation.paths.combined.parent == tmp_path / "one-evaluation"


def test_fold_placeholder_in_reports_of_an_ensemble_is_refused_before_predicting(trained: Path, tmp_path: Path) -> None:
    flags = {
        "infer.fold": [0, 1],
        "infer.output": tmp_path / "e",
        "infer.run_evaluation": True,
        "infer.evaluation_output": tmp_path / "R{fold}",
    }
    with pytest.raises(ConfigError, match=r"has \{fold\} but the prediction ensembles folds \(0, 1\)"):
        api.predict(config(trained, **flags))
    assert not (tmp_path / "e").exists()


def test_default_folds_are_the_trained_ones(trained: Path, tmp_path: Path) -> None:
    (result,) = api.predict(config(trained, **{"infer.output": tmp_path / "d"}))
    assert result.folds == (0, 1)
