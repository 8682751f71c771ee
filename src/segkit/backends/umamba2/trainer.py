"""The UMamba2 recipe's stage-1 trainer for nnU-Net v2: gradient accumulation done right, clipping, no compile.

Imported only inside nnU-Net processes (it imports torch and nnunetv2 at module level). segkit derives
subclasses of `nnUNetTrainerUMamba2` with other ``accumulation_steps`` / ``grad_clip_norm`` values (by
attribute, see `segkit.backends.nnunet.trainers.derive_trainer`).

Gradient accumulation over N micro-batches: each micro-batch's loss is divided by the size of its group
(N, or fewer for the last group of an epoch) and back-propagated; the optimizer steps (through nnU-Net's
GradScaler on CUDA, unscaling before clipping) and the gradients are zeroed after every N-th micro-batch
and after the last micro-batch of the epoch. The gradient applied at each step is therefore the gradient of
the mean loss over the group, which is what one big batch of the group gives. The UMamba2 fork zeroes the
gradients at the start of a stepping micro-batch instead, which throws away the previous micro-batches'
gradients (reference ``nnunet_umamba2.md`` 5.2); `Accumulator` and `micro_batch_step` are factored out so
that a test can show the difference on a toy model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context

_TRUE = ("t", "true", "1")


def check_accumulation_steps(steps: Any) -> int:
    """`steps` as an int of at least 1.

    Raises:
        ValueError: Not an integer of at least 1.
    """
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        msg = f"accumulation_steps must be an integer of at least 1, not {steps!r}"
        raise ValueError(msg)
    return int(steps)


class Accumulator:
    """Which micro-batch of an epoch is being back-propagated, what to divide its loss by, and when to step.

    Args:
        steps: Micro-batches per optimizer step (N, at least 1).
        micro_batches: Micro-batches in the epoch (nnU-Net's ``num_iterations_per_epoch``); the last group
            of the epoch is shorter when N does not divide it. None: unknown, every group has N.

    Raises:
        ValueError: `steps` below 1.
    """

    def __init__(self, steps: int, micro_batches: int | None = None) -> None:
        self.steps = check_accumulation_steps(steps)
        self.micro_batches = micro_batches
        self.seen = 0
        self.pending = 0

    @property
    def group_size(self) -> int:
        """Micro-batches in the current group: N, or what is left of the epoch when that is fewer."""
        if self.micro_batches is None:
            return self.steps
        left = self.micro_batches - (self.seen - self.pending)
        # More calls than announced micro-batches: later groups are full ones again.
        return min(self.steps, left) if left > 0 else self.steps

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to back-propagate for this micro-batch: `loss` / `group_size`."""
        return loss / self.group_size

    def done(self) -> bool:
        """Count one back-propagated micro-batch; True when the optimizer must step now."""
        size = self.group_size
        self.seen += 1
        self.pending += 1
        if self.pending >= size:
            self.pending = 0
            return True
        return False


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[torch.nn.Parameter],
    *,
    grad_scaler: Any = None,
    clip_norm: float | None = None,
) -> None:
    """Apply the accumulated gradients and zero them: clip, step (through `grad_scaler` when given), zero_grad.

    Args:
        optimizer: The optimizer.
        parameters: The parameters whose gradient norm is clipped.
        grad_scaler: A ``torch.amp.GradScaler`` (nnU-Net's, on CUDA) or None.
        clip_norm: Maximum total gradient norm; None or <= 0: no clipping.
    """
    clip = clip_norm is not None and clip_norm > 0
    if grad_scaler is not None:
        if clip:
            # Clipping must see the true gradients, not the loss-scaled ones.
            grad_scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, float(clip_norm))  # type: ignore[arg-type]
        grad_scaler.step(optimizer)
        grad_scaler.update()
    else:
        if clip:
            torch.nn.utils.clip_grad_norm_(parameters, float(clip_norm))  # type: ignore[arg-type]
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def micro_batch_step(
    loss: torch.Tensor,
    accumulator: Accumulator,
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[torch.nn.Parameter],
    *,
    grad_scaler: Any = None,
    clip_norm: float | None = None,
) -> bool:
    """Back-propagate one micro-batch's (un-divided) `loss` and step the optimizer when its group is complete.

    Returns:
        Whether the optimizer stepped (and the gradients were zeroed).
    """
    scaled = accumulator.scale(loss)
    if grad_scaler is not None:
        grad_scaler.scale(scaled).backward()
    else:
        scaled.backward()
    if accumulator.done():
        optimizer_step(optimizer, parameters, grad_scaler=grad_scaler, clip_norm=clip_norm)
        return True
    return False


class nnUNetTrainerUMamba2(nnUNetTrainer):  # noqa: N801 - nnU-Net finds trainers by this naming scheme
    """nnU-Net's trainer with gradient accumulation, configurable clipping and torch.compile off by default.

    Attributes:
        accumulation_steps: Micro-batches (of the plans' batch size) per optimizer step.
        grad_clip_norm: Maximum total gradient norm; None or <= 0: no clipping (nnU-Net clips at 12).

    Raises:
        ValueError: ``accumulation_steps`` below 1 (at construction, and at the start of training for a
            value set on the instance afterwards).
    """

    accumulation_steps: int = 1
    grad_clip_norm: float | None = 12.0

    # nnU-Net records its constructor arguments by inspecting the signature of self.__init__ (and
    # rebuilds trainers from them), so the parameters must stay exactly nnU-Net's.
    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's own default
    ) -> None:
        # Before nnU-Net's constructor, which creates the output folder and a log file.
        check_accumulation_steps(self.accumulation_steps)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._accumulator: Accumulator | None = None

    def _do_i_compile(self) -> bool:
        # nnU-Net compiles by default on CUDA. The Mamba mixer's chunked scan (and mamba-ssm's custom
        # kernels) compile slowly and are not verified under torch.compile, so compile only on request.
        if os.environ.get("nnUNet_compile", "").lower() not in _TRUE:
            return False
        return bool(super()._do_i_compile())

    def on_train_start(self) -> None:
        check_accumulation_steps(self.accumulation_steps)
        super().on_train_start()
        clip = self.grad_clip_norm
        clipping = f"at norm {clip:g}" if clip is not None and clip > 0 else "off"
        batch = getattr(self, "batch_size", None) or self.configuration_manager.batch_size
        self.print_to_log_file(
            f"gradient accumulation: {self.accumulation_steps} micro-batch(es) of {batch} per optimizer step "
            f"(effective batch size {self.accumulation_steps * batch}); gradient clipping {clipping}"
        )

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._accumulator = Accumulator(self.accumulation_steps, int(self.num_iterations_per_epoch))
        self.optimizer.zero_grad(set_to_none=True)

    def train_step(self, batch: dict) -> dict:
        """One micro-batch: forward, loss / group size, backward, and an optimizer step when the group is full."""
        if self._accumulator is None:
            self._accumulator = Accumulator(self.accumulation_steps, int(self.num_iterations_per_epoch))
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        if isinstance(target, list):
            target = [t.to(self.device, non_blocking=True) for t in target]
        else:
            target = target.to(self.device, non_blocking=True)
        # As nnU-Net: autocast only on CUDA (slow on CPU, unsupported on MPS).
        with torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            output = self.network(data)
            loss = self.loss(output, target)
        micro_batch_step(
            loss,
            self._accumulator,
            self.optimizer,
            self.network.parameters(),
            grad_scaler=self.grad_scaler,
            clip_norm=self.grad_clip_norm,
        )
        # The logged train loss is the micro-batch's own, not the divided one.
        return {"loss": loss.detach().cpu().numpy()}

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        acc = self._accumulator
        if acc is not None and acc.pending:
            # Only when train_step ran fewer times than num_iterations_per_epoch: the gradients of the
            # unfinished group are applied rather than leaked into the next epoch.
            acc.pending = 0
            optimizer_step(
                self.optimizer, self.network.parameters(), grad_scaler=self.grad_scaler, clip_norm=self.grad_clip_norm
            )
        super().on_train_epoch_end(train_outputs)
