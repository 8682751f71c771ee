"""Sliding-window inference with one or several fine-tuned checkpoints, back on each case's own grid.

For each case: the deterministic chain of training (load, RAS, resample, normalise) gives (4, X', Y', Z');
every checkpoint predicts logits by sliding window and their softmax probabilities are averaged (the
fold ensemble); `Invertd` undoes resampling and reorientation on the probabilities (bilinear), and the
argmax is written as ``<case>.nii.gz`` (uint8, labels 0-4) with the shape and affine of the case's
input images. The network is rebuilt from the arguments recorded in the checkpoint, so inference needs
no bundle.

torch and monai are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segkit.backends.monai_bundle.checkpoints import CheckpointMeta
from segkit.backends.monai_bundle.options import NUM_CLASSES, MonaiOptions
from segkit.conventions import NIFTI_EXT
from segkit.errors import BackendError, DataError
from segkit.progress import ProgressSink

if TYPE_CHECKING:
    import torch

    from segkit.backends.base import CaseImages


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint ready to predict: its path, metadata and network (eval mode, on the device)."""

    path: Path
    meta: CheckpointMeta
    net: torch.nn.Module


def load_model(path: Path, device: str) -> LoadedModel:
    """Rebuild the checkpoint's SegResNet and load its weights (``weights_only=True``, all shapes must match).

    Raises:
        DataError: Not a segkit checkpoint, or weights that do not fit the recorded arguments.
    """
    from segkit.backends.monai_bundle import checkpoints as ck
    from segkit.backends.monai_bundle import network as nw

    payload = ck.read_checkpoint(path)
    net = nw.build_network(payload.meta.network_args)
    nw.load_strict(net, payload.model, Path(path))
    net.to(device).eval()
    return LoadedModel(Path(path), payload.meta, net)


def geometry(
    models: Sequence[LoadedModel], opts: MonaiOptions
) -> tuple[tuple[str, ...], tuple[float, ...], tuple[int, ...]]:
    """Channel order, spacing (mm) and sliding-window size (voxels) shared by the models.

    ``spacing`` and ``roi_size`` (else ``patch_size``) of the options win over the checkpoints' own.

    Raises:
        DataError: Ensemble members trained with different channel orders or spacings.
    """
    first = models[0].meta
    order = first.channel_order
    spacing = first.spacing
    for m in models[1:]:
        if m.meta.channel_order != order:
            msg = f"{m.path}: channel order {list(m.meta.channel_order)} differs from {models[0].path} ({list(order)})"
            raise DataError(msg)
        if opts.spacing is None and m.meta.spacing != spacing:
            msg = f"{m.path}: trained at spacing {list(m.meta.spacing)}, {models[0].path} at {list(spacing)}"
            raise DataError(msg, hint="pass --spacing to predict all folds at one spacing")
    if opts.spacing is not None:
        spacing = tuple(opts.spacing)
    roi = tuple(opts.roi_size or opts.patch_size or first.patch_size)
    return order, spacing, roi


def predict_cases(
    cases: Sequence[CaseImages],
    models: Sequence[LoadedModel],
    opts: MonaiOptions,
    *,
    output_dir: Path,
    device: str,
    overwrite: bool,
    save_probabilities: bool,
    progress: ProgressSink,
) -> tuple[list[Path], list[str]]:
    """Predict every case; return (files written, ids skipped because their output existed).

    Raises:
        DataError: A case whose files cannot be read.
        BackendError: The inverted prediction does not land on the input grid (shape or affine).
    """
    import torch
    from monai.data import MetaTensor
    from monai.inferers import sliding_window_inference
    from monai.transforms import Invertd

    from segkit.backends.monai_bundle.data import deterministic_transforms, segkit_errors
    from segkit.io import read_header, write_volume

    order, spacing, roi = geometry(models, opts)
    pre = deterministic_transforms(spacing, with_label=False)
    invert = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True)
    amp = opts.amp and device.startswith("cuda")
    for case in cases:  # before the first file is written
        missing = [m for m in order if m not in case.images]
        if missing:
            msg = f"{case.case_id}: missing modality {missing[0]}"
            raise DataError(msg)
    files: list[Path] = []
    skipped: list[str] = []
    progress.start(f"predicting ({len(models)} model{'s' if len(models) > 1 else ''})", total=len(cases))
    try:
        for case in cases:
            dest = Path(output_dir) / f"{case.case_id}{NIFTI_EXT}"
            if not overwrite and dest.exists():
                skipped.append(case.case_id)
                progress.advance()
                continue
            with segkit_errors(f"{case.case_id}: cannot load and resample the images"):
                data = dict(pre({"image": [str(case.images[m]) for m in order]}))
            image = data["image"]
            x = image.as_tensor()[None].to(device)
            probs: torch.Tensor | None = None
            with torch.inference_mode():
                for model in models:
                    with torch.autocast("cuda", enabled=amp):
                        logits = sliding_window_inference(
                            x, roi, opts.sw_batch_size, model.net, overlap=opts.sw_overlap, mode=opts.sw_mode
                        )
                    p = torch.softmax(torch.as_tensor(logits).float(), dim=1)[0]
                    probs = p if probs is None else probs + p
            assert probs is not None
            probs = (probs / len(models)).cpu()
            inverted = invert({"image": image, "pred": MetaTensor(probs)})["pred"]
            inverted_probs = torch.as_tensor(inverted).float()
            labels = inverted_probs.argmax(0).numpy().astype(np.uint8)
            ref = read_header(case.images[order[0]])
            if labels.shape != tuple(ref.shape[:3]):
                msg = f"{case.case_id}: prediction shape {labels.shape} differs from the input's {ref.shape[:3]}"
                raise BackendError(msg)
            # the inverted chain's own affine: the file below is written with the input's
            landed = np.asarray(getattr(inverted, "affine", ref.affine), dtype=np.float64)
            if not np.allclose(landed, ref.affine, atol=1e-3):
                msg = f"{case.case_id}: the inverted prediction's affine differs from the input's"
                raise BackendError(msg)
            files.append(write_volume(dest, labels, ref.affine))
            if save_probabilities:
                _write_probabilities(dest.with_name(f"{case.case_id}.npz"), inverted_probs.numpy())
            progress.advance()
    finally:
        progress.finish()
    return files, skipped


def _write_probabilities(dest: Path, probs: np.ndarray) -> None:
    """``<case>.npz`` with ``probabilities`` (5, X, Y, Z) float16 on the case's grid, classes 0-4."""
    from segkit.io import atomic_path

    assert probs.shape[0] == NUM_CLASSES
    with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, probabilities=probs.astype(np.float16))
