"""Self-supervised pretraining (nnUNetTrainerUMamba2Pretrain): masks, noise, loss, schedule, splits, accumulation,
a tiny real run on CPU (loss falls, checkpoints, --continue) and its weights loaded into the stage-1 network."""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nnunetv2")

from _umamba2 import DATASET, PATCH, nnunet_folders, tiny_network, tiny_plans, tiny_trainer  # noqa: E402
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform  # noqa: E402
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform  # noqa: E402
from batchgeneratorsv2.transforms.utils.random import RandomTransform  # noqa: E402

from segkit.backends.umamba2 import pretrain  # noqa: E402
from segkit.backends.umamba2.pretrain import (  # noqa: E402
    HEAD,
    add_reconstruction_head,
    check_learning_rates,
    check_mask_patch_size,
    check_mask_ratio,
    check_noise_std,
    check_warmup_epochs,
    corrupt,
    cube_mask,
    fold_unlabelled,
    nnUNetTrainerUMamba2Pretrain,
    reconstruction_loss,
    restore,
    warmup_cosine_lr,
)
from segkit.backends.umamba2.pretrained import HEAD_MARKER, apply_pretrained  # noqa: E402
from segkit.backends.umamba2.trainer import nnUNetTrainerUMamba2  # noqa: E402

# ---------------------------------------------------------------------------------------------------------
# Masking and noise


@pytest.mark.parametrize(
    ("spatial", "size", "ratio"),
    [
        ((32, 32, 32), 16, 0.3),
        ((64, 64, 48), 16, 0.3),
        ((20, 24, 16), 4, 0.5),
        ((30, 17, 9), 8, 0.3),
        ((32, 48), 16, 0.3),
    ],
)
def test_mask_ratio_is_the_cubes_ratio(spatial: tuple[int, ...], size: int, ratio: float) -> None:
    mask = cube_mask(3, spatial, size, ratio, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (3, 1, *spatial)
    assert mask.dtype == torch.bool
    cubes = math.prod(math.ceil(s / size) for s in spatial)
    fractions = mask.float().mean(dim=tuple(range(1, mask.ndim)))
    if all(s % size == 0 for s in spatial):  # DAE's count of masked cubes, exactly
        assert torch.allclose(fractions, torch.tensor(math.ceil(ratio * cubes) / cubes))
    # At least the ratio, and less than one (whole) cube more.
    assert torch.all(fractions >= ratio)
    assert torch.all(fractions < ratio + size ** len(spatial) / math.prod(spatial))


def test_large_patch_is_masked_at_the_requested_ratio() -> None:
    mask = cube_mask(2, (128, 128, 128), 16, 0.3, generator=torch.Generator().manual_seed(1))
    fractions = mask.float().mean(dim=(1, 2, 3, 4))
    assert torch.all((fractions - 0.3).abs() < 0.002)  # 512 cubes: ceil(153.6) = 154 of them


def test_masks_are_aligned_cubes_of_the_patch_size() -> None:
    size = 4
    mask = cube_mask(2, (12, 8, 16), size, 0.3, generator=torch.Generator().manual_seed(3))
    for sample in mask[:, 0]:
        grid = sample.reshape(3, size, 2, size, 4, size)
        # Every aligned cube is wholly masked or wholly kept.
        per_cube = grid.float().mean(dim=(1, 3, 5))
        assert set(per_cube.unique().tolist()) <= {0.0, 1.0}
        assert int(per_cube.sum()) == math.ceil(0.3 * 24)
    assert not torch.equal(mask[0], mask[1])  # independent per sample


def test_masks_are_deterministic_with_a_seeded_generator() -> None:
    def make(seed: int) -> torch.Tensor:
        return cube_mask(4, (32, 32, 32), 8, 0.3, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(make(7), make(7))
    assert not torch.equal(make(7), make(8))


def test_corrupt_zeroes_masked_voxels_and_adds_noise_of_the_given_std() -> None:
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(2, 4, 32, 32, 32, generator=g) + 3.0
    mask = cube_mask(2, (32, 32, 32), 16, 0.3, generator=g)
    only_masked = corrupt(clean, mask, 0.0)
    full = mask.expand_as(clean)
    assert torch.all(only_masked[full] == 0)  # every channel of a masked voxel
    assert torch.equal(only_masked[~full], clean[~full])

    noisy = corrupt(clean, mask, 0.5, generator=torch.Generator().manual_seed(1))
    noise = noisy - only_masked
    assert float(noise.std()) == pytest.approx(0.5, rel=0.01)
    assert abs(float(noise.mean())) < 0.01
    again = corrupt(clean, mask, 0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(noisy, again)


def test_the_recipes_noise_is_daes_default_variance() -> None:
    assert nnUNetTrainerUMamba2Pretrain.noise_std == pytest.approx(math.sqrt(0.1))
    assert nnUNetTrainerUMamba2Pretrain.mask_patch_size == 16
    assert nnUNetTrainerUMamba2Pretrain.mask_ratio == 0.3


def test_reconstruction_loss_is_l1_over_all_or_masked_voxels() -> None:
    clean = torch.zeros(1, 2, 4, 4, 4)
    restored = torch.ones(1, 2, 4, 4, 4)
    mask = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    mask[..., :2] = True
    restored[..., :2] = 3.0  # masked voxels off by 3, the others by 1
    assert float(reconstruction_loss(restored, clean)) == pytest.approx(2.0)
    assert float(reconstruction_loss(restored, clean, mask)) == pytest.approx(3.0)
    assert reconstruction_loss(restored.half(), clean.half()).dtype == torch.float32


@pytest.mark.parametrize(
    ("check", "bad", "match"),
    [
        (check_mask_ratio, 0, "between 0 and 1"),
        (check_mask_ratio, 1.0, "between 0 and 1"),
        (check_mask_ratio, -0.2, "between 0 and 1"),
        (check_mask_ratio, 1.5, "between 0 and 1"),
        (check_mask_ratio, float("nan"), "finite"),
        (check_mask_ratio, "0.3", "number"),
        (check_mask_ratio, True, "number"),
        (check_mask_patch_size, 0, "at least 1"),
        (check_mask_patch_size, 2.5, "integer"),
        (check_noise_std, -0.1, "at least 0"),
        (check_warmup_epochs, -1, "at least 0"),
    ],
)
def test_constants_out_of_range_are_rejected(check: Any, bad: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check(bad)


def test_valid_constants_pass_through() -> None:
    assert check_mask_ratio(0.3) == 0.3
    assert check_mask_patch_size(np.int64(16)) == 16
    assert check_noise_std(0) == 0.0
    assert check_warmup_epochs(0) == 0
    assert check_learning_rates(5e-5, 5e-6, 5e-7) == (5e-5, 5e-6, 5e-7)
    with pytest.raises(ValueError, match="min_lr"):
        check_learning_rates(1e-4, 1e-3)
    with pytest.raises(ValueError, match="initial_lr"):
        check_learning_rates(0, 0)


# ---------------------------------------------------------------------------------------------------------
# Schedule


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_min_lr() -> None:
    lrs = [warmup_cosine_lr(e, 200, 5e-5, 5e-6, 4, 5e-7) for e in range(200)]
    assert lrs[0] == pytest.approx(5e-7)
    steps = np.diff(lrs[:5])
    assert np.allclose(steps, steps[0])  # linear up to the peak
    assert lrs[4] == pytest.approx(5e-5)
    assert max(lrs) == pytest.approx(5e-5)
    assert lrs[-1] == pytest.approx(5e-6)  # the cosine ends at min_lr on the last epoch
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))  # monotone decay after warm-up
    middle = 4 + (199 - 4) / 2
    assert warmup_cosine_lr(int(middle), 200, 5e-5, 5e-6, 4, 5e-7) == pytest.approx(
        5e-6 + 0.5 * (5e-5 - 5e-6) * (1 + math.cos(math.pi * (int(middle) - 4) / 195))
    )
    assert warmup_cosine_lr(250, 200, 5e-5, 5e-6, 4) == pytest.approx(5e-6)  # past the schedule


def test_schedule_without_warmup_starts_at_the_initial_lr() -> None:
    assert warmup_cosine_lr(0, 10, 1e-3, 1e-5, 0) == pytest.approx(1e-3)
    assert warmup_cosine_lr(9, 10, 1e-3, 1e-5, 0) == pytest.approx(1e-5)


# ---------------------------------------------------------------------------------------------------------
# The reconstruction head


def test_head_restores_the_input_channels_from_the_last_decoder_stage() -> None:
    net = tiny_network()
    net.decoder.deep_supervision = False
    head = add_reconstruction_head(net, 2)
    assert isinstance(head, torch.nn.Conv3d)
    assert head.kernel_size == (1, 1, 1)
    assert getattr(net, HEAD) is head
    x = torch.randn(2, 2, *PATCH)
    out = restore(net, x)
    assert out.shape == x.shape
    # It is the head applied to the last decoder stage's features (captured by an independent hook).
    seen: list[torch.Tensor] = []
    handle = net.decoder.stages[-1].register_forward_hook(lambda _m, _i, o: seen.append(o))
    net(x)
    handle.remove()
    torch.testing.assert_close(out, head(seen[0]))
    assert not net.decoder.stages[-1]._forward_hooks  # restore leaves no hook behind


# ---------------------------------------------------------------------------------------------------------
# Splits


def test_fold_unlabelled_tolerates_a_missing_key_and_fold(tmp_path: Path) -> None:
    from segkit.errors import DataError

    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps([{"train": ["a"], "val": ["b"], "unlabeled": ["u1", "u2"]}, {"train": [], "val": []}]))
    assert fold_unlabelled(path, 0) == ["u1", "u2"]
    assert fold_unlabelled(path, 1) == []  # no "unlabeled" key
    assert fold_unlabelled(path, 7) == []  # nnU-Net's random 80:20 split: no unlabelled cases
    assert fold_unlabelled(tmp_path / "absent.json", 0) == []
    path.write_text(json.dumps([{"train": [], "val": [], "unlabeled": "u1"}]))
    with pytest.raises(DataError, match="not an nnU-Net splits file"):
        fold_unlabelled(path, 0)


# ---------------------------------------------------------------------------------------------------------
# The trainer without data


class _Tiny(nnUNetTrainerUMamba2Pretrain):
    mask_patch_size = 4  # 64 cubes in the 16^3 test patch


def test_constructor_signature_is_nnunets() -> None:
    import inspect

    ours = inspect.signature(nnUNetTrainerUMamba2Pretrain.__init__).parameters
    theirs = inspect.signature(nnUNetTrainerUMamba2.__init__).parameters
    assert list(ours) == list(theirs)


def test_bad_mask_ratio_fails_before_anything_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = nnunet_folders(tmp_path, monkeypatch)

    class Bad(nnUNetTrainerUMamba2Pretrain):
        mask_ratio = 1.0

    with pytest.raises(ValueError, match="mask_ratio must be between 0 and 1"):
        tiny_trainer(Bad, initialize=False)
    assert list((root / "results").iterdir()) == []

    late = tiny_trainer(_Tiny, initialize=False)
    late.mask_ratio = 0  # as derive_trainer's overrides set it, after the constructor
    with pytest.raises(ValueError, match="mask_ratio"):
        late.on_train_start()


def test_recipe_hyperparameters_and_optimizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nnunet_folders(tmp_path, monkeypatch)
    trainer = tiny_trainer(_Tiny)
    assert (trainer.initial_lr, trainer.min_lr, trainer.warmup_lr, trainer.warmup_epochs) == (5e-5, 5e-6, 5e-7, 4)
    assert trainer.num_epochs == 200
    assert trainer.oversample_foreground_percent == 0.0
    assert trainer.enable_deep_supervision is False
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    decay, rest = trainer.optimizer.param_groups
    assert decay["weight_decay"] == 0.05
    assert rest["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"])
    assert all(p.ndim <= 1 for p in rest["params"])
    head = getattr(trainer.network, HEAD)
    assert head.out_channels == trainer.num_input_channels == 2
    assert any(p is head.weight for p in decay["params"])
    for epoch, expected in [(0, 5e-7), (4, 5e-5), (199, 5e-6)]:
        trainer.lr_scheduler.step(epoch)
        assert all(g["lr"] == pytest.approx(expected) for g in trainer.optimizer.param_groups)


def test_training_transforms_drop_only_intensity_augmentations() -> None:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    args = ((16, 16, 16), (-0.5, 0.5), None, (0, 1, 2), False)

    def names(transforms: list[Any]) -> list[str]:
        return [type(getattr(t, "transform", t)).__name__ for t in transforms]

    theirs = nnUNetTrainer.get_training_transforms(*args).transforms
    ours = nnUNetTrainerUMamba2Pretrain.get_training_transforms(*args).transforms
    kept = [t for t in theirs if not isinstance(t, RandomTransform)]
    assert names(ours) == names(kept)  # everything else, in nnU-Net's order
    assert set(names(theirs)) - set(names(ours)) == {
        "GaussianNoiseTransform",
        "GaussianBlurTransform",
        "MultiplicativeBrightnessTransform",
        "ContrastTransform",
        "SimulateLowResolutionTransform",
        "GammaTransform",
    }
    assert any(isinstance(t, SpatialTransform) for t in ours)
    assert any(isinstance(t, MirrorTransform) for t in ours)


def test_train_step_never_reads_the_segmentation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nnunet_folders(tmp_path, monkeypatch)
    trainer = tiny_trainer(_Tiny)
    trainer.num_iterations_per_epoch = 1
    trainer.on_train_epoch_start()
    out = trainer.train_step({"data": torch.randn(2, 2, *PATCH)})  # no "target" at all
    assert np.isfinite(float(out["loss"]))


def test_validation_loss_is_repeatable_and_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nnunet_folders(tmp_path, monkeypatch)
    trainer = tiny_trainer(_Tiny)
    batch = {"data": torch.randn(2, 2, *PATCH, generator=torch.Generator().manual_seed(5))}
    before = [p.detach().clone() for p in trainer.network.parameters()]
    losses = []
    for _ in range(2):  # two "epochs": the same seeded masks and noise
        trainer.on_validation_epoch_start()
        with torch.no_grad():
            losses.append(float(trainer.validation_step(batch)["loss"]))
    assert losses[0] == losses[1]
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.network.parameters(), strict=True))
    trainer.on_validation_epoch_end([{"loss": np.float32(losses[0])}])
    assert trainer.logger.get_value("val_losses", step=-1) == pytest.approx(losses[0])


# ---------------------------------------------------------------------------------------------------------
# Accumulation in this stage


class _Accum2(_Tiny):
    accumulation_steps = 2


@pytest.mark.parametrize("masked_only", [False, True])
def test_accumulated_gradient_equals_the_big_batch_gradient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, masked_only: bool
) -> None:
    """Two micro-batches of 1 with accumulation 2 apply the gradient of their batch of 2."""
    nnunet_folders(tmp_path, monkeypatch)
    trainer = tiny_trainer(_Accum2, batch_size=1)
    trainer.num_iterations_per_epoch = 2
    trainer.grad_clip_norm = None
    trainer.noise_std = 0.0
    trainer.masked_loss_only = masked_only
    big = torch.randn(2, 2, *PATCH, generator=torch.Generator().manual_seed(3))
    masks = cube_mask(2, PATCH, 4, 0.3, generator=torch.Generator().manual_seed(4))
    # The same masks for the micro-batches and the big batch: cube_mask hands them out in order.
    queue: list[torch.Tensor] = []

    def fixed_mask(batch: int, *_args: Any, **_kwargs: Any) -> torch.Tensor:
        return torch.cat([queue.pop(0) for _ in range(batch)])

    monkeypatch.setattr(pretrain, "cube_mask", fixed_mask)
    seen: list[dict[str, torch.Tensor | None]] = []
    inner = trainer.optimizer.step

    def step(*args: object, **kwargs: object) -> object:
        seen.append({n: None if p.grad is None else p.grad.clone() for n, p in trainer.network.named_parameters()})
        return inner(*args, **kwargs)

    trainer.optimizer.step = step  # type: ignore[method-assign]
    reference = [p.detach().clone() for p in trainer.network.parameters()]
    trainer.on_train_epoch_start()
    queue.extend([masks[0:1], masks[1:2]])
    trainer.train_step({"data": big[0:1]})
    assert seen == []  # accumulating
    trainer.train_step({"data": big[1:2]})
    assert len(seen) == 1

    with torch.no_grad():
        for p, value in zip(trainer.network.parameters(), reference, strict=True):
            p.copy_(value)
    trainer.network.zero_grad(set_to_none=True)
    queue.extend([masks[0:1], masks[1:2]])
    loss, _ = trainer.reconstruction_step(big)
    loss.backward()
    compared = 0
    for name, p in trainer.network.named_parameters():
        if p.grad is None:  # the unused segmentation heads
            assert HEAD_MARKER in f".{name}", name
            assert seen[0][name] is None, name
            continue
        torch.testing.assert_close(seen[0][name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
        compared += 1
    assert compared > 50
    assert seen[0][f"{HEAD}.weight"] is not None


# ---------------------------------------------------------------------------------------------------------
# A tiny real run: preprocessed labelled and unlabelled cases, nnU-Net's data loading, training loop and
# checkpoints, on the CPU.


def _smooth(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape), sigma=2.0)
    return ((field - field.mean()) / field.std()).astype(np.float32)


def _write_case(folder: Path, name: str, shape: tuple[int, int, int], rng: np.random.Generator, labelled: bool) -> None:
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    data = np.stack([_smooth(rng, shape), _smooth(rng, shape)])
    # Unlabelled cases carry an all-zero placeholder, as segkit's preprocessing gives them.
    seg = rng.integers(0, 3, size=(1, *shape)).astype(np.int16) if labelled else np.zeros((1, *shape), np.int16)
    locations = {c: np.argwhere(seg == c)[:50] for c in (1, 2)}
    properties = {
        "spacing": [1.0, 1.0, 1.0],
        "shape_before_cropping": shape,
        "bbox_used_for_cropping": [[0, s] for s in shape],
        "shape_after_cropping_and_before_resampling": shape,
        "class_locations": locations,
    }
    nnUNetDatasetBlosc2.save_case(data, seg, properties, str(folder / name), chunks=(1, *shape), blocks=(1, 8, 8, 8))
    assert (folder / f"{name}.pkl").is_file()


def _point_nnunet(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # conftest removes the nnUNet_* variables before every test: tests of the module fixture set them again.
    for name in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"nnUNet_{name}", str(root / name))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # nnU-Net's single-threaded augmenter


def _tiny_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("raw", "preprocessed", "results"):
        (tmp_path / name).mkdir()
    _point_nnunet(tmp_path, monkeypatch)
    base = tmp_path / "preprocessed" / DATASET
    folder = base / "tiny_3d_fullres"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train, val, unlabelled = ["L0", "L1", "L2"], ["L3"], ["U0", "U1", "U2"]
    for name in train + unlabelled:
        _write_case(folder, name, (20, 20, 20), rng, labelled=name.startswith("L"))
    # The validation case is exactly one patch: nnU-Net crops it the same way every epoch.
    _write_case(folder, "L3", tuple(PATCH), rng, labelled=True)  # type: ignore[arg-type]
    (base / "splits_final.json").write_text(json.dumps([{"train": train, "val": val, "unlabeled": unlabelled}]))
    (base / "dataset_fingerprint.json").write_text("{}")
    return tmp_path


class _Quick(_Tiny):
    warmup_epochs = 0
    min_lr = 1e-4


def _configure(trainer: Any, epochs: int) -> Any:
    trainer.num_epochs = epochs
    trainer.num_iterations_per_epoch = 4
    trainer.num_val_iterations_per_epoch = 1
    trainer.save_every = 1
    trainer.initial_lr = 3e-3  # before initialize(): a few iterations must show the loss falling
    return trainer


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    monkeypatch = pytest.MonkeyPatch()
    try:
        root = _tiny_dataset(tmp_path_factory.mktemp("pretrain"), monkeypatch)
        trainer = _configure(tiny_trainer(_Quick, initialize=False), 3)
        trainer.run_training()
        yield root, trainer
    finally:
        monkeypatch.undo()


def test_tiny_run_lowers_the_reconstruction_loss_and_writes_checkpoints(pretrained: tuple[Path, Any]) -> None:
    _, trainer = pretrained
    fold = Path(trainer.output_folder)
    assert (fold / "checkpoint_final.pth").is_file()
    assert (fold / "checkpoint_best.pth").is_file()
    assert not (fold / "checkpoint_latest.pth").exists()  # removed at the end, as nnU-Net does
    assert (fold / "progress.png").is_file()
    log = trainer.logger.local_logger.my_fantastic_logging
    assert len(log["train_losses"]) == len(log["val_losses"]) == 3
    assert log["mean_fg_dice"] == []  # no pseudo-Dice
    assert log["ema_fg_dice"] == []
    # The validation loss is deterministic (one patch-sized case, seeded masks and noise): it must fall.
    assert log["val_losses"][-1] < log["val_losses"][0]
    text = next(fold.glob("training_log_*.txt")).read_text()
    assert "self-supervised pretraining on 6 images (3 labelled, 3 unlabelled), validation on 1" in text
    assert "cubes of 4 voxels, mask ratio 0.3" in text
    assert "train_loss (reconstruction L1)" in text
    trainer.perform_actual_validation()
    assert not (fold / "validation").exists()


def test_training_ids_are_the_folds_labelled_and_unlabelled_cases(
    pretrained: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, trainer = pretrained
    _point_nnunet(root, monkeypatch)
    train, val = trainer.do_split()
    assert sorted(train) == ["L0", "L1", "L2", "U0", "U1", "U2"]
    assert val == ["L3"]


def test_continue_resumes_from_the_final_checkpoint(
    pretrained: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, first = pretrained
    _point_nnunet(root, monkeypatch)
    fold = Path(first.output_folder)
    saved = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert saved["current_epoch"] == 3
    assert saved["trainer_name"] == "_Quick"
    assert f"{HEAD}.weight" in saved["network_weights"]

    from nnunetv2.run.run_training import maybe_load_checkpoint

    plans = tiny_plans()
    plans["continue_training"] = True
    resumed = _configure(_Quick(plans, "3d_fullres", 0, copy.deepcopy(first.dataset_json), torch.device("cpu")), 4)
    maybe_load_checkpoint(resumed, True, False, None)
    assert resumed.current_epoch == 3
    for key, value in resumed.network.state_dict().items():
        torch.testing.assert_close(value, saved["network_weights"][key], msg=key)
    assert resumed._best_ema == pytest.approx(min(saved["logging"]["val_losses"]))
    resumed.run_training()
    log = resumed.logger.local_logger.my_fantastic_logging
    assert len(log["train_losses"]) == 4  # one more epoch, after the three restored
    assert log["train_losses"][:3] == saved["logging"]["train_losses"]
    again = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert again["current_epoch"] == 4


def test_weights_load_into_the_stage1_network_with_fresh_heads(
    pretrained: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, first = pretrained
    _point_nnunet(root, monkeypatch)
    checkpoint = Path(first.output_folder) / "checkpoint_final.pth"
    weights = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
    stage1 = tiny_trainer(nnUNetTrainerUMamba2)
    before = {k: v.clone() for k, v in stage1.network.state_dict().items()}
    messages: list[str] = []
    report = apply_pretrained(stage1, checkpoint, keep_heads=False, log=messages.append)
    after = stage1.network.state_dict()
    heads = [k for k in after if HEAD_MARKER in f".{k}"]
    assert heads
    for key, value in after.items():
        if key in heads:
            assert torch.equal(value, before[key]), key  # fresh, not the pretraining's
        else:
            assert torch.equal(value, weights[key]), key  # encoder, Mamba layer, decoder
    counts = report.counts()
    assert counts["loaded"] + counts["skipped_heads"] == counts["total"]
    assert counts["missing"] == counts["mismatched"] == 0
    # Unused from the checkpoint: the reconstruction head and the pretraining's (untrained) seg heads.
    assert {f"{HEAD}.weight", f"{HEAD}.bias"} <= set(report.unused)
    assert all(HEAD_MARKER in f".{k}" for k in set(report.unused) - {f"{HEAD}.weight", f"{HEAD}.bias"})
    assert len(report.unused) == 2 + len(report.skipped_heads)
    assert any(k.startswith("mamba_layer.") for k in report.loaded)
    assert messages == [report.summary()]


def test_derive_trainer_sets_the_constants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """segkit's generated trainers subclass this one with overrides set after nnU-Net's constructor."""
    from segkit.backends.nnunet.trainers import derive_trainer

    nnunet_folders(tmp_path, monkeypatch)
    cls = derive_trainer(
        "nnUNetTrainerUMamba2Pretrain_segkit_test",
        "nnUNetTrainerUMamba2Pretrain",
        base_module="segkit.backends.umamba2.pretrain",
        num_epochs=7,
        initial_lr=1e-4,
        mask_ratio=0.5,
        mask_patch_size=4,
        warmup_epochs=2,
        accumulation_steps=2,
    )
    trainer = tiny_trainer(cls)
    assert (trainer.num_epochs, trainer.mask_ratio, trainer.mask_patch_size, trainer.accumulation_steps) == (
        7,
        0.5,
        4,
        2,
    )
    trainer.lr_scheduler.step(2)  # the end of the 2-epoch warm-up: the overridden initial_lr
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    trainer.lr_scheduler.step(6)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_pretraining_steps_on_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nnU-Net's CUDA path: autocast, GradScaler and accumulation; finite losses and weights."""
    nnunet_folders(tmp_path, monkeypatch)
    trainer = tiny_trainer(_Accum2, device="cuda")
    assert trainer.grad_scaler is not None
    trainer.num_iterations_per_epoch = 3
    trainer.on_train_epoch_start()
    g = torch.Generator().manual_seed(0)
    losses = [float(trainer.train_step({"data": torch.randn(2, 2, *PATCH, generator=g)})["loss"]) for _ in range(3)]
    assert all(np.isfinite(losses))
    assert all(bool(torch.isfinite(p).all()) for p in trainer.network.parameters())
    assert all(p.grad is None for p in trainer.network.parameters())
    trainer.on_validation_epoch_start()
    out = trainer.validation_step({"data": torch.randn(2, 2, *PATCH, generator=g)})
    assert np.isfinite(float(out["loss"]))
