"""The optimisation schedule of a stage: gradient-accumulation groups and the closed-form cosine decay.

torch is imported inside `cosine_schedule`.
"""

from __future__ import annotations

import math
from typing import Any


def accumulation_plan(n_batches: int, accum: int) -> list[tuple[float, bool]]:
    """Loss scale and whether to step the optimizer, for each batch of an epoch.

    Batches are grouped by `accum`; each loss is divided by the size of its group (so a group's gradient
    is the mean over its batches, including a shorter last group) and the optimizer steps after the last
    batch of every group. Gradients are zeroed only after a step.

    >>> accumulation_plan(5, 2)
    [(0.5, False), (0.5, True), (0.5, False), (0.5, True), (1.0, True)]
    """
    plan = []
    for i in range(n_batches):
        start = (i // accum) * accum
        size = min(accum, n_batches - start)
        plan.append((1.0 / size, (i + 1) % accum == 0 or i + 1 == n_batches))
    return plan


def cosine_factor(epoch: int, epochs: int) -> float:
    """Learning-rate factor of `epoch` (0-based) in a cosine decay to 0 over `epochs` epochs.

    >>> cosine_factor(0, 4), cosine_factor(2, 4), cosine_factor(4, 4)
    (1.0, 0.5, 0.0)
    """
    return (1.0 + math.cos(math.pi * epoch / epochs)) / 2.0 if epochs > 0 else 1.0


def cosine_schedule(optimizer: Any, epochs: int, *, start_epoch: int = 0) -> Any:
    """A scheduler that sets each group's lr to ``initial_lr * cosine_factor(epoch, epochs)`` (closed form).

    Starting at `start_epoch` (a resumed run) the optimizer's groups must hold ``initial_lr``; the lr is
    set for that epoch at once, exactly as an uninterrupted run reaches it (no recursion on the old lr).
    """
    import torch

    def factor(epoch: int) -> float:
        return cosine_factor(epoch, epochs)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=start_epoch - 1)
