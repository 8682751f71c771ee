"""Does the MONAI backend really learn on CPU in minutes? (the recipe behind `segkit demo`)

Synthesises a cohort plus held-out cases, prepares it, writes nnU-Net's folds, fine-tunes fold 0 without a
pretrained bundle (a fresh SegResNet, init_filters 8), predicts the held-out cases and prints their
whole-tumour Dice and the wall times as JSON.

    uv run python benchmarks/monai_cpu_learning.py --out /tmp/monai_bench --shape 48 --cases 10 --epochs 30

Measured on a 2-vCPU machine (torch 2 threads; see the report in the MONAI backend's merge request):
48^3, 10 cases (8 train / 2 val), 30 stage-2 epochs of 4 steps (2 cases x 4 crops of 32^3): training 111 s,
held-out WT Dice 0.926 0.936 0.879 0.861 (mean 0.901); whole script 120 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Scratch folder (replaced).")
    parser.add_argument("--shape", type=int, default=48, help="Cube size of the synthetic volumes.")
    parser.add_argument("--cases", type=int, default=10, help="Training cohort size (fold 0 validates on 1/5).")
    parser.add_argument("--heldout", type=int, default=4, help="Held-out cases predicted after training.")
    parser.add_argument("--stage1-epochs", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30, help="Stage-2 epochs.")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--init-filters", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from segkit import api
    from segkit.config import load_config
    from segkit.data.synth import write_cohort
    from segkit.io import read_volume
    from segkit.progress import RecordingProgress

    torch.set_num_threads(args.threads)
    root: Path = args.out
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    shape = (args.shape,) * 3
    write_cohort(root / "training_data", cases=args.cases, shape=shape, seed=0)
    write_cohort(root / "heldout", cases=args.heldout, shape=shape, seed=0, start=100)
    cfg = load_config(
        flags={
            "nnunet.raw": root / "raw",
            "nnunet.preprocessed": root / "pre",
            "nnunet.results": root / "res",
            "prepare.train_sources": [root / "training_data"],
            "prepare.test_sources": [root / "heldout"],
            "prepare.workers": 1,
            "train.backend": "monai",
            "train.device": "cpu",
            "train.fold": 0,
            "infer.backend": "monai",
            "infer.device": "cpu",
            "infer.fold": 0,
            "infer.output": root / "predictions",
            "backends.monai.bundle_name": "none",
            "backends.monai.network_overrides": {"init_filters": args.init_filters, "dropout_prob": 0.0},
            "backends.monai.output_root": root / "monai_ft",
            "backends.monai.stage1_epochs": args.stage1_epochs,
            "backends.monai.stage2_epochs": args.epochs,
            "backends.monai.stage1_lr": args.lr,
            "backends.monai.stage2_lr": args.lr,
            "backends.monai.patch_size": [args.patch] * 3,
            "backends.monai.batch_size": 2,
            "backends.monai.num_samples": 4,
            "backends.monai.best_metric": "wt_dice",
            "backends.monai.save_checkpoint_frequency": 0,
            "backends.monai.sw_batch_size": 1,
        }
    )
    api.prepare(cfg)
    api.splits(cfg)
    t1 = time.perf_counter()

    class Printing(RecordingProgress):
        def log(self, message: str) -> None:
            print(f"[{time.perf_counter() - t1:7.1f} s] {message}", flush=True)

    (result,) = api.train(cfg, progress=Printing())
    t2 = time.perf_counter()
    api.predict(cfg)
    t3 = time.perf_counter()
    dice = []
    for case in sorted(p for p in (root / "heldout").iterdir() if p.is_dir()):
        gt = np.isin(read_volume(case / f"{case.name}-seg.nii.gz").data, (1, 2, 3))
        pred = np.isin(read_volume(root / "predictions" / f"{case.name}.nii.gz").data, (1, 2, 3))
        total = gt.sum() + pred.sum()
        dice.append(float(2 * (gt & pred).sum() / total) if total else float("nan"))
    print(
        json.dumps(
            {
                "shape": args.shape,
                "cases": args.cases,
                "stage1_epochs": args.stage1_epochs,
                "stage2_epochs": args.epochs,
                "patch": args.patch,
                "synth_prepare_s": round(t1 - t0, 1),
                "train_s": round(t2 - t1, 1),
                "predict_s": round(t3 - t2, 1),
                "validation": dict(result.metrics),
                "heldout_wt_dice": [round(d, 3) for d in dice],
                "heldout_wt_mean": round(float(np.nanmean(dice)), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
