"""The UMamba2 recipe's semi-supervised mechanisms and stage trainers, on tiny CPU networks."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nnunetv2")

from _umamba2 import PATCH, fake_batch, nnunet_folders, tiny_network, tiny_trainer  # noqa: E402

from segkit.backends.umamba2 import semi, stages  # noqa: E402

# ---------------------------------------------------------------- schedules


def test_unlabelled_probability_follows_the_recipe() -> None:
    assert semi.unlabelled_probability(0, 1000) == pytest.approx(0.1)
    assert semi.unlabelled_probability(200, 1000) == pytest.approx(0.3)
    assert semi.unlabelled_probability(400, 1000) == pytest.approx(0.5)
    assert semi.unlabelled_probability(999, 1000) == pytest.approx(0.5)
    assert semi.unlabelled_probability(0, 500, min_ratio=0.3) == pytest.approx(0.3)
    assert semi.unlabelled_probability(100, 500, min_ratio=0.3) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="num_epochs"):
        semi.unlabelled_probability(0, 0)


def test_rampup_weight_is_the_gaussian_rampup_then_constant() -> None:
    assert semi.rampup_weight(0, 100, 50.0) == pytest.approx(50 * math.exp(-5))
    assert semi.rampup_weight(50, 100, 50.0) == pytest.approx(50 * math.exp(-5 * 0.25))
    weights = [semi.rampup_weight(i, 100, 50.0) for i in range(101)]
    assert all(a < b for a, b in itertools.pairwise(weights))
    assert semi.rampup_weight(100, 100, 50.0) == 50.0
    assert semi.rampup_weight(10_000, 100, 50.0) == 50.0
    assert semi.rampup_weight(0, 0, 50.0) == 50.0


def test_linear_lr_goes_from_initial_to_final() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1e-3)
    sched = stages.LinearLRScheduler(opt, 1e-3, 1e-5, 500)
    lrs = []
    for epoch in range(500):
        sched.step(epoch)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-5)
    assert np.allclose(np.diff(lrs), np.diff(lrs)[0])


# ---------------------------------------------------------------- feature perturbation


def test_perturbation_keeps_shapes_and_is_off_in_eval() -> None:
    pert = semi.FeaturePerturbation()
    x = torch.rand(2, 8, 4, 5, 6) + 0.1
    pert.train()
    y = pert(x)
    assert y.shape == x.shape
    assert not torch.equal(y, x)
    pert.eval()
    assert pert(x) is x


def test_attention_drop_zeroes_the_most_salient_voxels_only() -> None:
    pert = semi.FeaturePerturbation(dropout=0.0, drop_threshold=(0.6, 0.6), noise=0.0).train()
    x = torch.ones(1, 3, 4, 4, 4)
    x[0, :, 1, 1, 1] = 10.0  # attention 10 >= 0.6 * 10: dropped; the rest (1 < 6) kept
    y = pert(x)
    assert torch.all(y[0, :, 1, 1, 1] == 0)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[0, :, 1, 1, 1] = False
    assert torch.equal(y[mask], x[mask])


def test_channel_dropout_and_noise_bounds() -> None:
    torch.manual_seed(0)
    x = torch.ones(4, 16, 3, 3, 3)
    dropped = semi.FeaturePerturbation(dropout=0.5, drop_threshold=(1.0, 1.0), noise=0.0).train()(x)
    per_channel = dropped.flatten(2)
    # whole channels are zeroed (dropout3d) and the others scaled by 1 / (1 - p)
    assert set(torch.unique(per_channel).tolist()) <= {0.0, 2.0}
    assert torch.all(per_channel.amin(dim=2) == per_channel.amax(dim=2))
    bumped = x + 1
    bumped[:, :, 0, 0, 0] = 100.0  # the attention drop takes this voxel only
    noisy = semi.FeaturePerturbation(dropout=0.0, drop_threshold=(1.0, 1.0), noise=0.3).train()(bumped)
    assert torch.all(noisy[:, :, 0, 0, 0] == 0)
    ratio = noisy.flatten(2)[:, :, 1:] / 2
    assert float(ratio.min()) >= 0.7 - 1e-6
    assert float(ratio.max()) <= 1.3 + 1e-6


def test_bad_perturbation_settings() -> None:
    with pytest.raises(ValueError, match="dropout"):
        semi.FeaturePerturbation(dropout=1.5)
    with pytest.raises(ValueError, match="threshold"):
        semi.FeaturePerturbation(drop_threshold=(0.9, 0.6))
    with pytest.raises(ValueError, match="noise"):
        semi.FeaturePerturbation(noise=-1)


def test_perturbed_forward_is_the_network_forward_without_perturbation() -> None:
    net = tiny_network().eval()
    x = torch.randn(1, 2, *PATCH)
    pert = semi.FeaturePerturbation().eval()
    with torch.no_grad():
        plain = net(x)
        same = semi.perturbed_forward(net, x, pert, 5)
        pert.train()
        torch.manual_seed(1)
        other = semi.perturbed_forward(net, x, pert, 2)
    assert len(plain) == len(same) == len(other)
    for a, b in zip(plain, same, strict=True):
        assert torch.equal(a, b)
        assert a.shape == b.shape
    assert not torch.allclose(plain[0], other[0])


# ---------------------------------------------------------------- losses and pseudo-labels


def test_consistency_loss_is_weighted_softmax_mse_without_teacher_gradient() -> None:
    s = [torch.randn(2, 3, 4, 4, 4, requires_grad=True), torch.randn(2, 3, 2, 2, 2, requires_grad=True)]
    t = [torch.randn(2, 3, 4, 4, 4, requires_grad=True), torch.randn(2, 3, 2, 2, 2, requires_grad=True)]
    loss = semi.consistency_loss(s, t, [0.75, 0.25])
    pairs = zip([0.75, 0.25], s, t, strict=True)
    expected = sum(w * torch.mean((torch.softmax(a, 1) - torch.softmax(b, 1)) ** 2) for w, a, b in pairs)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    loss.backward()
    assert s[0].grad is not None
    assert t[0].grad is None
    assert float(semi.consistency_loss(s, [x.detach() for x in s], [0.5, 0.5])) == 0.0
    sig = semi.consistency_loss(s[0], t[0], None, regions=True)
    assert float(sig) == pytest.approx(float(torch.mean((torch.sigmoid(s[0]) - torch.sigmoid(t[0])) ** 2)), rel=1e-6)


def _logits(*probs: tuple[float, float, float]) -> torch.Tensor:
    p = torch.tensor(probs, dtype=torch.float64).T.reshape(1, 3, len(probs), 1, 1)
    return torch.log(p)


def test_pseudo_labels_keep_only_confident_voxels() -> None:
    logits = _logits((0.9, 0.05, 0.05), (0.1, 0.8, 0.1), (0.4, 0.3, 0.3), (0.2, 0.05, 0.75))
    kept = semi.pseudo_label_targets(logits, threshold=0.75, keep_background=True, regions=False, ignore_label=3)
    assert kept[0].flatten().tolist() == [0, 1, 3, 2]
    fork = semi.pseudo_label_targets(logits, threshold=0.75, keep_background=False, regions=False, ignore_label=3)
    assert fork[0].flatten().tolist() == [3, 1, 3, 2]


def test_pseudo_labels_follow_deep_supervision_shapes() -> None:
    full = torch.randn(2, 3, 8, 8, 8) * 5
    half = torch.randn(2, 3, 4, 4, 4)
    targets = semi.pseudo_label_targets(
        [full, half], threshold=0.5, keep_background=True, regions=False, ignore_label=3
    )
    assert [tuple(t.shape) for t in targets] == [(2, 1, 8, 8, 8), (2, 1, 4, 4, 4)]
    assert torch.equal(targets[1], targets[0][:, :, ::2, ::2, ::2])


def test_region_pseudo_labels_carry_nnunet_ignore_channel() -> None:
    p = torch.tensor([[0.95, 0.9], [0.6, 0.99], [0.02, 0.1]], dtype=torch.float64).T.reshape(1, 2, 3, 1, 1)
    logits = torch.log(p / (1 - p))
    t = semi.pseudo_label_targets(logits, threshold=0.75, keep_background=True, regions=True, ignore_label=0)[0]
    assert t.shape == (1, 3, 3, 1, 1)
    assert t[0, :2].flatten(1).T.tolist() == [[1, 1], [1, 1], [0, 0]]
    assert t[0, 2].flatten().tolist() == [0, 1, 0]
    fork = semi.pseudo_label_targets(logits, threshold=0.75, keep_background=False, regions=True, ignore_label=0)[0]
    assert fork[0, 2].flatten().tolist() == [0, 1, 1]


def test_pseudo_label_loss_ignores_unconfident_voxels() -> None:
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    manager = LabelManager({"background": 0, "a": 1, "b": 2}, regions_class_order=None)
    loss, ignore = semi.pseudo_label_loss(manager, None, batch_dice=False)
    assert ignore == 3
    target = torch.randint(0, 3, (1, 1, 6, 6, 6)).float()
    target[:, :, :3] = ignore
    student = torch.randn(1, 3, 6, 6, 6)
    changed = student.clone()
    changed[:, :, :3] = torch.randn(1, 3, 3, 6, 6) * 10
    assert float(loss(student, target)) == pytest.approx(float(loss(changed, target)), rel=1e-5)
    changed[:, :, 3:] += torch.randn(1, 3, 3, 6, 6)
    assert float(loss(student, target)) != pytest.approx(float(loss(changed, target)), rel=1e-5)


def test_stage_trainer_constants_are_the_recipes() -> None:
    c, p = stages.nnUNetTrainerUMamba2Consistency, stages.nnUNetTrainerUMamba2PseudoLabel
    assert (c.unlabelled_min_ratio, c.unlabelled_max_ratio, c.consistency_weight, c.rampup_fraction) == (
        0.1,
        0.5,
        50.0,
        0.2,
    )
    assert (c.feature_dropout, c.feature_drop_low, c.feature_drop_high, c.feature_noise) == (0.5, 0.6, 0.9, 0.3)
    assert c.pseudolabel_probability == 0.0
    assert (p.unlabelled_min_ratio, p.rampup_fraction, p.pseudolabel_probability) == (0.3, 0.05, 0.25)
    assert (p.pseudolabel_threshold, p.pseudolabel_weight, p.final_lr) == (0.75, 0.1, 1e-5)


# ---------------------------------------------------------------- trainers


class _FakeUnlabelled:
    """Stands for `UnlabelledData` (the real one is exercised in `test_unlabelled_loader_drops_placeholders`)."""

    def __init__(self, batch: int = 2) -> None:
        self.batch = batch
        self.drawn = 0

    def next_images(self) -> Any:
        self.drawn += 1
        return torch.randn(self.batch, 2, *PATCH)

    def close(self) -> None:
        pass


def _semi_trainer(cls: type, accumulation: int = 1, **attrs: Any) -> Any:
    derived = type("T", (cls,), {"accumulation_steps": accumulation, **attrs})
    trainer = tiny_trainer(derived)
    trainer.unlabelled = _FakeUnlabelled()
    trainer.setup_pseudo_labels()
    trainer.on_train_epoch_start()
    return trainer


@pytest.mark.parametrize("cls", [stages.nnUNetTrainerUMamba2Consistency, stages.nnUNetTrainerUMamba2PseudoLabel])
def test_unlabelled_steps_never_use_the_supervised_loss(
    cls: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nnunet_folders(tmp_path, monkeypatch)
    trainer = _semi_trainer(cls, unlabelled_min_ratio=1.0, unlabelled_max_ratio=1.0, pseudolabel_probability=(
        1.0 if cls is stages.nnUNetTrainerUMamba2PseudoLabel else 0.0))  # fmt: skip

    def poisoned(*args: Any) -> Any:
        raise AssertionError("the supervised loss saw an unlabelled batch")

    trainer.loss = poisoned
    made: list[Any] = []
    real_targets = stages.pseudo_label_targets

    def recording(teacher: Any, **kw: Any) -> Any:
        out = real_targets(teacher, **kw)
        made.append(out)
        return out

    seen: list[Any] = []
    if trainer._pseudo_loss is not None:
        real_loss = trainer._pseudo_loss

        def spy(student: Any, targets: Any) -> Any:
            seen.append(targets)
            return real_loss(student, targets)

        trainer._pseudo_loss = spy
    monkeypatch.setattr(stages, "pseudo_label_targets", recording)
    before = [p.detach().clone() for p in trainer.network.parameters()]
    for _ in range(3):
        out = trainer.train_step(fake_batch())
        assert np.isfinite(out["loss"])
    assert trainer.unlabelled.drawn == 3
    assert trainer._losses["consistency"]
    assert trainer._losses["supervised"] == []
    if cls is stages.nnUNetTrainerUMamba2PseudoLabel:
        # every pseudo-label target the loss saw is the teacher's, none a placeholder segmentation
        assert len(seen) == 3
        assert all(s is m for s, m in zip(seen, made, strict=True))
    else:
        assert made == []
    after = list(trainer.network.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_supervised_steps_when_the_schedule_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nnunet_folders(tmp_path, monkeypatch)
    trainer = _semi_trainer(stages.nnUNetTrainerUMamba2Consistency, unlabelled_min_ratio=0.0, unlabelled_max_ratio=0.0)
    for _ in range(2):
        trainer.train_step(fake_batch())
    assert trainer.unlabelled.drawn == 0
    assert len(trainer._losses["supervised"]) == 2


@pytest.mark.parametrize("cls", [stages.nnUNetTrainerUMamba2Consistency, stages.nnUNetTrainerUMamba2PseudoLabel])
def test_accumulation_in_every_stage(cls: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nnunet_folders(tmp_path, monkeypatch)
    trainer = _semi_trainer(cls, accumulation=2, unlabelled_min_ratio=0.5, unlabelled_max_ratio=0.5)
    trainer.num_iterations_per_epoch = 5
    trainer.on_train_epoch_start()
    trainer._rng = np.random.default_rng(3)
    steps: list[int] = []
    micro = [0]
    real_step = trainer.optimizer.step

    def counting(*a: Any, **k: Any) -> Any:
        steps.append(micro[0])
        return real_step(*a, **k)

    trainer.optimizer.step = counting
    for _ in range(5):
        micro[0] += 1
        trainer.train_step(fake_batch())
    # both kinds of micro-batch ran, and the optimizer stepped after micro-batches 2, 4 and 5 only
    assert trainer._losses["supervised"]
    assert trainer._losses["consistency"]
    assert steps == [2, 4, 5]
    assert all(p.grad is None for p in trainer.network.parameters())


def test_pseudolabel_trainer_optimizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nnunet_folders(tmp_path, monkeypatch)
    trainer = tiny_trainer(stages.nnUNetTrainerUMamba2PseudoLabel)
    assert trainer.num_epochs == 500
    assert trainer.initial_lr == pytest.approx(1e-3)
    group = trainer.optimizer.param_groups[0]
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    assert (group["momentum"], group["nesterov"]) == (0.99, True)
    assert isinstance(trainer.lr_scheduler, stages.LinearLRScheduler)
    trainer.lr_scheduler.step(499)
    assert group["lr"] == pytest.approx(1e-5)


def test_bad_semi_settings_fail_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nnunet_folders(tmp_path, monkeypatch)
    derived = type("T", (stages.nnUNetTrainerUMamba2PseudoLabel,), {"pseudolabel_threshold": 1.5})
    trainer = tiny_trainer(derived, initialize=False)
    with pytest.raises(ValueError, match="pseudolabel_threshold"):
        trainer.check_semi_settings()


# ---------------------------------------------------------------- unlabelled data


def _write_splits(folder: Path, unlabelled: list[str]) -> None:
    import json

    splits = [{"train": ["lab0"], "val": ["lab1"], semi.UNLABELLED_KEY: unlabelled}]
    (folder / "splits_final.json").write_text(json.dumps(splits))


def test_read_unlabelled_ids(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no splits file"):
        semi.read_unlabelled_ids(str(tmp_path), 0)
    _write_splits(tmp_path, [])
    with pytest.raises(ValueError, match="no unlabelled cases"):
        semi.read_unlabelled_ids(str(tmp_path), 0)
    _write_splits(tmp_path, ["u1", "u0"])
    assert semi.read_unlabelled_ids(str(tmp_path), 0) == ["u0", "u1"]
    with pytest.raises(ValueError, match=r"dataset\.json"):
        semi.read_unlabelled_ids(str(tmp_path), "all")
    (tmp_path / "dataset.json").write_text('{"segkit_unlabelled": ["u1", "u0", "u2"]}')
    assert semi.read_unlabelled_ids(str(tmp_path), "all") == ["u0", "u1", "u2"]
    with pytest.raises(ValueError, match="fold 3"):
        semi.read_unlabelled_ids(str(tmp_path), 3)


def test_unlabelled_loader_drops_placeholders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real nnU-Net loading of placeholder cases: only images come out, and the split never trains on them."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetNumpy

    root = nnunet_folders(tmp_path, monkeypatch)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    base = root / "preprocessed" / "Dataset001_Tiny"
    folder = base / "tiny_3d_fullres"
    (folder / "case.b2nd").unlink()
    rng = np.random.default_rng(0)
    for name in ("lab0", "lab1", "u0", "u1"):
        seg = np.full((1, 20, 20, 20), 2 if name.startswith("u") else 1, dtype=np.int8)  # placeholders: all 2
        props = {"class_locations": {1: np.zeros((0, 4), dtype=int), 2: np.zeros((0, 4), dtype=int)}}
        nnUNetDatasetNumpy.save_case(rng.normal(size=(2, 20, 20, 20)).astype(np.float32), seg, props,
                                     str(folder / name))  # fmt: skip
    _write_splits(base, ["u0", "u1"])
    (base / "dataset.json").write_text('{"segkit_unlabelled": ["u0", "u1"]}')
    trainer = tiny_trainer(stages.nnUNetTrainerUMamba2Consistency)
    trainer.dataset_class = nnUNetDatasetNumpy
    data = semi.UnlabelledData(trainer, ["u0", "u1"])
    images = data.next_images()
    data.close()
    assert isinstance(images, torch.Tensor)
    assert tuple(images.shape) == (2, 2, *PATCH)
    assert trainer.do_split() == (["lab0"], ["lab1"])
    trainer.fold = "all"
    tr, val = trainer.do_split()
    assert sorted(tr) == ["lab0", "lab1"]
    assert sorted(val) == ["lab0", "lab1"]
    strong = semi.apply_per_sample(semi.strong_augmentation(3), images)
    assert strong.shape == images.shape
