"""The UMamba2 backend's nnU-Net worker: nnU-Net's worker with UMamba2's kernel choice and weight loading.

The Mamba2 kernel is chosen per process (``segkit.backends.umamba2.network.KERNEL_ENV``) before nnU-Net
builds the network; pretrained weights are loaded by name and shape (`segkit.backends.umamba2.pretrained`),
with the segmentation heads when ``--keep-heads`` is given, instead of by nnU-Net's all-but-heads loader.
"""

from __future__ import annotations

import os
from typing import Any

from segkit.backends._process import Emit, worker_main
from segkit.backends.nnunet import worker as nnunet_worker


def _use_kernel(payload: dict[str, Any]) -> None:
    from segkit.backends.umamba2.network import KERNEL_ENV

    kernel = (payload.get("backend_options") or {}).get("kernel")
    if kernel:
        os.environ[KERNEL_ENV] = str(kernel)


def load_pretrained(trainer: Any, path: str, payload: dict[str, Any], emit: Emit) -> None:
    """Load `path` into the trainer's network by name and shape and report what was loaded."""
    from segkit.backends.umamba2.pretrained import apply_pretrained

    keep_heads = bool((payload.get("backend_options") or {}).get("keep_heads"))
    report = apply_pretrained(trainer, path, keep_heads=keep_heads, log=trainer.print_to_log_file)
    emit("message", text=report.summary())


def train(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """nnU-Net's training with UMamba2's kernel and pretrained loader."""
    _use_kernel(payload)
    return nnunet_worker.train(payload, emit, load_pretrained=load_pretrained)


def predict(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """nnU-Net's prediction with UMamba2's kernel."""
    _use_kernel(payload)
    return nnunet_worker.predict(payload, emit)


HANDLERS = {**nnunet_worker.HANDLERS, "train": train, "predict": predict}

if __name__ == "__main__":
    worker_main(HANDLERS)
