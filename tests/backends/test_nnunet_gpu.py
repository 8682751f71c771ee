"""nnU-Net on CUDA: device selection, AMP training and DDP (run with `pytest -m gpu` on a GPU machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from segkit import api
from segkit.config import load_config
from segkit.data.synth import write_cohort

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def _cfg(root: Path, **flags):
    return load_config(
        flags={
            "nnunet.raw": root / "raw",
            "nnunet.preprocessed": root / "pre",
            "nnunet.results": root / "res",
            "prepare.train_sources": [root / "training_data"],
            "prepare.test_sources": [],
            "prepare.workers": 1,
            "backends.nnunet.epochs": 1,
            "backends.nnunet.iterations_per_epoch": 5,
            **flags,
        }
    )


def test_train_and_predict_on_cuda(tmp_path: Path) -> None:
    write_cohort(tmp_path / "training_data", cases=6, shape=(48, 48, 48))
    cfg = _cfg(tmp_path, **{"train.device": "auto", "infer.device": "auto"})
    api.prepare(cfg)
    api.plan(cfg)
    (result,) = api.train(cfg)
    assert result.checkpoint is not None
    cfg = _cfg(tmp_path, **{"infer.input": [tmp_path / "training_data"], "infer.output": tmp_path / "pred"})
    (pred,) = api.predict(cfg)
    assert len(pred.files) == 6


def test_ddp_on_two_gpus(tmp_path: Path) -> None:
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    write_cohort(tmp_path / "training_data", cases=6, shape=(48, 48, 48))
    cfg = _cfg(tmp_path, **{"train.device": "cuda", "backends.nnunet.num_gpus": 2})
    api.prepare(cfg)
    api.plan(cfg)
    (result,) = api.train(cfg)
    assert (result.model_dir / "fold_0" / "checkpoint_final.pth").is_file()
