"""The UMamba2 recipe's semi-supervised trainers for nnU-Net v2: consistency (stage 1) and pseudo-labels (stage 2).

Imported only inside nnU-Net processes (torch and nnunetv2 at module level). Both extend
`nnUNetTrainerUMamba2`, so every micro-batch (labelled or not) goes through its `Accumulator` and
`micro_batch_step`: gradient accumulation done right and gradient-norm clipping in every stage. Every
constant is a class attribute with the recipe's default; segkit derives subclasses with other values
(`segkit.backends.nnunet.trainers.derive_trainer`, from the ``--consistency-*``/``--pseudolabel-*`` options).

Per iteration, with probability `unlabelled_probability` (``min(max_ratio, epoch/epochs + min_ratio)``)
the labelled batch nnU-Net drew is set aside and an unlabelled step runs instead:

1. a batch of unlabelled patches with nnU-Net's spatial augmentation only (`UnlabelledData`; the
   placeholder segmentation is dropped when the batch is drawn);
2. the teacher: the network's own output on those patches, without gradient;
3. the student: the same patches with strong intensity augmentation, and feature perturbation on the
   last `perturb_skips` encoder skips;
4. loss: MSE between their probabilities, deep-supervision weighted, times the ramp-up weight
   ``consistency_weight * exp(-5 (1 - t)^2)`` over the first `rampup_fraction` of all iterations;
5. stage 2 only, on a `pseudolabel_probability` share of the unlabelled steps: plus `pseudolabel_weight`
   times nnU-Net's Dice+CE of the student against the teacher's voxels of confidence at least
   `pseudolabel_threshold` (the others ignored).

Otherwise the iteration is nnU-Net's supervised step on the labelled batch. Written from the reference's
description (``nnunet_umamba2.md`` 5.2) of U-Mamba2-SSL; no code of the authors' fork.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from nnunetv2.utilities.helpers import dummy_context
from torch.optim.lr_scheduler import _LRScheduler

from segkit.backends.umamba2.semi import (
    FeaturePerturbation,
    UnlabelledData,
    apply_per_sample,
    check_fraction,
    consistency_loss,
    perturbed_forward,
    pseudo_label_loss,
    pseudo_label_targets,
    rampup_weight,
    read_unlabelled_ids,
    strong_augmentation,
    unlabelled_probability,
)
from segkit.backends.umamba2.trainer import Accumulator, micro_batch_step, nnUNetTrainerUMamba2


class LinearLRScheduler(_LRScheduler):
    """Learning rate from `initial_lr` linearly to `final_lr` over `max_steps` epochs (nnU-Net's step(epoch) API)."""

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, final_lr: float, max_steps: int) -> None:
        self.initial_lr = float(initial_lr)
        self.final_lr = float(final_lr)
        self.max_steps = max(1, int(max_steps))
        self.ctr = 0
        super().__init__(optimizer, -1)

    def lr_at(self, step: int) -> float:
        """The learning rate of epoch `step` (the last epoch, ``max_steps - 1``, is the only one at `final_lr`)."""
        t = min(1.0, max(0.0, step / max(1, self.max_steps - 1)))
        return self.initial_lr + (self.final_lr - self.initial_lr) * t

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = self.lr_at(current_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class nnUNetTrainerUMamba2Consistency(nnUNetTrainerUMamba2):  # noqa: N801 - nnU-Net's naming scheme
    """Stage 1 of the recipe: supervised steps and consistency regularisation on unlabelled cases.

    Attributes:
        unlabelled_min_ratio: Unlabelled-step probability at epoch 0 (it grows by 1/epochs per epoch).
        unlabelled_max_ratio: Its ceiling.
        consistency_weight: Weight of the consistency loss after the ramp-up (the recipe's 50).
        rampup_fraction: Share of all training iterations over which the weight ramps up.
        perturb_skips: Last encoder skips (bottleneck included) whose features the student perturbs.
        feature_dropout: Channel-dropout probability of the perturbation.
        feature_drop_low / feature_drop_high: Range of the attention threshold (fraction of the maximum).
        feature_noise: Half-width of the multiplicative uniform feature noise.
        pseudolabel_probability: Share of unlabelled steps that add the pseudo-label loss (0 in stage 1).
        pseudolabel_threshold: Confidence a voxel needs to be a pseudo-label.
        pseudolabel_weight: Weight of the pseudo-label Dice+CE.
        pseudolabel_keep_background: Confident background is a pseudo-label too (segkit's default), instead
            of being ignored like everything unconfident (the fork's ``ignore_label=0``).
    """

    stage: str = "consistency"
    unlabelled_min_ratio: float = 0.1
    unlabelled_max_ratio: float = 0.5
    consistency_weight: float = 50.0
    rampup_fraction: float = 0.2
    perturb_skips: int = 5
    feature_dropout: float = 0.5
    feature_drop_low: float = 0.6
    feature_drop_high: float = 0.9
    feature_noise: float = 0.3
    pseudolabel_probability: float = 0.0
    pseudolabel_threshold: float = 0.75
    pseudolabel_weight: float = 0.1
    pseudolabel_keep_background: bool = True

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's own default
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.unlabelled: UnlabelledData | None = None
        self._strong: Any = None
        self._perturbation: FeaturePerturbation | None = None
        self._pseudo_loss: Any = None
        self._pseudo_ignore = 0
        self._rng = np.random.default_rng()
        self._step_in_epoch = 0
        self._losses: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ set-up

    def check_semi_settings(self) -> None:
        """The constants in range (ValueError naming the attribute otherwise)."""
        check_fraction("unlabelled_min_ratio", self.unlabelled_min_ratio, closed=True)
        check_fraction("unlabelled_max_ratio", self.unlabelled_max_ratio, closed=True)
        check_fraction("rampup_fraction", self.rampup_fraction, closed=True)
        check_fraction("pseudolabel_probability", self.pseudolabel_probability, closed=True)
        check_fraction("pseudolabel_threshold", self.pseudolabel_threshold, closed=True)
        if self.perturb_skips < 0 or self.consistency_weight < 0 or self.pseudolabel_weight < 0:
            msg = "perturb_skips, consistency_weight and pseudolabel_weight must be at least 0"
            raise ValueError(msg)

    def do_split(self) -> tuple[list[str], list[str]]:
        """nnU-Net's split of the labelled cases; unlabelled cases are never training or validation cases."""
        tr_keys, val_keys = super().do_split()
        try:
            unlabelled = set(read_unlabelled_ids(self.preprocessed_dataset_folder_base, self.fold))
        except ValueError:
            unlabelled = set()
        return [k for k in tr_keys if k not in unlabelled], [k for k in val_keys if k not in unlabelled]

    def on_train_start(self) -> None:
        self.check_semi_settings()
        # Before nnU-Net starts its data loaders: no unlabelled cases is a one-line error, not a late crash.
        ids = read_unlabelled_ids(self.preprocessed_dataset_folder_base, self.fold)
        super().on_train_start()
        self.unlabelled = UnlabelledData(self, ids)
        self._strong = strong_augmentation(len(self.configuration_manager.patch_size))
        self.setup_pseudo_labels()
        self.print_to_log_file(
            f"{self.stage}: {len(ids)} unlabelled cases; unlabelled-step probability "
            f"min({self.unlabelled_max_ratio}, epoch/{self.num_epochs} + {self.unlabelled_min_ratio}); consistency "
            f"weight {self.consistency_weight} ramped up over {self.rampup_iterations:g} iterations; feature "
            f"perturbation on the last {self.perturb_skips} skips; pseudo-labels on "
            f"{self.pseudolabel_probability:g} of unlabelled steps (confidence >= {self.pseudolabel_threshold}, "
            f"background {'kept' if self.pseudolabel_keep_background else 'ignored'}, weight {self.pseudolabel_weight})"
        )

    def on_train_end(self) -> None:
        try:
            super().on_train_end()
        finally:
            if self.unlabelled is not None:
                self.unlabelled.close()

    def setup_pseudo_labels(self) -> None:
        """The pseudo-label loss (only when pseudo-labels are used)."""
        if self.pseudolabel_probability > 0:
            self._pseudo_loss, self._pseudo_ignore = pseudo_label_loss(
                self.label_manager, self._ds_weights(), batch_dice=bool(self.configuration_manager.batch_dice)
            )

    @property
    def rampup_iterations(self) -> float:
        """Iterations of the ramp-up: `rampup_fraction` of all training iterations."""
        return float(self.rampup_fraction * self.num_epochs * self.num_iterations_per_epoch)

    def _ds_weights(self) -> list[float] | None:
        factors = getattr(self.loss, "weight_factors", None)
        return [float(w) for w in factors] if factors is not None else None

    # ------------------------------------------------------------------ training

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._step_in_epoch = 0
        self._losses = {"supervised": [], "consistency": [], "pseudolabel": []}

    def train_step(self, batch: dict) -> dict:
        """A supervised step on `batch`, or (with the schedule's probability) an unlabelled step instead."""
        iteration = self.current_epoch * int(self.num_iterations_per_epoch) + self._step_in_epoch
        self._step_in_epoch += 1
        p = unlabelled_probability(
            self.current_epoch, int(self.num_epochs), self.unlabelled_min_ratio, self.unlabelled_max_ratio
        )
        if self.unlabelled is None or self._rng.random() >= p:
            out = super().train_step(batch)
            self._losses.setdefault("supervised", []).append(float(np.mean(out["loss"])))
            return out
        return self.unlabelled_step(self.unlabelled.next_images(), iteration)

    def unlabelled_step(self, weak: torch.Tensor, iteration: int) -> dict:
        """Consistency (and, on a share of the steps, pseudo-label) loss on a batch of unlabelled images."""
        if self._accumulator is None:
            self._accumulator = Accumulator(self.accumulation_steps, int(self.num_iterations_per_epoch))
        if self._perturbation is None:
            self._perturbation = FeaturePerturbation(
                self.feature_dropout, (self.feature_drop_low, self.feature_drop_high), self.feature_noise
            ).to(self.device)
        strong = apply_per_sample(self._strong, weak) if self._strong is not None else weak
        weak = weak.to(self.device, non_blocking=True)
        strong = strong.to(self.device, non_blocking=True)
        regions = bool(self.label_manager.has_regions)
        use_pseudo = self._pseudo_loss is not None and self._rng.random() < self.pseudolabel_probability
        weight = rampup_weight(iteration, self.rampup_iterations, self.consistency_weight)
        with torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            with torch.no_grad():
                teacher = self.network(weak)
            self._perturbation.train()
            student = perturbed_forward(self.network, strong, self._perturbation, self.perturb_skips)
            consistency = consistency_loss(student, teacher, self._ds_weights(), regions=regions)
            loss = weight * consistency
            if use_pseudo:
                targets = pseudo_label_targets(
                    teacher,
                    threshold=self.pseudolabel_threshold,
                    keep_background=self.pseudolabel_keep_background,
                    regions=regions,
                    ignore_label=self._pseudo_ignore,
                )
                # deep supervision on: lists through nnU-Net's wrapper; off: the one output
                if isinstance(student, list | tuple):
                    pseudo = self._pseudo_loss(list(student), targets)
                else:
                    pseudo = self._pseudo_loss(student, targets[0])
                loss = loss + self.pseudolabel_weight * pseudo
                self._losses.setdefault("pseudolabel", []).append(float(pseudo.detach().cpu()))
        self._losses.setdefault("consistency", []).append(float(consistency.detach().cpu()))
        micro_batch_step(
            loss,
            self._accumulator,
            self.optimizer,
            self.network.parameters(),
            grad_scaler=self.grad_scaler,
            clip_norm=self.grad_clip_norm,
        )
        return {"loss": loss.detach().cpu().numpy()}

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        super().on_train_epoch_end(train_outputs)
        parts = []
        for kind, values in self._losses.items():
            if values:
                parts.append(f"{kind} loss {np.mean(values):.4f} ({len(values)} steps)")
        iteration = (self.current_epoch + 1) * int(self.num_iterations_per_epoch)
        weight = rampup_weight(iteration, self.rampup_iterations, self.consistency_weight)
        self.print_to_log_file(f"{self.stage}: {'; '.join(parts) or 'no steps'}; consistency weight {weight:.3g}")


class nnUNetTrainerUMamba2PseudoLabel(nnUNetTrainerUMamba2Consistency):  # noqa: N801 - nnU-Net's naming scheme
    """Stage 2 of the recipe: stage 1 plus pseudo-labels, from the stage-1 model (heads included).

    SGD (momentum 0.99, Nesterov) from `initial_lr` linearly to `final_lr` over `num_epochs`, the
    unlabelled-step probability starting at 0.3, a ramp-up over 5% of the iterations, and on a quarter of
    the unlabelled steps the pseudo-label loss.

    Attributes:
        final_lr: Learning rate of the last epoch.
    """

    stage = "pseudolabel"
    num_epochs_default = 500
    final_lr: float = 1e-5
    unlabelled_min_ratio = 0.3
    rampup_fraction = 0.05
    pseudolabel_probability = 0.25

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's own default
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        # nnU-Net sets these in its constructor; segkit's derived trainers override them afterwards.
        self.num_epochs = self.num_epochs_default
        self.initial_lr = 1e-3

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, _LRScheduler]:
        optimizer = torch.optim.SGD(
            self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay, momentum=0.99, nesterov=True
        )
        return optimizer, LinearLRScheduler(optimizer, self.initial_lr, self.final_lr, self.num_epochs)
