"""UMamba2 stages and recipe from segkit's side: options, trainer names, checks before work, stage records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from segkit.backends.base import DatasetRef, TrainRequest
from segkit.backends.nnunet import layout
from segkit.backends.umamba2 import UMamba2Backend
from segkit.backends.umamba2 import recipe as recipe_mod
from segkit.backends.umamba2.options import STAGE_TRAINERS, TRAINER, UMamba2Options
from segkit.errors import ConfigError, DataError
from segkit.progress import NullProgress

CONSISTENCY = STAGE_TRAINERS["consistency"]
PSEUDO = STAGE_TRAINERS["pseudolabel"]


def test_stage_and_recipe_choose_the_trainer() -> None:
    assert UMamba2Options().trainer == TRAINER
    assert UMamba2Options(stage="consistency").trainer == CONSISTENCY
    assert UMamba2Options(stage="pseudolabel").trainer == PSEUDO
    assert UMamba2Options(stage="pretrain").trainer == "nnUNetTrainerUMamba2Pretrain"
    # infer with --recipe: the final stage's model
    assert UMamba2Options(recipe="stsr2025").trainer == PSEUDO
    assert "trainer" in UMamba2Options(stage="consistency").model_fields_set


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"stage": "consistency", "recipe": "stsr2025"}, "runs its own stages"),
        ({"stage": "consistency", "trainer": "nnUNetTrainer"}, "disagree"),
        ({"pseudolabel_threshold": 0.9}, "applies to the consistency/pseudolabel"),
        ({"stage": "pretrain", "consistency_weight": 3.0}, "applies to the consistency/pseudolabel"),
        ({"stage": "consistency", "mask_ratio": 0.5}, "applies to the pretrain"),
        ({"stage": "pretrain", "mask_ratio": 1.0}, "mask_ratio"),
        ({"stage": "pretrain", "mask_ratio": 0.0}, "mask_ratio"),
        ({"stage": "consistency", "pseudolabel_threshold": 1.5}, "pseudolabel_threshold"),
        ({"stage": "consistency", "unlabelled_max_ratio": -0.1}, "unlabelled_max_ratio"),
        ({"stage": "consistency", "pseudolabel_epochs": 3}, "applies to the pseudolabel stage"),
        ({"stage": "sideways"}, "stage"),
        ({"recipe": "other"}, "recipe"),
    ],
)
def test_bad_stage_options(values: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        UMamba2Options(**values)


def test_stage_constants_name_the_trainer_and_read_back() -> None:
    opts = UMamba2Options(
        stage="pseudolabel", epochs=2, pseudolabel_threshold=0.9, pseudolabel_keep_background=False, perturb_skips=3
    )
    name = layout.derived_trainer_name(opts)
    assert name == f"{PSEUDO}_segkit_e2_k3_t0p9_b0"
    assert layout.trainer_overrides(opts) == {
        "num_epochs": 2,
        "pseudolabel_threshold": 0.9,
        "pseudolabel_keep_background": False,
        "perturb_skips": 3,
    }
    back = layout.options_for_trainer(UMamba2Options(), name)
    assert (back.trainer, back.epochs, back.pseudolabel_threshold) == (PSEUDO, 2, 0.9)
    assert (back.pseudolabel_keep_background, back.perturb_skips) == (False, 3)
    assert layout.derived_trainer_name(UMamba2Options(stage="consistency")) == CONSISTENCY


def test_for_stage_keeps_each_stage_its_own_settings() -> None:
    opts = UMamba2Options(
        recipe="stsr2025", epochs=4, pseudolabel_epochs=2, mask_ratio=0.4, pseudolabel_threshold=0.8,
        consistency_weight=10.0, iterations_per_epoch=3,
    )  # fmt: skip
    pre = opts.for_stage("pretrain")
    assert (pre.trainer, pre.epochs, pre.mask_ratio, pre.consistency_weight) == (
        STAGE_TRAINERS["pretrain"],
        4,
        0.4,
        None,
    )
    one = opts.for_stage("consistency")
    assert (one.trainer, one.epochs, one.mask_ratio, one.consistency_weight) == (CONSISTENCY, 4, None, 10.0)
    assert one.pseudolabel_threshold == 0.8  # a pseudo-label setting is also stage 1's (off there by default)
    two = opts.for_stage("pseudolabel")
    assert (two.trainer, two.epochs, two.iterations_per_epoch, two.recipe) == (PSEUDO, 2, 3, None)
    assert len({layout.derived_trainer_name(o) for o in (pre, one, two)}) == 3


# ---------------------------------------------------------------- checks before work


def _planned(tmp_path: Path, splits: list[dict] | None) -> DatasetRef:
    ds = DatasetRef("Dataset501_X", tmp_path / "raw", tmp_path / "pre", tmp_path / "res")
    (ds.raw_dir / "imagesTr").mkdir(parents=True)
    (ds.raw_dir / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz", "channel_names": {}}))
    data = ds.preprocessed_dir / "data_umamba2"
    data.mkdir(parents=True)
    for case in ("a", "b", "c", "d", "e", "u0"):
        (data / f"{case}.pkl").write_bytes(b"")
    arch = {"network_class_name": "segkit.backends.umamba2.network.UMambaBot2", "arch_kwargs": {}}
    configurations = {"3d_fullres_umamba2": {"data_identifier": "data_umamba2", "architecture": arch}}
    plans = {"plans_name": "nnUNetResEncUNetMPlans", "configurations": configurations}
    (ds.preprocessed_dir / "nnUNetResEncUNetMPlans.json").write_text(json.dumps(plans))
    if splits is not None:
        ds.splits_file.write_text(json.dumps(splits))
    return ds


def _check(ds: DatasetRef, **values: object) -> None:
    from segkit.backends.umamba2 import plans

    opts = UMamba2Options(**values)
    backend = UMamba2Backend()
    request = TrainRequest(dataset=ds, fold=0, device="cpu")
    real = plans.check_umamba2_configuration
    try:
        plans.check_umamba2_configuration = lambda *a, **k: None  # type: ignore[assignment]
        backend.check(request, opts)
    finally:
        plans.check_umamba2_configuration = real  # type: ignore[assignment]


def test_semi_stages_need_unlabelled_cases(tmp_path: Path) -> None:
    ds = _planned(tmp_path, [{"train": ["a", "b", "c", "d"], "val": ["e"]}])
    with pytest.raises(DataError, match="fold 0 has no unlabelled cases") as err:
        _check(ds, stage="consistency")
    assert "--unlabelled-sources" in (err.value.hint or "")
    _check(ds)  # supervised training needs none
    ds.splits_file.write_text(json.dumps([{"train": ["a"], "val": ["e"], "unlabeled": ["u0", "u9"]}]))
    with pytest.raises(DataError, match=r"not preprocessed, e\.g\. u9"):
        _check(ds, stage="pseudolabel")
    ds.splits_file.write_text(json.dumps([{"train": ["a"], "val": ["e"], "unlabeled": ["u0"]}]))
    _check(ds, stage="pseudolabel")


def test_recipe_refuses_before_pretraining_without_unlabelled_cases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segkit.backends.umamba2 import plans

    monkeypatch.setattr(plans, "check_umamba2_configuration", lambda *a, **k: None)
    ds = _planned(tmp_path, [{"train": ["a", "b", "c", "d"], "val": ["e"]}])
    with pytest.raises(DataError, match="no unlabelled cases"):
        UMamba2Backend().train(
            TrainRequest(dataset=ds, fold=0, device="cpu"), UMamba2Options(recipe="stsr2025"), progress=NullProgress()
        )
    assert not ds.results_dir.exists()


def test_pseudolabel_needs_a_stage1_model(tmp_path: Path) -> None:
    ds = _planned(tmp_path, [{"train": ["a"], "val": ["e"], "unlabeled": ["u0"]}])
    with pytest.raises(ConfigError, match="starts from a stage-1 model") as err:
        UMamba2Backend().train(
            TrainRequest(dataset=ds, fold=0, device="cpu"), UMamba2Options(stage="pseudolabel"), progress=NullProgress()
        )
    assert "--stage consistency" in (err.value.hint or "")
    assert not ds.results_dir.exists()


def test_stage_checkpoint_finds_the_one_trained_stage_model(tmp_path: Path) -> None:
    ds = _planned(tmp_path, None)
    opts = UMamba2Options(stage="pseudolabel")
    assert recipe_mod.stage_checkpoint(ds, opts, "consistency", 0) is None
    one = layout.model_dir(ds, UMamba2Options(stage="consistency", epochs=3)) / "fold_0"
    one.mkdir(parents=True)
    (one / "checkpoint_final.pth").write_bytes(b"")
    assert recipe_mod.stage_checkpoint(ds, opts, "consistency", 0) == one / "checkpoint_final.pth"
    assert recipe_mod.stage_checkpoint(ds, opts, "consistency", 1) is None
    other = layout.model_dir(ds, UMamba2Options(stage="consistency", epochs=5)) / "fold_0"
    other.mkdir(parents=True)
    (other / "checkpoint_final.pth").write_bytes(b"")
    with pytest.raises(DataError, match="2 trained consistency models"):
        recipe_mod.stage_checkpoint(ds, opts, "consistency", 0)


def test_stage_record_keeps_the_first_start_when_resumed(tmp_path: Path) -> None:
    recipe_mod.write_record(
        tmp_path, stage="consistency", trainer="T", started_from="/w.pth", recipe=None, resumed=False
    )
    recipe_mod.write_record(tmp_path, stage="consistency", trainer="T", started_from=None, recipe=None, resumed=True)
    record = json.loads((tmp_path / recipe_mod.RECORD).read_text())
    assert (record["stage"], record["started_from"], record["resumed"]) == ("consistency", "/w.pth", True)
    recipe_mod.write_record(tmp_path, stage="consistency", trainer="T", started_from=None, recipe=None, resumed=False)
    record = json.loads((tmp_path / recipe_mod.RECORD).read_text())
    assert record["started_from"] is None
    assert "resumed" not in record


def test_a_recipe_is_checked_as_its_first_pending_stage(tmp_path: Path) -> None:
    ds = _planned(tmp_path, [{"train": ["a"], "val": ["e"], "unlabeled": ["u0"]}])
    opts = UMamba2Options(recipe="stsr2025", epochs=1)
    backend = UMamba2Backend()
    request = TrainRequest(dataset=ds, fold=0, device="cpu")
    pending = backend._first_pending_stage(request, opts)
    assert pending is not None
    assert (pending.stage, pending.continue_training) == ("pretrain", False)
    for stage in ("pretrain", "consistency"):
        fold = layout.model_dir(ds, opts.for_stage(stage)) / "fold_0"
        fold.mkdir(parents=True)
        (fold / "checkpoint_final.pth").write_bytes(b"")
    two = layout.model_dir(ds, opts.for_stage("pseudolabel")) / "fold_0"
    two.mkdir(parents=True)
    (two / "checkpoint_latest.pth").write_bytes(b"")
    pending = backend._first_pending_stage(request, opts)
    assert pending is not None
    assert (pending.stage, pending.continue_training) == ("pseudolabel", False)
    resumed = backend._first_pending_stage(request, opts.model_copy(update={"continue_training": True}))
    assert resumed is not None
    assert resumed.continue_training
    (two / "checkpoint_final.pth").write_bytes(b"")
    assert backend._first_pending_stage(request, opts) is None
    assert backend._first_pending_stage(request, opts.model_copy(update={"overwrite": True})) is not None
