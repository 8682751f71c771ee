"""`segkit.backends.nnunet.slim`: weights-only checkpoints that nnU-Net's predictor accepts and that predict alike."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _nnunet_model import CONFIGURATION, MODEL_NAME, PATCH, TRAINER, build_network, full_checkpoint, write_model

from segkit.backends.nnunet.slim import SLIM_KEYS, SlimReport, slim_checkpoint, slim_model
from segkit.errors import ConfigError, DataError, OutputError


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two folds with checkpoint_final and checkpoint_best each (do not modify: copy it with `model`)."""
    return write_model(tmp_path_factory.mktemp("slim") / "res", folds=(0, 1))


@pytest.fixture
def model(tmp_path: Path, template: Path) -> Path:
    dst = tmp_path / "res" / MODEL_NAME
    shutil.copytree(template, dst)
    return dst


def digests(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder` (hidden ones included)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_full_checkpoints_of_the_fixture_need_weights_only_false(model: Path) -> None:
    """The fixture is realistic: nnU-Net's training log holds numpy floats, which weights_only=True refuses."""
    with pytest.raises(Exception, match="numpy"):
        torch.load(model / "fold_0" / "checkpoint_final.pth", weights_only=True)


def test_slim_copy_keeps_only_what_the_predictor_reads(model: Path, tmp_path: Path) -> None:
    before = digests(model)
    out = tmp_path / "slim"
    report = slim_model(model, output=out)
    assert digests(model) == before  # the original is untouched
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "dataset.json",
        "dataset_fingerprint.json",
        "fold_0",
        "fold_0/checkpoint_best.pth",
        "fold_0/checkpoint_final.pth",
        "fold_0/segkit_config.yaml",
        "fold_1",
        "fold_1/checkpoint_best.pth",
        "fold_1/checkpoint_final.pth",
        "fold_1/segkit_config.yaml",
        "plans.json",
    ]
    assert (out / "plans.json").read_bytes() == (model / "plans.json").read_bytes()
    assert [(f.source.relative_to(model), f.target.relative_to(out)) for f in report.files] == [
        (Path(f"fold_{k}/{n}"), Path(f"fold_{k}/{n}"))
        for k in (0, 1)
        for n in ("checkpoint_final.pth", "checkpoint_best.pth")
    ]
    assert not report.in_place
    for f in report.files:
        full = torch.load(f.source, weights_only=False)
        slim = torch.load(f.target, weights_only=True)
        assert tuple(slim) == SLIM_KEYS
        assert list(slim["network_weights"]) == list(full["network_weights"])
        for key, tensor in full["network_weights"].items():
            assert slim["network_weights"][key].dtype == tensor.dtype
            assert torch.equal(slim["network_weights"][key], tensor), key
        assert slim["init_args"] == {**full["init_args"], "device": "cpu"}
        assert slim["trainer_name"] == TRAINER
        assert slim["inference_allowed_mirroring_axes"] == (0, 1, 2)
        assert f.size_before == f.source.stat().st_size
        assert f.size_after == f.target.stat().st_size
        # the optimizer's momentum buffers are as large as the weights: slim is about half the size
        assert f.size_after < 0.6 * f.size_before
        assert not f.already_slim


def test_slim_weights_predict_exactly_what_the_full_ones_do(model: Path, tmp_path: Path) -> None:
    slim_model(model, output=tmp_path / "slim")
    x = torch.randn(1, 4, *PATCH)
    outputs = []
    for path in (model / "fold_1" / "checkpoint_best.pth", tmp_path / "slim" / "fold_1" / "checkpoint_best.pth"):
        checkpoint = torch.load(path, weights_only=path.is_relative_to(tmp_path / "slim"))
        network = build_network(checkpoint["init_args"]["plans"], deep_supervision=False)
        network.load_state_dict(checkpoint["network_weights"])
        with torch.no_grad():
            outputs.append(network.eval()(x))
    assert torch.equal(outputs[0], outputs[1])


def test_in_place_replaces_the_checkpoints_and_nothing_else(model: Path) -> None:
    before = digests(model)
    report = slim_model(model)
    assert report.in_place
    after = digests(model)
    changed = sorted(k for k in before if before[k] != after[k])
    assert changed == [f"fold_{k}/{n}" for k in (0, 1) for n in ("checkpoint_best.pth", "checkpoint_final.pth")]
    assert set(after) == set(before)  # no temporary file left, nothing removed
    for f in report.files:
        assert f.source == f.target
        assert set(torch.load(f.target, weights_only=True)) == set(SLIM_KEYS)
    assert report.size_after < report.size_before


def test_already_slim_is_nothing_to_do(model: Path) -> None:
    slim_model(model)
    before = {p: p.stat().st_mtime_ns for p in model.rglob("*.pth")}
    again = slim_model(model)
    assert again.nothing_to_do
    assert all(f.already_slim and f.size_before == f.size_after for f in again.files)
    assert {p: p.stat().st_mtime_ns for p in model.rglob("*.pth")} == before


def test_only_the_named_checkpoints_are_slimmed(model: Path, tmp_path: Path) -> None:
    before = digests(model)
    report = slim_model(model, checkpoints=["checkpoint_best.pth", "checkpoint_latest.pth"])
    assert [f.source.name for f in report.files] == ["checkpoint_best.pth"] * 2
    after = digests(model)
    assert after["fold_0/checkpoint_final.pth"] == before["fold_0/checkpoint_final.pth"]
    assert after["fold_0/checkpoint_best.pth"] != before["fold_0/checkpoint_best.pth"]
    out = tmp_path / "only_final"
    slim_model(model, output=out, checkpoints=["checkpoint_final.pth"])
    assert sorted(p.name for p in out.rglob("*.pth")) == ["checkpoint_final.pth"] * 2


def test_a_fold_all_model_is_slimmed(tmp_path: Path) -> None:
    model = write_model(tmp_path / "res", folds=("all",), checkpoints=("checkpoint_latest.pth",))
    report = slim_model(model, output=tmp_path / "out")
    assert [f.target.relative_to(tmp_path / "out") for f in report.files] == [Path("fold_all/checkpoint_latest.pth")]


def test_output_must_be_empty_unless_overwrite(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    slim_model(model, output=out)  # an empty folder is fine
    (out / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match=r"out: output folder is not empty$"):
        slim_model(model, output=out)
    assert (out / "keep.txt").is_file()
    report = slim_model(model, output=out, overwrite=True)
    assert isinstance(report, SlimReport)
    assert not (out / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_output_may_not_overlap_the_model_folder(model: Path, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="overlaps the model folder"):
        slim_model(model, output=model / "slim")
    with pytest.raises(OutputError, match="overlaps the model folder"):
        slim_model(model, output=model.parent, overwrite=True)  # would delete the model
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        slim_model(model, output=file, overwrite=True)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda m: shutil.rmtree(m), r": folder not found$"),
        (lambda m: (m / "plans.json").unlink(), r": not an nnU-Net model folder \(plans.json missing\)$"),
        (lambda m: (m / "dataset.json").unlink(), r": not an nnU-Net model folder \(dataset.json missing\)$"),
        (
            lambda m: [p.unlink() for p in m.rglob("*.pth")],
            r": not an nnU-Net model folder \(no fold_\*/checkpoint_final.pth or checkpoint_best.pth or",
        ),
    ],
    ids=["missing", "no-plans", "no-dataset-json", "no-checkpoints"],
)
def test_not_a_model_folder(model: Path, setup, message: str) -> None:
    setup(model)
    with pytest.raises(DataError, match=message):
        slim_model(model)


def test_a_file_is_not_a_model_folder(tmp_path: Path) -> None:
    (tmp_path / "x.pth").write_text("")
    with pytest.raises(DataError, match=r"x.pth: not a folder$"):
        slim_model(tmp_path / "x.pth")


@pytest.mark.parametrize("name", ["../checkpoint_final.pth", "fold_0/checkpoint_final.pth", "checkpoint", ".pth"])
def test_bad_checkpoint_names(model: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="not a checkpoint file name"):
        slim_model(model, checkpoints=[name])


def _break(model: Path, kind: str) -> Path:
    path = model / "fold_1" / "checkpoint_best.pth"  # the last one read
    if kind == "unreadable":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    elif kind == "not-nnunet":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    else:
        checkpoint = full_checkpoint(
            torch.load(model / "fold_0" / "checkpoint_final.pth", weights_only=False)["init_args"]["plans"]
        )
        checkpoint["init_args"]["device"] = Exotic()
        torch.save(checkpoint, path)
    return path


class Exotic:
    """A type a slim checkpoint has no plain form for (module-level so that it pickles)."""


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("unreadable", r"fold_1/checkpoint_best.pth: cannot read checkpoint \("),
        ("not-nnunet", r"fold_1/checkpoint_best.pth: not an nnU-Net checkpoint \(no network_weights\)$"),
        ("exotic", r"fold_1/checkpoint_best.pth: init_args\['device'\] is a Exotic, which a slim checkpoint"),
    ],
)
def test_a_bad_checkpoint_in_place_changes_nothing(model: Path, kind: str, message: str) -> None:
    _break(model, kind)
    before = digests(model)
    with pytest.raises(DataError, match=message):
        slim_model(model)
    assert digests(model) == before  # the three good checkpoints read before it are not replaced either


@pytest.mark.parametrize("kind", ["unreadable", "not-nnunet"])
def test_a_bad_checkpoint_leaves_no_partial_copy(model: Path, tmp_path: Path, kind: str) -> None:
    _break(model, kind)
    out = tmp_path / "out"
    with pytest.raises(DataError):
        slim_model(model, output=out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_view_into_a_larger_storage_is_stored_alone(tmp_path: Path) -> None:
    big = torch.arange(1000, dtype=torch.float32)
    checkpoint = {
        "network_weights": {"w": big[:4]},
        "init_args": {"configuration": CONFIGURATION},
        "trainer_name": TRAINER,
    }
    slim = slim_checkpoint(checkpoint, path=tmp_path / "c.pth")
    assert torch.equal(slim["network_weights"]["w"], big[:4])
    assert slim["network_weights"]["w"].untyped_storage().nbytes() == 16
    assert slim["inference_allowed_mirroring_axes"] is None


@pytest.mark.parametrize(
    ("checkpoint", "missing"),
    [
        ({"network_weights": {"w": np.zeros(2)}, "trainer_name": TRAINER, "init_args": {}}, "network_weights is not"),
        ({"network_weights": {}, "init_args": {"configuration": CONFIGURATION}}, "no trainer_name"),
        ({"network_weights": {}, "trainer_name": TRAINER}, "no init_args"),
        ({"network_weights": {}, "trainer_name": TRAINER, "init_args": {}}, "init_args has no configuration"),
    ],
)
def test_checkpoints_the_predictor_could_not_use(checkpoint: dict, missing: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"c.pth: not an nnU-Net checkpoint \\({missing}"):
        slim_checkpoint(checkpoint, path=tmp_path / "c.pth")


@pytest.mark.slow
def test_nnunet_predictor_predicts_the_same_from_a_slim_checkpoint_of_a_real_trainer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nnUNetTrainer.save_checkpoint writes the full file; nnUNetPredictor loads both and predicts identical labels."""
    from _nnunet_model import DATASET_JSON, tiny_plans
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    plans = tiny_plans()
    trainer = nnUNetTrainer({**plans, "continue_training": False}, CONFIGURATION, 0, DATASET_JSON, torch.device("cpu"))
    # initialize() would also open the preprocessed data; the network and optimizer are what the checkpoint holds
    trainer.network = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 4, 5)
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    trainer.network(torch.randn(1, 4, *PATCH))[0].mean().backward()
    trainer.optimizer.step()
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    model = Path(trainer.output_folder_base)
    (model / "plans.json").write_text(json.dumps(plans))
    (model / "dataset.json").write_text(json.dumps(DATASET_JSON))
    trainer.save_checkpoint(str(model / "fold_0" / "checkpoint_final.pth"))

    slim_model(model, output=tmp_path / "slim")
    image = np.random.default_rng(0).normal(size=(4, 20, 18, 16)).astype(np.float32)
    results = []
    for folder in (model, tmp_path / "slim"):
        predictor = nnUNetPredictor(
            tile_step_size=0.5, use_mirroring=True, device=torch.device("cpu"), allow_tqdm=False
        )
        predictor.initialize_from_trained_model_folder(
            str(folder), use_folds=(0,), checkpoint_name="checkpoint_final.pth"
        )
        assert predictor.allowed_mirroring_axes == (0, 1, 2)
        results.append(
            predictor.predict_single_npy_array(image, {"spacing": [1.0, 1.0, 1.0]}, save_or_return_probabilities=True)
        )
    (full_labels, full_probabilities), (slim_labels, slim_probabilities) = results
    assert full_labels.shape == (20, 18, 16)
    assert np.array_equal(full_labels, slim_labels)
    assert np.array_equal(full_probabilities, slim_probabilities)  # bit-identical, not merely the same argmax
